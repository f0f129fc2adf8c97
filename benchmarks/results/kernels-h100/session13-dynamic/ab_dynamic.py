"""Session 13: the Gluon forward whose programs claim work units from a counter as they free up (dynamic) against
session 12's, which walks a fixed stride of units per program (static), alternating on one machine, on
bench_kernels.py's random masks, with cuDNN dense timed in the same loop for the rate ratio. With `varied` as the
second argument the rows keep different numbers of blocks (bench_kernels.varied_block_mask; in session 13 the
script held its own copy of it), as the planners' mass rules give.

The static kernel is session 12's final tree (7dd3566). Write it into the package first, beside the current one,
so that it travels to the device with the working tree (the files are not kept in the repository):

    base=kernels/block_sparse_attention/_ab_static_gluon_hopper
    git show 7dd3566:kernels/block_sparse_attention/gluon_hopper_kernel.py > ${base}_kernel.py
    git show 7dd3566:kernels/block_sparse_attention/gluon_hopper.py \\
      | sed 's/from \\. import gluon_hopper_kernel$/from . import _ab_static_gluon_hopper_kernel as gluon_hopper_kernel/' \\
      > ${base}.py

Run from the repository root:

    python3 benchmarks/results/kernels-h100/session13-dynamic/ab_dynamic.py [--repeats N] [--masks varied]

The same script compared later trees: with the baseline files written from another commit, --labels names the
two kernels in the output (ab_tma_store.jsonl: the tree of b2e9af6 against the TMA output store).
"""

import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, "benchmarks")
from bench_kernels import SHAPES, bench_ms, kept_pairs, random_block_mask, varied_block_mask  # noqa: E402

from swiftdit.kernels.block_index_table import block_mask_to_index_table  # noqa: E402
from swiftdit.kernels.block_sparse_attention import _ab_static_gluon_hopper, gluon_hopper  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--masks", choices=["random", "varied"], default="random")
parser.add_argument("--labels", nargs=2, default=["static", "dynamic"], help="names of the baseline and current kernel")
args = parser.parse_args()
KERNELS = dict(zip(args.labels, (_ab_static_gluon_hopper, gluon_hopper)))
BASELINE, CURRENT = args.labels
CASES = (("wan480", 0.05, 128), ("wan480", 0.1, 128), ("wan480", 0.2, 128), ("wan480", 0.5, 128),
         ("wan480", 1.0, 128), ("wan720", 0.1, 128), ("hunyuan720", 0.1, 128), ("wan480", 0.1, 64),
         ("wan480", 0.5, 64), ("wan720", 0.1, 64), ("hunyuan720", 0.1, 64))
REPEATS = args.repeats
VARIED = args.masks == "varied"
if VARIED:
    CASES = (("wan480", 0.1, 128), ("wan480", 0.2, 128), ("wan720", 0.1, 128), ("wan480", 0.1, 64),
             ("hunyuan720", 0.1, 64))


def run(module, q, k, v, idx, cnt, block, text_k, text_v):
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    module.launch_forward_hopper(q, k, v, out, lse, idx, cnt, block, 1.0 / math.sqrt(q.shape[-1]), text_k=text_k,
                                 text_v=text_v)
    return out, lse


for shape_key, density, block in CASES:
    shape = SHAPES[shape_key]
    h, n, t, d = shape.heads, shape.visual_tokens, shape.text_tokens, shape.head_dim
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    text_k, text_v = ((torch.randn(1, h, t, d, device="cuda", dtype=torch.bfloat16) for _ in range(2)) if t else
                      (None, None))
    joint = [torch.cat([x, tx], 2) if t else x for x, tx in ((q, text_k), (k, text_k), (v, text_v))]
    make_mask = varied_block_mask if VARIED else random_block_mask
    mask = make_mask(h, math.ceil(n / block), density, "cuda", seed=int(density * 1000))
    idx, cnt = (x.to(torch.int32).contiguous() for x in block_mask_to_index_table(mask))
    results = {name: run(module, q, k, v, idx, cnt, block, text_k, text_v) for name, module in KERNELS.items()}
    flops = 4.0 * d * kept_pairs(mask, n, block, t)
    row = dict(shape=shape_key, density=density, block=block, masks="varied" if VARIED else "random",
               max_abs_out=(results[BASELINE][0].float() - results[CURRENT][0].float()).abs().max().item(),
               max_abs_lse=(results[BASELINE][1] - results[CURRENT][1]).abs().max().item())
    for repeat in range(REPEATS):
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            dense_ms = bench_ms(lambda: F.scaled_dot_product_attention(*joint), False)
        row.setdefault("cudnn_dense_ms", []).append(dense_ms)
        for name, module in KERNELS.items():
            row.setdefault(f"{name}_ms", []).append(
                bench_ms(lambda: run(module, q, k, v, idx, cnt, block, text_k, text_v), False))
    dense_rate = 4.0 * h * (n + t) ** 2 * d / (sum(row["cudnn_dense_ms"]) / REPEATS)
    for name in KERNELS:
        row[f"{name}_ratio"] = round(flops / (sum(row[f"{name}_ms"]) / REPEATS) / dense_rate, 4)
    print(json.dumps(row), flush=True)
