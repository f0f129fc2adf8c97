"""Plain-PyTorch reference of block-pattern planning: the maths the GPU planner must match.

For every (batch, head, query block i): mean-pool the queries of block i and the keys of every block j,
score them as q̄_i·k̄_j·scale, turn the row into block probabilities P̂_i = softmax_j(score), and keep
- the `keep_ratio` fraction of key blocks with the highest P̂ (at least one), and/or
- the fewest highest-P̂ blocks whose P̂ sum reaches `keep_mass` (SpargeAttn's CDF rule),
whichever keeps more, plus the diagonal block when `include_diagonal`. The pooled mass of the kept
blocks, sum_{j kept} P̂_ij, is what rectified attention rescales by.
Written with explicit per-row loops so that it is obviously right; only for small test shapes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..block_index_table import index_table_reference


class BlockPlan(NamedTuple):
    """kv_indices int32 (B, H, nQ, nK) kept ids first, -1 padded; kv_counts int32 (B, H, nQ);
    kept_mass float32 (B, H, nQ) pooled probability of the kept blocks; block_probs float32 (B, H, nQ, nK);
    block_mask bool (B, H, nQ, nK), the same selection as a mask (what the methods' patterns hold)."""

    kv_indices: torch.Tensor
    kv_counts: torch.Tensor
    kept_mass: torch.Tensor
    block_probs: torch.Tensor
    block_mask: torch.Tensor


def mean_pool_reference(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """(B, H, N, D) -> (B, H, ceil(N / block_size), D) float32 block means (the last block by its size)."""
    n = x.shape[2]
    starts = range(0, n, block_size)
    return torch.stack([x[:, :, s : s + block_size].float().mean(2) for s in starts], dim=2)


def keep_count(n_blocks: int, keep_ratio: float | None) -> int:
    return 0 if keep_ratio is None else max(1, math.ceil(keep_ratio * n_blocks))


def plan_block_sparse_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    block_size: int,
    *,
    keep_ratio: float | None = None,
    keep_mass: float | None = None,
    include_diagonal: bool = False,
    scale: float | None = None,
) -> BlockPlan:
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    probs = torch.softmax(mean_pool_reference(q, block_size) @ mean_pool_reference(k, block_size).transpose(-1, -2)
                          * scale, dim=-1)
    b, h, n_q, n_k = probs.shape
    top_count = keep_count(n_k, keep_ratio)
    block_mask = torch.zeros_like(probs, dtype=torch.bool)
    for bi in range(b):
        for hi in range(h):
            for i in range(n_q):
                row = probs[bi, hi, i]
                ranked = sorted(range(n_k), key=lambda j: -row[j].item())
                count = top_count
                if keep_mass is not None:
                    mass, needed = 0.0, 0
                    while needed < n_k and mass < keep_mass:
                        mass += row[ranked[needed]].item()
                        needed += 1
                    count = max(count, needed)
                for j in ranked[:count]:
                    block_mask[bi, hi, i, j] = True
                if include_diagonal and i < n_k:
                    block_mask[bi, hi, i, i] = True
    kv_indices, kv_counts = index_table_reference(block_mask)
    kept_mass = (probs * block_mask).sum(-1)
    return BlockPlan(kv_indices, kv_counts, kept_mass, probs, block_mask)
