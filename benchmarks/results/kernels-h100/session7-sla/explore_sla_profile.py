"""Where SLA's forward spends its time at Wan 480p, 10% critical blocks (one-off): a torch.profiler table of
one `sparse_linear_attention` call per block size, and the linear branch's pieces timed alone."""
import math
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "benchmarks")
from bench_kernels import bench_ms, random_block_mask  # noqa: E402

from swiftdit.kernels.block_sparse_attention import block_mask_to_index_table  # noqa: E402
from swiftdit.kernels.sparse_linear_attention import sparse_linear_attention  # noqa: E402

h, n, d = 12, 32760, 128
q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
for block in (64, 128):
    mask = random_block_mask(h, math.ceil(n / block), 0.1, "cuda", seed=7)
    kv_indices, kv_counts = block_mask_to_index_table(mask)

    def forward():
        return sparse_linear_attention(q, k, v, kv_indices, kv_counts, block)

    with torch.no_grad():
        print(f"block {block}: whole forward {bench_ms(forward, False):.3f} ms", flush=True)
        for _ in range(3):
            forward()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as trace:
            forward()
            torch.cuda.synchronize()
    events = sorted((e for e in trace.key_averages() if e.self_device_time_total > 0),
                    key=lambda e: e.self_device_time_total, reverse=True)
    for e in events[:18]:
        print(f"  {e.self_device_time_total / 1e3:8.3f} ms  x{e.count:<3d} {e.key[:100]}")
