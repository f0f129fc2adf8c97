# Exploratory, run once on the H100 from the repository root (BENCHMARKS.md, rolling generation): efficient
# attention inside the streaming window at Wan2.1-1.3B size, and where its calls make the host wait for the GPU.
import collections, json, os, sys, types, warnings
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
sys.path.insert(0, "benchmarks")
from bench_rolling import WAN_13B, WAN_TEXT_TOKENS, wan_time_breakdown  # noqa: E402
from sdpa_backends import sdpa_context  # noqa: E402
import swiftdit  # noqa: E402,F401

OUT = os.environ.get("OUT", "/tmp/out")
results = {}
device = torch.device("cuda")
torch.manual_seed(0)
transformer = WanTransformer3DModel(**WAN_13B).to(device, torch.bfloat16).eval()
vae = AutoencoderKLWan().to(device, torch.bfloat16).eval()
pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                   scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
embeddings = torch.randn(1, WAN_TEXT_TOKENS, 4096, device=device, dtype=torch.bfloat16)
args = types.SimpleNamespace(wan_height=480, wan_width=832)
for method in (None, "clear", "radial"):
    label = method or "dense"
    if method:
        pipe.enable_efficient_attention(method)
    with sdpa_context(device, False):
        results[label] = wan_time_breakdown(pipe, embeddings, args, device, chunks=12)
        # Host waits: one more short stream with PyTorch's sync debug mode, counting the warning sites.
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wan_time_breakdown(pipe, embeddings, args, device, chunks=4, warmup_chunks=1)
        torch.cuda.set_sync_debug_mode(0)
    sites = collections.Counter(f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))
    results[label]["sync_sites"] = dict(sites.most_common(12))
    if method:
        pipe.disable_efficient_attention()
    print(json.dumps({label: results[label]}, indent=1), flush=True)
json.dump(results, open(os.path.join(OUT, "window.json"), "w"), indent=1)
