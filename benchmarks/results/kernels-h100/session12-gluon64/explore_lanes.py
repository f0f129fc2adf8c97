"""Session 12: the Gluon forward at 64-token blocks (two lanes of work items per program, one consumer each),
with and without turns between the lanes' consumers, beside the Triton kernel and cuDNN dense on bench_kernels.py's
random masks. Checks both against the Triton kernel first. Its output is explore_lanes.jsonl. The turns cost
1.3-2.6% at Wan 480p (and gained 1% at 720p), so the kernel option it sets (`lane_turns`) was removed
afterwards: the script ran on the tree of that hour and no longer runs as it is.
Run from the repository root: python3 benchmarks/results/kernels-h100/session12-gluon64/explore_lanes.py
"""

import json
import math
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, "benchmarks")
from bench_kernels import SHAPES, bench_ms, kept_pairs, random_block_mask  # noqa: E402

from swiftdit.kernels.block_index_table import block_mask_to_index_table  # noqa: E402
from swiftdit.kernels.block_sparse_attention import block_sparse_attention  # noqa: E402
from swiftdit.kernels.block_sparse_attention.gluon_hopper import launch_forward_hopper  # noqa: E402
from swiftdit.kernels.block_sparse_attention.triton_ops import _ensure_tma_allocator  # noqa: E402

_ensure_tma_allocator()
block = 64


def gluon(q, k, v, idx, cnt, turns):
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    launch_forward_hopper(q, k, v, out, lse, idx, cnt, block, 1.0 / math.sqrt(q.shape[-1]), lane_turns=turns)
    return out, lse


for (n, d, h) in ((3000, 128, 3), (777, 64, 5), (8190, 128, 2)):
    q, k, v = (torch.randn(2, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    nb = math.ceil(n / block)
    mask = torch.rand(2, h, nb, nb, device="cuda") < torch.rand(2, h, nb, 1, device="cuda")  # uneven rows
    mask[0, 0, 0] = False
    idx, cnt = block_mask_to_index_table(mask)
    ref, ref_lse = block_sparse_attention(q, k, v, idx, cnt, block, backend="triton")
    for turns in (False, True):
        out, lse = gluon(q, k, v, idx, cnt, turns)
        finite = torch.isfinite(ref_lse)
        print(json.dumps(dict(check=f"n={n} d={d} h={h} turns={turns}",
                              max_abs_out=(out.float() - ref.float()).abs().max().item(),
                              max_abs_lse=(lse[finite] - ref_lse[finite]).abs().max().item(),
                              empty_rows_same=bool(torch.equal(torch.isinf(lse), torch.isinf(ref_lse))))), flush=True)

cases = [("wan480", x) for x in (0.05, 0.1, 0.2, 0.5, 1.0)] + [("wan720", x) for x in (0.1, 0.5)]
dense = {}
for shape_key, density in cases:
    shape = SHAPES[shape_key]
    h, n, d = shape.heads, shape.visual_tokens, shape.head_dim
    q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    if shape_key not in dense:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            dense[shape_key] = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v), False)
    dense_rate = 4.0 * h * n * n * d / dense[shape_key] / 1e9
    mask = random_block_mask(h, math.ceil(n / block), density, "cuda", seed=int(density * 1000))
    idx, cnt = block_mask_to_index_table(mask)
    flops = 4.0 * d * kept_pairs(mask, n, block, 0)
    row = dict(shape=shape_key, density=density, cudnn_ms=dense[shape_key])
    for name, fn in (("triton", lambda: block_sparse_attention(q, k, v, idx, cnt, block, backend="triton")),
                     ("gluon_lanes", lambda: gluon(q, k, v, idx, cnt, False)),
                     ("gluon_lanes_turns", lambda: gluon(q, k, v, idx, cnt, True))):
        ms = bench_ms(fn, False)
        row[f"{name}_ms"] = ms
        row[f"{name}_ratio"] = flops / ms / 1e9 / dense_rate
    print(json.dumps(row), flush=True)
