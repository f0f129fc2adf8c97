"""Session 12: why the Gluon forward at 64-token blocks with HunyuanVideo's 256 text keys ran slower after a9d622f.
A/B/C on one machine at HunyuanVideo 720p (and Wan 480p as the control), bench_kernels.py's random masks:
75698a0 (lanes), a9d622f (+ the first tile's Q K^T alone) and the current tree (+ work units for cut items).
The two older kernels (old_kernels.py) take the arguments of their own launcher, rebuilt here
(`launch_before_units`).
Run from the repository root: python3 benchmarks/results/kernels-h100/session12-gluon64/ab_text64.py
"""

import json
import math
import sys

import torch

sys.path.insert(0, "benchmarks")
sys.path.insert(0, "benchmarks/results/kernels-h100/session12-gluon64")
from old_kernels import kernel_file  # noqa: E402
from bench_kernels import SHAPES, bench_ms, random_block_mask  # noqa: E402

from swiftdit.kernels.block_index_table import block_mask_to_index_table  # noqa: E402
from swiftdit.kernels.block_sparse_attention import gluon_hopper  # noqa: E402
from swiftdit.kernels.block_sparse_attention.triton_attention import LOG2E  # noqa: E402




def launch_before_units(kernel, q, k, v, out, lse, idx, cnt, block, text_k, text_v):
    """The launcher of 75698a0 / a9d622f (no work units), bnhd-free: contiguous (B, H, N, D) inputs."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    b, h, n, d = q.shape
    q_layout, kv_layout = gluon_hopper._shared_layouts(kernel.gl, q.dtype, d, block)
    mats = [x.view(-1, d) for x in (q, k, v, text_k.contiguous(), text_v.contiguous(), k, k)]
    descs = [TensorDescriptor(m, list(m.shape), list(m.stride()), [rows, d], layout)
             for m, rows, layout in zip(mats, (64,) + (block,) * 6, (q_layout,) + (kv_layout,) * 6)]
    n_q_blocks = math.ceil(n / block)
    total = b * h * n_q_blocks
    lanes = 128 // block
    grid = (min(math.ceil(total / lanes), torch.cuda.get_device_properties(0).multi_processor_count),)
    kernel.block_sparse_forward_hopper_kernel[grid](
        *descs, out, lse, idx, cnt, lse, lse, cnt, out.stride(0), out.stride(1), out.stride(2),
        0 if idx.shape[0] == 1 else idx.stride(0), idx.stride(1), idx.stride(2),
        0 if cnt.shape[0] == 1 else cnt.stride(0), cnt.stride(1), 0, 0, 0, 0,
        h, n, text_k.shape[2], 0, n_q_blocks, total, 1.0 / math.sqrt(d) * LOG2E,
        BLOCK=block, HEAD_DIM=d, STAGES=3, EVEN_N=n % block == 0, BNHD=False, HAS_TEXT=True, HAS_TEXT_MASK=False,
        POOLED=False, num_warps=4, maxnreg=168)


versions = {"75698a0": kernel_file("75698a0"), "a9d622f": kernel_file("a9d622f")}
for shape_key, density in (("hunyuan720", 0.05), ("hunyuan720", 1.0), ("wan480", 0.1)):
    shape = SHAPES[shape_key]
    block, (h, n, t, d) = 64, (shape.heads, shape.visual_tokens, max(shape.text_tokens, 256), shape.head_dim)
    q, k, v = (torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    text_k, text_v = (torch.randn(1, h, t, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    mask = random_block_mask(h, math.ceil(n / block), density, "cuda", seed=int(density * 1000))
    idx, cnt = (x.to(torch.int32).contiguous() for x in block_mask_to_index_table(mask))
    calls = {}
    for name, kernel in versions.items():
        def call(kernel=kernel):
            out, lse = torch.empty_like(q), torch.empty(q.shape[:3], dtype=torch.float32, device="cuda")
            launch_before_units(kernel, q, k, v, out, lse, idx, cnt, block, text_k, text_v)
            return out, lse
        calls[name] = call

    def current():
        out, lse = torch.empty_like(q), torch.empty(q.shape[:3], dtype=torch.float32, device="cuda")
        gluon_hopper.launch_forward_hopper(q, k, v, out, lse, idx, cnt, block, 1.0 / math.sqrt(d), text_k, text_v)
        return out, lse
    calls["current"] = current
    outs = [fn() for fn in calls.values()]
    row = dict(shape=shape_key, density=density, block=block, text=t,
               max_abs_vs_first=[(o[0].float() - outs[0][0].float()).abs().max().item() for o in outs[1:]])
    for repeat in range(2):
        for name, fn in calls.items():
            row.setdefault(f"{name}_ms", []).append(bench_ms(fn, False))
    print(json.dumps(row), flush=True)
