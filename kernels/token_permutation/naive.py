"""Plain-PyTorch reference of the token permutation: out[:, :, i] = row_scale[:, :, i] * x[:, :, order[i]] +
addend[:, :, i] (the scale and the addend optional, both in the output's token order)."""

from __future__ import annotations

import torch


def permute_tokens_reference(x: torch.Tensor, order: torch.Tensor, row_scale: torch.Tensor | None = None,
                             addend: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, N, ...) -> the same tokens in `order` (a permutation of range(N)), differentiable; with a
    row_scale (B, H, N) and/or an addend (x's shape) the result is computed in float32 and rounded once to x's
    dtype."""
    out = x.index_select(2, order)
    if row_scale is None and addend is None:
        return out
    result = out.float()
    if row_scale is not None:
        result = result * row_scale.float()[..., None]
    if addend is not None:
        result = result + addend.float()
    return result.to(x.dtype)
