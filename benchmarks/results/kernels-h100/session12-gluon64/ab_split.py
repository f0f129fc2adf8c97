"""Session 12: the Gluon forward with the items of a part-filled last wave cut into pieces (gluon_hopper.plan_units,
merged by split_merge.py) against the same kernel without cutting (max_pieces=1), alternating on one machine, on
bench_kernels.py's random masks, with cuDNN dense timed in the same loop for the rate ratio.
Run from the repository root: python3 benchmarks/results/kernels-h100/session12-gluon64/ab_split.py
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
from swiftdit.kernels.block_sparse_attention import gluon_hopper  # noqa: E402


def run(q, k, v, idx, cnt, block, max_pieces):
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    gluon_hopper.launch_forward_hopper(q, k, v, out, lse, idx, cnt, block, 1.0 / math.sqrt(q.shape[-1]),
                                       max_pieces=max_pieces)
    return out, lse


for shape_key, density, block in (("wan480", 0.1, 128), ("wan480", 0.2, 128), ("wan480", 0.5, 128),
                                  ("wan480", 1.0, 128), ("wan480", 0.1, 64), ("wan480", 1.0, 64)):
    shape = SHAPES[shape_key]
    h, n, d = shape.heads, shape.visual_tokens, shape.head_dim
    q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    mask = random_block_mask(h, math.ceil(n / block), density, "cuda", seed=int(density * 1000))
    idx, cnt = (x.to(torch.int32).contiguous() for x in block_mask_to_index_table(mask))
    whole, cut = run(q, k, v, idx, cnt, block, 1), run(q, k, v, idx, cnt, block, gluon_hopper.MAX_PIECES)
    flops = 4.0 * d * kept_pairs(mask, n, block, 0)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    row = dict(shape=shape_key, density=density, block=block,
               plan=gluon_hopper.plan_units(h * math.ceil(n / block), sms * 128 // block)._asdict(),
               max_abs_out=(whole[0].float() - cut[0].float()).abs().max().item(),
               max_abs_lse=(whole[1] - cut[1]).abs().max().item())
    for repeat in range(3):
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            dense_ms = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v), False)
        row.setdefault("cudnn_dense_ms", []).append(dense_ms)
        for name, pieces in (("whole_ms", 1), ("cut_ms", gluon_hopper.MAX_PIECES)):
            row.setdefault(name, []).append(bench_ms(lambda: run(q, k, v, idx, cnt, block, pieces), False))
    dense_rate = 4.0 * h * n * n * d / (sum(row["cudnn_dense_ms"]) / 3)
    for name in ("whole", "cut"):
        row[f"{name}_ratio"] = flops / (sum(row[f"{name}_ms"]) / 3) / dense_rate
    print(json.dumps(row), flush=True)
