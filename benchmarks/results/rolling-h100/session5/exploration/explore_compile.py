# Exploratory, run once on the H100 from the repository root (BENCHMARKS.md, rolling generation): torch.compile of the VAE decoder and of Wan's blocks, and sparse attention in the window.
import contextlib, json, os, sys, time, types, traceback
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
sys.path.insert(0, "benchmarks")
from bench_rolling import WAN_13B, WAN_TEXT_TOKENS, wan_time_breakdown  # noqa
from sdpa_backends import sdpa_context  # noqa
import swiftdit  # noqa
from swiftdit.pipelines.rolling import WanVaeFrames  # noqa
from swiftdit.pipelines.kv_cache import KVCacheWanAttnProcessor  # noqa
torch._dynamo.config.cache_size_limit = 64
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
    json.dump(results, open(os.path.join(OUT, "compile.json"), "w"), indent=1)
    print(json.dumps(results, indent=1), flush=True)

def time_decode(label):
    decoder = WanVaeFrames(pipe); decoder.stream = None
    latents = torch.randn(1, 16, 3, 60, 104, device=device)
    s = time.perf_counter(); decoder.decode(latents); decoder.decode(latents); torch.cuda.synchronize()
    first = time.perf_counter() - s
    times = []
    for _ in range(4):
        torch.cuda.synchronize(); s = time.perf_counter(); decoder.decode(latents); torch.cuda.synchronize()
        times.append(time.perf_counter() - s)
    results.setdefault("decode_seconds_per_chunk", {})[label] = dict(median=sorted(times)[2], first_two=first)
    dump()

def breakdown(label, chunks=12):
    try:
        with sdpa_context(device, False):
            results.setdefault("breakdown", {})[label] = wan_time_breakdown(pipe, embeddings, args, device, chunks=chunks)
    except Exception as error:
        traceback.print_exc()
        results.setdefault("breakdown", {})[label] = repr(error)
    dump()

with torch.no_grad():
    time_decode("eager")
    eager_decoder = vae.decoder
    try:
        vae.decoder = torch.compile(eager_decoder)
        time_decode("compiled")
    except Exception as error:
        traceback.print_exc(); results["decode_compile_error"] = repr(error); vae.decoder = eager_decoder
    dump()

breakdown("eager_blocks_decoder_as_above")
# Sparse attention in the window (eager blocks)
for method in ("clear", "radial"):
    try:
        pipe.enable_efficient_attention(method)
        breakdown(f"{method}_in_window")
    except Exception as error:
        traceback.print_exc(); results[f"{method}_error"] = repr(error)
    finally:
        with contextlib.suppress(Exception):
            pipe.disable_efficient_attention()
# Compiled blocks, the KV-cache attention left to eager
KVCacheWanAttnProcessor.__call__ = torch.compiler.disable(KVCacheWanAttnProcessor.__call__)
transformer.compile_repeated_blocks()
breakdown("compiled_blocks", chunks=14)
