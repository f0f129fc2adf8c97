"""Plain-PyTorch reference of the token permutation: out[:, :, i] = x[:, :, order[i]]."""

from __future__ import annotations

import torch


def permute_tokens_reference(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """(B, H, N, ...) -> the same tokens in `order` (a permutation of range(N)), differentiable."""
    return x.index_select(2, order)
