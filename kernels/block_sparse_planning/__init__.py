"""Block-pattern planning on the device: pool, score, select, index table, kept mass; no host sync.

`plan_block_sparse` computes the same plan as `plan_block_sparse_reference` (naive.py) without a host sync:
a Triton mean-pooling kernel on CUDA (a padded torch reshape elsewhere), one small batched matmul and
softmax, then the selection. For rows of up to 512 key blocks the Triton path selects (by count and by the
cumulative-mass rule), indexes and sums the kept mass in one kernel (triton_select.py); for longer rows, and
on the torch path, a top-k per row (a whole sort per row for the cumulative-mass rule), a scatter into the
block mask and the index-table kernel. Every shape is fixed by
the inputs, so the whole plan is enqueued without waiting for the GPU.
"""

from __future__ import annotations

import math

import torch

from ..block_index_table import block_mask_to_index_table
from ..block_sparse_attention.pooled import mean_pool_torch
from .naive import BlockPlan, keep_count, mean_pool_reference, plan_block_sparse_reference

BACKENDS = ("auto", "triton", "torch")


def _check_plan_arguments(q, k, block_size, keep_ratio, keep_mass, backend):
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must share one (B, H, N, D) shape; got {tuple(q.shape)} and {tuple(k.shape)}")
    if not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if keep_ratio is None and keep_mass is None:
        raise ValueError("give keep_ratio (fraction of key blocks, in (0, 1]) and/or keep_mass (in (0, 1])")
    for name, value in (("keep_ratio", keep_ratio), ("keep_mass", keep_mass)):
        if value is not None and not 0.0 < value <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def plan_block_sparse(
    q: torch.Tensor,
    k: torch.Tensor,
    block_size: int,
    *,
    keep_ratio: float | None = None,
    keep_mass: float | None = None,
    include_diagonal: bool = False,
    scale: float | None = None,
    backend: str = "auto",
) -> BlockPlan:
    """Plan which key blocks each query block keeps; see naive.py for the rule. Returns a `BlockPlan`
    (index table + counts in the format `block_sparse_attention` takes, kept pooled mass, block probs)."""
    _check_plan_arguments(q, k, block_size, keep_ratio, keep_mass, backend)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    use_triton = backend == "triton" or (backend == "auto" and q.is_cuda)
    if use_triton:
        from .triton_pooling import mean_pool_triton as pool
    else:
        pool = mean_pool_torch
    probs = torch.softmax(torch.matmul(pool(q, block_size), pool(k, block_size).transpose(-1, -2)) * scale, dim=-1)
    n_k = probs.shape[-1]
    top_count = keep_count(n_k, keep_ratio)
    if use_triton:
        from .triton_select import MAX_KEY_BLOCKS, select_top_blocks_triton

        if n_k <= MAX_KEY_BLOCKS:
            block_mask, kv_indices, kv_counts, kept_mass = select_top_blocks_triton(probs, top_count,
                                                                                     include_diagonal, keep_mass)
            return BlockPlan(kv_indices, kv_counts, kept_mass, probs, block_mask)
    if keep_mass is None:
        # A fixed count per row: a top-k selection, which costs a fraction of sorting every row (at Wan 720p,
        # 1182 key blocks of 64 tokens, the sort was most of the planner's time).
        chosen = probs.topk(top_count, dim=-1, sorted=False).indices
        block_mask = torch.zeros(probs.shape, dtype=torch.bool, device=probs.device).scatter_(-1, chosen, True)
    else:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Blocks whose preceding (exclusive) cumulative mass is still below the target are needed.
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        count = torch.clamp((mass_before < keep_mass).sum(-1), min=top_count)
        rank_kept = torch.arange(n_k, device=probs.device) < count[..., None]
        block_mask = torch.zeros_like(rank_kept).scatter_(-1, order, rank_kept)
    if include_diagonal:
        block_mask |= torch.eye(probs.shape[-2], n_k, dtype=torch.bool, device=probs.device)
    kv_indices, kv_counts = block_mask_to_index_table(block_mask)
    kept_mass = (probs * block_mask).sum(-1)
    return BlockPlan(kv_indices, kv_counts, kept_mass, probs, block_mask)


__all__ = ["BlockPlan", "mean_pool_reference", "mean_pool_torch", "plan_block_sparse", "plan_block_sparse_reference"]
