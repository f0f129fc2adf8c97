# Exploratory, run on the H100 from the repository root (BENCHMARKS.md, rolling generation, session 6): where a
# compiled Wan2.1-1.3B streaming chunk spends its GPU time after the compile-friendly KV-cache processor and
# the chunk-at-once VAE decode; per-frame against chunk-at-once decode; a kernel profile of the stream.
import json, os, sys, time, types, collections
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
sys.path.insert(0, "benchmarks")
from bench_rolling import WAN_13B, WAN_TEXT_TOKENS, WAN_STREAM, wan_time_breakdown  # noqa
from sdpa_backends import sdpa_context  # noqa
from swiftdit.pipelines.rolling import WanVaeFrames, compile_for_streaming, open_stream  # noqa
OUT = os.environ.get("OUT", "/tmp/out")
results = {}
device = torch.device("cuda"); dtype = torch.bfloat16
torch.manual_seed(0)
transformer = WanTransformer3DModel(**WAN_13B).to(device, dtype).eval()
vae = AutoencoderKLWan().to(device, dtype).eval()
pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                   scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
embeddings = torch.randn(1, WAN_TEXT_TOKENS, 4096, device=device, dtype=dtype)
args = types.SimpleNamespace(wan_height=480, wan_width=832)

def dump():
    json.dump(results, open(os.path.join(OUT, "explore_profile.json"), "w"), indent=1)

@torch.no_grad()
def time_decode(label):
    decoder = WanVaeFrames(pipe); decoder.stream = None
    latents = torch.randn(1, 16, 3, 60, 104, device=device)
    out = {}
    for mode in ("per_frame", "chunk_at_once"):
        def run():
            if mode == "per_frame":
                for i in range(3):
                    decoder.decode(latents[:, :, i:i + 1])
            else:
                decoder.decode(latents)
        run(); run(); torch.cuda.synchronize()
        times = []
        for _ in range(6):
            torch.cuda.synchronize(); s = time.perf_counter(); run(); torch.cuda.synchronize()
            times.append(time.perf_counter() - s)
        out[mode] = sorted(times)[3]
    results.setdefault("decode_seconds_per_chunk", {})[label] = out
    print(label, out, flush=True); dump()

def breakdown(label, chunks=12):
    with sdpa_context(device, False):
        results.setdefault("breakdown", {})[label] = wan_time_breakdown(pipe, embeddings, args, device, chunks=chunks)
    print(label, results["breakdown"][label], flush=True); dump()

time_decode("eager")
breakdown("eager")
compile_for_streaming(pipe)
s = time.perf_counter()
with sdpa_context(device, False):
    for _ in open_stream(pipe, embeddings, 1 + 4 * (3 * 6 - 1), height=480, width=832,
                         generator=torch.Generator(device).manual_seed(1), **WAN_STREAM).frames():
        pass
results["compile_warmup_seconds"] = time.perf_counter() - s; dump()
time_decode("compiled")
breakdown("compiled")

# Kernel profile of 3 steady chunks of the compiled stream
from torch.profiler import profile, ProfilerActivity
with sdpa_context(device, False):
    frames = open_stream(pipe, embeddings, 1 + 4 * (3 * 8 - 1), height=480, width=832,
                         generator=torch.Generator(device).manual_seed(2), **WAN_STREAM).frames()
    for i, _ in enumerate(frames):
        if i == 4 * 3 * 5:
            break
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i, _ in enumerate(frames):
            if i == 4 * 3 * 3 - 1:
                break
        torch.cuda.synchronize()
table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=50, max_name_column_width=110)
open(os.path.join(OUT, "explore_profile_kernels.txt"), "w").write(table)
categories = collections.Counter()
def category(name):
    n = name.lower()
    if "sdpa" in n or "flash" in n or "fmha" in n or "attention" in n: return "attention"
    if "nvjet" in n or "gemm" in n and "fprop" not in n or "cutlass" in n and "conv" not in n: return "gemm"
    if "fprop" in n or "conv" in n or "nchwtonhwc" in n or "nhwctonchw" in n: return "conv"
    if n.startswith("triton"): return "triton fused"
    if "memcpy" in n or "copy" in n: return "copy"
    return "other"
for event in prof.key_averages():
    if event.device_type == torch.autograd.DeviceType.CUDA or event.self_device_time_total:
        categories[category(event.key)] += event.self_device_time_total / 1e3
results["profile_ms_by_category_3_chunks"] = dict(categories)
dump()
print(table[:6000]); print(json.dumps(results, indent=1))
