# Exploratory, run on the H100 from the repository root (session 6): the compiled Wan VAE decode of one
# 3-latent-frame chunk, frame by frame, with the decoder's weights as they are (NCDHW) and in channels-last
# layouts (the full-resolution conv3d ran 20% faster channels-last in explore_conv.py).
import copy, json, os, time
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline
from swiftdit.pipelines.rolling import WanVaeFrames
OUT = os.environ.get("OUT", "/tmp/out")
torch._dynamo.config.cache_size_limit = 64
device, dtype = torch.device("cuda"), torch.bfloat16
torch.manual_seed(0)
base = AutoencoderKLWan().to(device, dtype).eval()
latents = torch.randn(1, 16, 9, 60, 104, device=device)
results = {}

def channels_last(module):
    for parameter in module.parameters():
        if parameter.dim() == 5:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last_3d)
        elif parameter.dim() == 4:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last)

@torch.no_grad()
def measure(label, vae):
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=None,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
    decoder = WanVaeFrames(pipe); decoder.stream = None
    started = time.perf_counter()
    frames = [decoder.decode(chunk) for chunk in latents.split(3, dim=2)]
    torch.cuda.synchronize()
    warm = time.perf_counter() - started
    times = []
    for _ in range(6):
        chunk = torch.randn(1, 16, 3, 60, 104, device=device)
        torch.cuda.synchronize(); s = time.perf_counter(); decoder.decode(chunk); torch.cuda.synchronize()
        times.append(time.perf_counter() - s)
    results[label] = dict(median_seconds=sorted(times)[3], warmup_seconds=warm)
    print(label, results[label], flush=True)
    return torch.cat(frames)

eager = measure("eager", base)
compiled_vae = copy.deepcopy(base); compiled_vae.decoder.compile(dynamic=False)
compiled = measure("compiled", compiled_vae)
cl_vae = copy.deepcopy(base); channels_last(cl_vae.decoder); cl_vae.decoder.compile(dynamic=False)
cl = measure("compiled_channels_last", cl_vae)
cl_eager_vae = copy.deepcopy(base); channels_last(cl_eager_vae.decoder)
cl_eager = measure("eager_channels_last", cl_eager_vae)
for name, frames in (("compiled", compiled), ("compiled_channels_last", cl), ("eager_channels_last", cl_eager)):
    results[name]["max_uint8_difference_to_eager"] = int((frames.int() - eager.int()).abs().max())
json.dump(results, open(os.path.join(OUT, "explore_decode_layout.json"), "w"), indent=1)
print(json.dumps(results, indent=1))
