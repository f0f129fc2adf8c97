"""Session 12: A/B of versions of the Gluon forward on one machine, alternating, on bench_kernels.py's random
masks, all through the current launcher (their signatures are the same):
- 3b50c38: session 11's kernel, before the lanes (128-token blocks only);
- 75698a0: with the lanes of 64-token blocks;
- current: the tree this runs on.
First run (ab_block128.jsonl): 3b50c38 against 75698a0 as "current". Second (ab_first_tile.jsonl): all three, with
"current" an uncommitted tree of 75698a0 plus the first tile's Q K^T issued alone at both block sizes (a9d622f
kept it at 64-token blocks only). The launcher has since gained the work-unit arguments, so the older kernels no
longer take its call: the script ran on those trees. The older kernels: old_kernels.py.
Run from the repository root: python3 benchmarks/results/kernels-h100/session12-gluon64/ab_block128.py
"""

import json
import math
import sys

import torch

sys.path.insert(0, "benchmarks")
sys.path.insert(0, "benchmarks/results/kernels-h100/session12-gluon64")
from old_kernels import kernel_file  # noqa: E402
from bench_kernels import SHAPES, bench_ms, kept_pairs, random_block_mask  # noqa: E402

from swiftdit.kernels.block_index_table import block_mask_to_index_table  # noqa: E402
from swiftdit.kernels.block_sparse_attention import gluon_hopper  # noqa: E402
from swiftdit.kernels.block_sparse_attention.triton_ops import _ensure_tma_allocator  # noqa: E402

_ensure_tma_allocator()




versions = {"3b50c38": kernel_file("3b50c38"), "75698a0": kernel_file("75698a0"), "current": gluon_hopper.load_kernel()}


def run(kernel, q, k, v, idx, cnt, block):
    gluon_hopper.load_kernel = lambda: kernel  # the launcher looks the module up at each call
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    gluon_hopper.launch_forward_hopper(q, k, v, out, lse, idx, cnt, block, 1.0 / math.sqrt(q.shape[-1]))
    return out, lse


for shape_key, density, block in (("wan480", 0.1, 128), ("wan480", 0.2, 128), ("wan480", 1.0, 128),
                                  ("wan720", 0.1, 128), ("wan480", 0.1, 64), ("wan480", 1.0, 64)):
    kernels = {name: kernel for name, kernel in versions.items() if block == 128 or name != "3b50c38"}
    shape = SHAPES[shape_key]
    h, n, d = shape.heads, shape.visual_tokens, shape.head_dim
    q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    mask = random_block_mask(h, math.ceil(n / block), density, "cuda", seed=int(density * 1000))
    idx, cnt = block_mask_to_index_table(mask)
    outs = [run(kernel, q, k, v, idx, cnt, block) for kernel in kernels.values()]
    row = dict(shape=shape_key, density=density, block=block,
               same_output=all(torch.equal(a, b) for out in outs[1:] for a, b in zip(outs[0], out)),
               kept_tflop=4.0 * d * kept_pairs(mask, n, block, 0) / 1e12)
    for repeat in range(3):
        for name, kernel in kernels.items():
            row.setdefault(f"{name}_ms", []).append(bench_ms(lambda: run(kernel, q, k, v, idx, cnt, block), False))
    print(json.dumps(row), flush=True)
