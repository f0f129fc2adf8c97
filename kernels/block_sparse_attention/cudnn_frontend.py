"""NVIDIA's block-sparse attention from the cuDNN frontend (`cudnn.block_sparse_attention`: CuTe DSL kernels
derived from FlashAttention-3), an optional forward backend on Hopper, installed by `pip install
"swiftdit[hopper]"`.

Why: on the H100 at 64-token blocks it runs the kept blocks at 0.80-0.93 of cuDNN's dense rate where this
package's Triton kernel runs at 0.67-0.76 (Wan 480p and 720p, densities 5-100%;
benchmarks/results/kernels-h100/session9-cudnn-bsa/). At 128-token blocks the two were within a few percent
of each other, either way, so "auto" takes it at 64-token blocks only. This package's Gluon forward, which
"auto" runs on an H100 otherwise, measured 0.70-0.83 at 64-token blocks in session 12, on another lent
machine and not in the same run.

It reads the same index table and per-row counts as the Triton kernel and returns the output and the
natural-log LSE (empty rows: zeros and -inf). The calls it cannot take stay on this package's kernels: text
columns, element masks (CLEAR's window), the pooled columns of dropped blocks (`rectified`), and anything
that needs gradients. Its SM90 kernel needs the query length to be a multiple of 64, so the queries are
zero-padded and the padded rows dropped; a short last key block is masked through its block size.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .pooled import block_token_counts

AUTO_BLOCK_SIZES = (64,)
HEAD_DIMS = (64, 96, 128)
DTYPES = (torch.bfloat16, torch.float16)
HOPPER = 9  # compute capability major; the kernels exist for 10 and 12 too, unmeasured here


@functools.lru_cache(maxsize=1)
def forward_entry():
    """cudnn.block_sparse_attention's forward, or None where the frontend is not installed or does not load."""
    try:
        from cudnn.block_sparse_attention import block_sparse_attention_forward
    except Exception:  # ImportError, or its CUDA libraries failing to load: the Triton kernel serves instead
        return None
    return block_sparse_attention_forward


def cudnn_frontend_takes(q: torch.Tensor, block_size: int, *, has_text: bool, has_element_mask: bool,
                         estimate_dropped: bool, needs_grad: bool) -> bool:
    """Whether "auto" runs this call on the cuDNN frontend's kernel: installed, a Hopper GPU, bf16/fp16, a head
    dim it has, 64-token blocks, and nothing it lacks (text columns, element masks, pooled columns,
    gradients)."""
    if has_text or has_element_mask or estimate_dropped or needs_grad:
        return False
    if not (q.is_cuda and q.dtype in DTYPES and q.shape[-1] in HEAD_DIMS and block_size in AUTO_BLOCK_SIZES):
        return False
    return torch.cuda.get_device_capability(q.device)[0] == HOPPER and forward_entry() is not None


def cudnn_frontend_block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                          kv_indices: torch.Tensor, kv_counts: torch.Tensor, block_size: int,
                                          scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-sparse attention of (B, H, N, D) q, k, v over the index table (B|1, H|1, nQ, maxK) with counts
    (B|1, H|1, nQ): (out (B, H, N, D), lse (B, H, N) float32). The caller checks `cudnn_frontend_takes`."""
    forward = forward_entry()
    if forward is None:
        raise RuntimeError('the cuDNN frontend block-sparse kernels are not installed: pip install "swiftdit[hopper]"')
    b, h, n, _ = q.shape
    padded = math.ceil(n / block_size) * block_size
    if padded != n:
        q = F.pad(q, (0, 0, 0, padded - n))
    n_q_blocks = kv_indices.shape[2]
    indices = kv_indices.expand(b, h, n_q_blocks, -1).to(torch.int32).contiguous()
    counts = kv_counts.expand(b, h, n_q_blocks).to(torch.int32).contiguous()
    sizes = block_token_counts(n, block_size, q.device, torch.int32)  # masks a short last key block
    result = forward(q, k, v, indices, block_sizes=sizes, q2k_block_nums=counts,
                     sparse_block_size=block_size, allow_empty_block_nums=True, softmax_scale=scale, layout="bhsd")
    return result["o_tensor"][:, :, :n], result["lse_tensor"][:, :, :n].float()
