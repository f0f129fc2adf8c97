"""A/B of the token reorder inside real forwards (one-off): swiftdit's row-gather kernel against index_select
(the reference), alternating in one process, Wan 480p and 720p, `sparse` and `clear` at their defaults."""
import statistics
import sys

import swiftdit
import torch

sys.path.insert(0, "benchmarks")
from bench_speed import SHAPES, build_transformer, forward_inputs  # noqa: E402
from sdpa_backends import sdpa_context  # noqa: E402

import swiftdit.methods.blocking as blocking  # noqa: E402
from swiftdit.kernels.token_permutation import permute_tokens, permute_tokens_reference  # noqa: E402

device = torch.device("cuda")
for shape in ("wan480", "wan720"):
    spec = SHAPES[shape]
    transformer = build_transformer(spec, False, device, torch.bfloat16)
    inputs = forward_inputs(spec, transformer, device, torch.bfloat16)
    for method in ("sparse", "clear"):
        swiftdit.enable_efficient_attention(transformer, method)
        session = swiftdit.attention_session(transformer)
        times = {"row gather": [], "index_select": []}
        for rep in range(4):
            for name, gather in (("row gather", permute_tokens), ("index_select", permute_tokens_reference)):
                blocking.permute_tokens = gather
                session.reset_call_state()
                with torch.no_grad(), sdpa_context(device, False):
                    transformer(**inputs)  # warm
                    session.reset_call_state()
                    torch.cuda.synchronize()
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    transformer(**inputs)
                    end.record()
                    end.synchronize()
                times[name].append(start.elapsed_time(end) / 1e3)
        blocking.permute_tokens = permute_tokens
        swiftdit.disable_efficient_attention(transformer)
        print(shape, method, {k: round(statistics.median(v), 4) for k, v in times.items()}, flush=True)
    del transformer
    torch.cuda.empty_cache()
