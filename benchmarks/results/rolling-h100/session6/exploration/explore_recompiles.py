# Exploratory, run on the H100 from the repository root (session 6): bench_rolling's timed stream waited about
# 50 s for its first frame after a warm-up stream had compiled everything. Which guards fail in a second stream.
import sys, time
import torch
from torch._dynamo.utils import counters
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
sys.path.insert(0, "benchmarks")
from bench_rolling import WAN_13B, WAN_TEXT_TOKENS, WAN_STREAM  # noqa
from sdpa_backends import sdpa_context  # noqa
from swiftdit.pipelines.rolling import compile_for_streaming, open_stream  # noqa
device, dtype = torch.device("cuda"), torch.bfloat16
torch.manual_seed(0)
transformer = WanTransformer3DModel(**WAN_13B).to(device, dtype).eval()
vae = AutoencoderKLWan().to(device, dtype).eval()
pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                   scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
embeddings = torch.randn(1, WAN_TEXT_TOKENS, 4096, device=device, dtype=dtype)
compile_for_streaming(pipe)

def run(chunks, seed):
    started = time.perf_counter(); first = None
    with sdpa_context(device, False):
        for i, _ in enumerate(open_stream(pipe, embeddings, 1 + 4 * (3 * chunks - 1), height=480, width=832,
                                          generator=torch.Generator(device).manual_seed(seed), **WAN_STREAM).frames()):
            if first is None:
                first = time.perf_counter() - started
    print(f"stream of {chunks} chunks: first frame after {first:.1f} s, all {time.perf_counter() - started:.1f} s,"
          f" {dict(counters['stats'])}", flush=True)

run(5, 1)
torch._logging.set_logs(recompiles=True)
run(12, 0)
run(12, 2)
