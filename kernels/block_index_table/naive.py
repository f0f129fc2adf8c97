"""Reference: a block mask (..., nK) bool -> the kernels' index table, by stream compaction in tensor ops."""

from __future__ import annotations

import torch


def index_table_reference(block_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int32 (..., nK) table of kept block ids (ascending, then -1) and int32 (...) counts.

    Kept block j goes to slot (kept blocks before j) and dropped block j to counts + (dropped blocks before j),
    so every row is a permutation that one scatter writes.
    """
    kept_through = block_mask.cumsum(-1, dtype=torch.int32)
    counts = kept_through[..., -1].contiguous()
    ids = torch.arange(block_mask.shape[-1], device=block_mask.device, dtype=torch.int32)
    slot = torch.where(block_mask, kept_through - 1, counts[..., None] + ids - kept_through)
    table = torch.empty(block_mask.shape, dtype=torch.int32, device=block_mask.device)
    table.scatter_(-1, slot.long(), torch.where(block_mask, ids, -1))
    return table, counts
