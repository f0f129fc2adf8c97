"""Triton block mean-pooling of queries and keys in one launch (one read of each, no padded copy)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _mean_pool_kernel(
    X, Out, s_xb, s_xh, s_xn, num_heads, seq_len,
    BLOCK: tl.constexpr, ROWS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
):
    block = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    total = tl.zeros([BLOCK_D], tl.float32)
    # ROWS rows at a time keeps the register tile small for block 128 x head_dim 128.
    for start in tl.static_range(0, BLOCK, ROWS):
        offs_n = block * BLOCK + start + tl.arange(0, ROWS)
        tile = tl.load(X + b * s_xb + h * s_xh + offs_n[:, None] * s_xn + offs_d[None, :],
                       mask=(offs_n[:, None] < seq_len) & d_ok[None, :], other=0.0)
        total += tl.sum(tile.to(tl.float32), 0)
    size = tl.minimum(seq_len - block * BLOCK, BLOCK)
    tl.store(Out + (bh * tl.num_programs(0) + block) * HEAD_DIM + offs_d, total / size, mask=d_ok)


def mean_pool_triton(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """(B, H, N, D) with contiguous last dim -> (B, H, ceil(N / block_size), D) float32 block means."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    b, h, n, d = x.shape
    n_blocks = triton.cdiv(n, block_size)
    out = torch.empty((b, h, n_blocks, d), dtype=torch.float32, device=x.device)
    _mean_pool_kernel[(n_blocks, b * h)](
        x, out, x.stride(0), x.stride(1), x.stride(2), h, n,
        BLOCK=block_size, ROWS=min(32, block_size), HEAD_DIM=d, BLOCK_D=triton.next_power_of_2(d),
    )
    return out
