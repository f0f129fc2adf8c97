"""Session 11: the Gluon forward's K/V ring with 2 stages against 3 (GLUON_STAGES), on bench_kernels.py's masks.
Run from the repository root: python3 benchmarks/results/kernels-h100/session11-gluon/explore_stages.py"""

import json
import math
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, "benchmarks")
from bench_kernels import SHAPES, bench_ms, kept_pairs, random_block_mask  # noqa: E402

from swiftdit.kernels.block_index_table import block_mask_to_index_table  # noqa: E402
from swiftdit.kernels.block_sparse_attention import block_sparse_attention, gluon_hopper  # noqa: E402

for shape_key, densities in (("wan480", (0.1, 0.2)), ("wan720", (0.1,))):
    shape = SHAPES[shape_key]
    h, n, d = shape.heads, shape.visual_tokens, shape.head_dim
    q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        dense_ms = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v), False)
    dense_rate = 4.0 * h * n * n * d / dense_ms / 1e9
    for density in densities:
        mask = random_block_mask(h, math.ceil(n / 128), density, "cuda", seed=int(density * 1000))
        idx, cnt = block_mask_to_index_table(mask)
        flops = 4.0 * d * kept_pairs(mask, n, 128, 0)
        row = dict(shape=shape_key, density=density, cudnn_ms=dense_ms)
        outs = {}
        for stages in (3, 2, 3):
            gluon_hopper.GLUON_STAGES = stages
            outs[stages] = block_sparse_attention(q, k, v, idx, cnt, 128, backend="gluon")[0]
            ms = bench_ms(lambda: block_sparse_attention(q, k, v, idx, cnt, 128, backend="gluon"), False)
            row.setdefault(f"stages{stages}_ms", []).append(ms)
            row.setdefault(f"stages{stages}_ratio", []).append(flops / ms / 1e9 / dense_rate)
        row["same_output"] = bool(torch.equal(outs[2], outs[3]))
        print(json.dumps(row), flush=True)
