# Exploratory, run on the H100 from the repository root (session 6): the compiled stream with the chunk-at-once
# decode ran at 1.39 s per chunk while its GPU work summed to about 0.48 s. Per-chunk arrival times, allocator
# retries and dynamo's compile counters, for the decode chunk-at-once / frame by frame, overlapped / synchronous.
import json, os, sys, time
import torch
from torch._dynamo.utils import counters
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
sys.path.insert(0, "benchmarks")
from bench_rolling import WAN_13B, WAN_TEXT_TOKENS, WAN_STREAM  # noqa
from sdpa_backends import sdpa_context  # noqa
from swiftdit.pipelines import rolling  # noqa
from swiftdit.pipelines.rolling import WanVaeFrames, compile_for_streaming, open_stream, uint8_frames  # noqa
OUT = os.environ.get("OUT", "/tmp/out")
results = {}
device = torch.device("cuda"); dtype = torch.bfloat16
torch.manual_seed(0)
transformer = WanTransformer3DModel(**WAN_13B).to(device, dtype).eval()
vae = AutoencoderKLWan().to(device, dtype).eval()
pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                   scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
embeddings = torch.randn(1, WAN_TEXT_TOKENS, 4096, device=device, dtype=dtype)
chunk_at_once = WanVaeFrames.decode

@torch.no_grad()
def per_frame(self, samples):
    vae = self.vae
    samples = samples.to(self.latents_std) * self.latents_std + self.latents_mean
    features = vae.post_quant_conv(samples.to(vae.dtype))
    decoded = []
    for index in range(features.shape[2]):
        vae._conv_idx = [0]
        decoded.append(vae.decoder(features[:, :, index:index + 1], feat_cache=vae._feat_map,
                                   feat_idx=vae._conv_idx, first_chunk=self.first_frame))
        self.first_frame = False
    return uint8_frames(torch.cat(decoded, dim=2)[0])

def run_stream(label, chunks=12, synchronous=False):
    stream = open_stream(pipe, embeddings, 1 + 4 * (3 * chunks - 1), height=480, width=832,
                         generator=torch.Generator(device).manual_seed(0), **WAN_STREAM)
    if synchronous:
        stream.decoder.stream = None
    graphs = dict(counters["stats"])
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_stats()
    arrivals = []; start = time.perf_counter()
    with sdpa_context(device, False):
        for i, _ in enumerate(stream.frames()):
            if i == 0 or (i - 1) % 12 == 11:
                arrivals.append(time.perf_counter() - start)
    after = torch.cuda.memory_stats()
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    results[label] = dict(chunk_gaps=gaps, median_gap=sorted(gaps[2:])[len(gaps[2:]) // 2],
                          alloc_retries=after["num_alloc_retries"] - before["num_alloc_retries"],
                          device_allocs=after["num_device_alloc"] - before["num_device_alloc"],
                          device_frees=after["num_device_free"] - before["num_device_free"],
                          peak_gib=torch.cuda.max_memory_allocated() / 2**30,
                          reserved_gib=torch.cuda.memory_reserved() / 2**30,
                          graphs_before=graphs, graphs_after=dict(counters["stats"]))
    print(label, json.dumps(results[label]), flush=True)
    json.dump(results, open(os.path.join(OUT, "explore_stall.json"), "w"), indent=1)

run_stream("eager_chunk_at_once")
compile_for_streaming(pipe)
s = time.perf_counter(); run_stream("compiled_chunk_at_once_first_stream"); print("first", time.perf_counter() - s)
run_stream("compiled_chunk_at_once")
run_stream("compiled_chunk_at_once_synchronous", synchronous=True)
WanVaeFrames.decode = per_frame
run_stream("compiled_per_frame_first_stream")
run_stream("compiled_per_frame")
run_stream("compiled_per_frame_synchronous", synchronous=True)
