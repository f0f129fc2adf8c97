"""A block mask to the index table the block-sparse kernels take: per row, the kept key-block ids in ascending
order, then -1, and their count.

Every attention call of a planned pattern converts its mask (the planners and the backward's transposed table
too), so on CUDA it is one Triton program per row (triton_index_table.py); elsewhere the tensor-op compaction
in naive.py. Shapes are fixed by the mask: no host sync.
"""

from __future__ import annotations

import torch

from .naive import index_table_reference

BACKENDS = ("auto", "triton", "reference")
# Rows wider than this stay on the reference path (one program holds a whole row in registers); the widest
# block mask of a covered model is HunyuanVideo 720p at 64-token blocks, 1,857 blocks.
TRITON_MAX_COLUMNS = 8192


def block_mask_to_index_table(block_mask: torch.Tensor, backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(..., nK) bool block mask -> (int32 (..., nK) kept ids ascending then -1, int32 (...) counts).

    backend: "auto" (Triton for CUDA masks up to TRITON_MAX_COLUMNS wide, the reference otherwise), "triton"
    (on CPU tensors it needs TRITON_INTERPRET=1) or "reference"."""
    if backend not in BACKENDS:
        raise ValueError(f"block_mask_to_index_table: backend must be one of {BACKENDS}, got {backend!r}")
    if block_mask.dtype != torch.bool or block_mask.dim() < 1:
        raise ValueError(f"block_mask_to_index_table: block_mask must be a bool tensor (..., nK), got "
                         f"{block_mask.dtype} of shape {tuple(block_mask.shape)}")
    use_triton = backend == "triton" or (
        backend == "auto" and block_mask.is_cuda and block_mask.shape[-1] <= TRITON_MAX_COLUMNS)
    if not use_triton:
        return index_table_reference(block_mask)
    from .triton_index_table import index_table_triton

    return index_table_triton(block_mask)


__all__ = ["block_mask_to_index_table", "index_table_reference"]
