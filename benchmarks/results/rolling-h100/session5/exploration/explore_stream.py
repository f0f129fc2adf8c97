# Exploratory, run once on the H100 from the repository root (BENCHMARKS.md, rolling generation): where a Wan2.1-1.3B streaming chunk's time goes, and what each change buys.
import contextlib
import json
import os
import sys
import time
import types

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

sys.path.insert(0, "benchmarks")
from bench_rolling import WAN_13B, WAN_TEXT_TOKENS, wan_time_breakdown  # noqa: E402
from sdpa_backends import sdpa_context  # noqa: E402
from swiftdit.pipelines.rolling import WanVaeFrames  # noqa: E402

OUT = os.environ.get("OUT", "/tmp/out")
results = {}
device = torch.device("cuda")
dtype = torch.bfloat16
torch.manual_seed(0)
transformer = WanTransformer3DModel(**WAN_13B).to(device, dtype).eval()
vae = AutoencoderKLWan().to(device, dtype).eval()
pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                   scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
embeddings = torch.randn(1, WAN_TEXT_TOKENS, WAN_13B["text_dim"], device=device, dtype=dtype)
args = types.SimpleNamespace(wan_height=480, wan_width=832)


def dump():
    with open(os.path.join(OUT, "explore.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1), flush=True)


def set_format(fmt):
    for module in vae.decoder.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.weight.data = module.weight.data.contiguous(memory_format=fmt)


# 1. decode of one 3-latent-frame chunk, variants
def time_decode(label, channels_last_input=False, channels_last_weights=False, benchmark=False):
    torch.backends.cudnn.benchmark = benchmark
    if channels_last_weights:
        set_format(torch.channels_last_3d)
    decoder = WanVaeFrames(pipe)
    decoder.stream = None
    if channels_last_input:
        conv = vae.post_quant_conv
        original = conv.forward
        conv.forward = lambda x: original(x).contiguous(memory_format=torch.channels_last_3d)
    latents = torch.randn(1, 16, 3, 60, 104, device=device)
    decoder.decode(latents)
    times = []
    for _ in range(4):
        torch.cuda.synchronize()
        start = time.perf_counter()
        decoder.decode(latents)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if channels_last_input:
        del conv.forward
    if channels_last_weights:
        set_format(torch.contiguous_format)
    torch.backends.cudnn.benchmark = False
    results.setdefault("decode_seconds_per_chunk", {})[label] = sorted(times)[len(times) // 2]
    dump()


with torch.no_grad():
    time_decode("default")
    time_decode("channels_last_weights_and_input", channels_last_input=True, channels_last_weights=True)
    time_decode("cudnn_benchmark", benchmark=True)
    time_decode("channels_last_all_benchmark", channels_last_input=True, channels_last_weights=True, benchmark=True)

# 2. stream breakdowns
def breakdown(label, overlap=True, cudnn_first=True, chunks=12):
    original_init = WanVaeFrames.__init__

    def init(self, pipe):
        original_init(self, pipe)
        if not overlap:
            self.stream = None

    WanVaeFrames.__init__ = init
    try:
        with (sdpa_context(device, False) if cudnn_first else contextlib.nullcontext()):
            results.setdefault("breakdown", {})[label] = wan_time_breakdown(pipe, embeddings, args, device, chunks=chunks)
    except Exception as error:
        results.setdefault("breakdown", {})[label] = repr(error)
    finally:
        WanVaeFrames.__init__ = original_init
    dump()


breakdown("new_overlap_cudnn")
breakdown("new_no_overlap_cudnn", overlap=False)
breakdown("new_overlap_default_sdpa", cudnn_first=False)

# 3. profile of a sequential stream (no overlap) for the kernel mix
from torch.profiler import ProfilerActivity, profile  # noqa: E402

original_init = WanVaeFrames.__init__
WanVaeFrames.__init__ = lambda self, pipe: (original_init(self, pipe), setattr(self, "stream", None))[0]
with sdpa_context(device, False), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    wan_time_breakdown(pipe, embeddings, args, device, chunks=4, warmup_chunks=1)
WanVaeFrames.__init__ = original_init
with open(os.path.join(OUT, "profile.txt"), "w") as f:
    f.write(prof.key_averages().table(sort_by="cuda_time_total", row_limit=45, max_name_column_width=90))
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))
