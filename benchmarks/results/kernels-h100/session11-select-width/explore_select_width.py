"""Session 11: is the one-kernel selection (triton_select.py) worth it for rows wider than 512 key blocks?

Wan 720p (H=12, L=75600) plans 591 key blocks per row at 128-token blocks and 1,182 at 64. Times the whole
planner as a CUDA graph with the cap at 512 (those rows take PyTorch's top-k / sort) and raised to 2,048
(those rows take the in-register sort), for the top-k and the cumulative-mass rules, against one cuDNN call.
Run from the repository root: python3 benchmarks/results/kernels-h100/session11-select-width/explore_select_width.py
"""

import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, "benchmarks")
from bench_kernels import bench_ms, graph_ms  # noqa: E402

from swiftdit.kernels.block_sparse_planning import plan_block_sparse, triton_select  # noqa: E402

q, k, v = (torch.randn(1, 12, 75600, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
    dense_ms = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v), False)
rows = []
for block in (128, 64):
    for rule, options in (("top-k 10%", dict(keep_ratio=0.1)), ("top-k 10% + mass 0.9", dict(keep_ratio=0.1,
                                                                                              keep_mass=0.9))):
        plans = {}
        for cap in (512, 2048):
            triton_select.MAX_KEY_BLOCKS = cap

            def plan():
                return plan_block_sparse(q, k, block, include_diagonal=True, **options)

            plans[cap] = plan()
            ms = graph_ms(plan, False)
            rows.append(dict(block=block, rule=rule, cap=cap, graph_ms=ms, share=ms / dense_ms))
            print(json.dumps(rows[-1]), flush=True)
        same = torch.equal(plans[512].block_mask, plans[2048].block_mask)
        differing_rows = (plans[512].block_mask != plans[2048].block_mask).any(-1).sum().item()
        print(json.dumps(dict(block=block, rule=rule, same_mask=same, differing_rows=differing_rows)), flush=True)
print(json.dumps(dict(dense_ms=dense_ms)))
