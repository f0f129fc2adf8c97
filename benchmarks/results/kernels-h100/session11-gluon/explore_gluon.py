"""Session 11: the Gluon forward (kernels/block_sparse_attention/gluon_hopper.py) beside the Triton forward and
cuDNN dense, on bench_kernels.py's random masks. Checks the output and LSE against the Triton kernel, then times.
Run from the repository root: python3 benchmarks/results/kernels-h100/session11-gluon/explore_gluon.py [quick]
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

quick = len(sys.argv) > 1 and sys.argv[1] == "quick"
_ensure_tma_allocator()
block = 128


def gluon(q, k, v, idx, cnt):
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    launch_forward_hopper(q, k, v, out, lse, idx, cnt, 1.0 / math.sqrt(q.shape[-1]))
    return out, lse


# Correctness first: small ragged shapes, both layouts, head_dim 64 and 128, empty rows.
for (n, d, layout) in ((1000, 128, "bhnd"), (1000, 64, "bnhd"), (4096, 128, "bnhd"), (777, 128, "bhnd")):
    h = 3
    if layout == "bhnd":
        q, k, v = (torch.randn(2, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    else:
        q, k, v = (torch.randn(2, n, h, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(3))
    nb = math.ceil(n / block)
    mask = torch.rand(2, h, nb, nb, device="cuda") < 0.4
    mask[0, 0, 0] = False  # an empty row
    idx, cnt = block_mask_to_index_table(mask)
    ref, ref_lse = block_sparse_attention(q, k, v, idx, cnt, block, backend="triton")
    out, lse = gluon(q, k, v, idx, cnt)
    finite = torch.isfinite(ref_lse)
    print(json.dumps(dict(check=f"n={n} d={d} {layout}", max_abs_out=(out.float() - ref.float()).abs().max().item(),
                          max_abs_lse=(lse[finite] - ref_lse[finite]).abs().max().item(),
                          empty_rows_same=bool(torch.equal(torch.isinf(lse), torch.isinf(ref_lse))),
                          empty_out_zero=bool((out[0, 0, :block] == 0).all()))), flush=True)

cases = [("wan480", 0.1), ("wan480", 1.0)] if quick else [(s, d) for s in ("wan480", "wan720") for d in (0.05, 0.1, 0.2, 0.5, 1.0)]
dense = {}
for shape_key, density in cases:
    shape = SHAPES[shape_key]
    h, n, d = shape.heads, shape.visual_tokens, shape.head_dim
    q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    if shape_key not in dense:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            dense[shape_key] = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v), quick)
    dense_rate = 4.0 * h * n * n * d / dense[shape_key] / 1e9
    mask = random_block_mask(h, math.ceil(n / block), density, "cuda", seed=int(density * 1000))
    idx, cnt = block_mask_to_index_table(mask)
    flops = 4.0 * d * kept_pairs(mask, n, block, 0)
    ref, ref_lse = block_sparse_attention(q, k, v, idx, cnt, block)
    out, lse = gluon(q, k, v, idx, cnt)
    row = dict(shape=shape_key, density=density, cudnn_ms=dense[shape_key],
               max_abs_out=(out.float() - ref.float()).abs().max().item(),
               max_abs_lse=(lse - ref_lse).abs().max().item())
    for name, fn in (("triton", lambda: block_sparse_attention(q, k, v, idx, cnt, block)),
                     ("gluon", lambda: gluon(q, k, v, idx, cnt))):
        ms = bench_ms(fn, quick)
        row[f"{name}_ms"] = ms
        row[f"{name}_ratio"] = flops / ms / 1e9 / dense_rate
    print(json.dumps(row), flush=True)
