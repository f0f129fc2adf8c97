"""Pooled columns for the key blocks a query block drops: the per-token estimate of the dropped softmax mass.

With `estimate_dropped=True`, each query additionally attends, for every key block j that its query block
does NOT keep, to one pooled column: the block's mean key k_bar_j with a logit bias of log n_j (n_j tokens in
the block) and the block's mean value v_bar_j. In one softmax with the exact kept keys (and text) this gives

    O_t = (Z_kept O_kept,t + sum_{j dropped} n_j exp(q_t . k_bar_j * scale) v_bar_j) / (Z_kept + sum_j ...),

the kept part exact and the dropped part estimated from pooled keys: Rectified SpaAttn's correction
(arXiv 2511.19835) per token, as `rectified`'s default uses it. The kernels walk these columns after the kept
blocks and the text, inside the same online softmax, so no second pass over the tokens is needed; a row with
every block kept has no pooled column and stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class PooledColumns:
    """k, v: (B, H, nK, D) block means; log_weight: (nK,) float32 log n_j; dropped: (B|1, H|1, nQ, nK) bool,
    True where query block i gets block j's pooled column (j not kept by i)."""

    k: torch.Tensor
    v: torch.Tensor
    log_weight: torch.Tensor
    dropped: torch.Tensor


def mean_pool_torch(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """(B, H, N, D) -> (B, H, ceil(N / block_size), D) float32 block means, with tensor ops only."""
    b, h, n, d = x.shape
    n_blocks = math.ceil(n / block_size)
    pad = n_blocks * block_size - n
    sums = torch.nn.functional.pad(x.float(), (0, 0, 0, pad)).view(b, h, n_blocks, block_size, d).sum(3)
    return sums / block_token_counts(n, block_size, x.device)[:, None]


def mean_pool_blocks(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """Block means as `mean_pool_torch`, through the Triton pooling kernel on CUDA (not differentiable there)."""
    if x.is_cuda:
        # Imported here: block_sparse_planning imports this module.
        from ..block_sparse_planning.triton_pooling import mean_pool_triton

        return mean_pool_triton(x, block_size)
    return mean_pool_torch(x, block_size)


def block_token_counts(num_tokens: int, block_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(nK,) tokens per block (the last block may be short), built on the device: writing the last size in
    from the host would wait for the GPU's queue."""
    starts = torch.arange(math.ceil(num_tokens / block_size), device=device, dtype=dtype) * block_size
    return (num_tokens - starts).clamp(max=block_size)


def pooled_columns(k: torch.Tensor, v: torch.Tensor, kept_block_mask: torch.Tensor, block_size: int,
                   pool=mean_pool_torch) -> PooledColumns:
    """The pooled columns of (B, H, N, D) keys/values for a (B|1, H|1, nQ, nK) kept-block mask, in float32.

    `pool` maps (B, H, N, D) to (B, H, nK, D) float32 block means (the reference passes the differentiable
    torch pooling; the Triton path passes `mean_pool_blocks`)."""
    n = k.shape[2]
    log_weight = block_token_counts(n, block_size, k.device).log()
    return PooledColumns(pool(k, block_size), pool(v, block_size), log_weight, ~kept_block_mask)
