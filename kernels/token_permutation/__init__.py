"""Token permutation of per-token tensors (B, H, N, D): out[:, :, i] = x[:, :, order[i]].

The methods that reorder tokens (Hilbert curves, 2-D patches) gather q, k, v into block order and the output
back, four gathers per attention call. On CUDA `permute_tokens` copies whole token rows with a Triton kernel
and keeps the input's memory layout; its gradient is the same gather with the inverse permutation. Elsewhere,
and for other ranks, it is `index_select` (naive.py). The gather back can also scale rows and add a tensor
in the same pass (`row_scale`, `addend`), which the rectified methods' cached corrections use.
"""

from __future__ import annotations

import torch

from ..autograd import needs_autograd
from .naive import permute_tokens_reference

BACKENDS = ("auto", "triton", "reference")


def inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device, dtype=order.dtype)
    return inverse


class _PermuteTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, order):
        from .triton_permute import permute_tokens_triton

        ctx.save_for_backward(order)
        return permute_tokens_triton(x, order)

    @staticmethod
    def backward(ctx, grad_out):
        from .triton_permute import permute_tokens_triton

        (order,) = ctx.saved_tensors
        return permute_tokens_triton(grad_out, inverse_permutation(order)), None


def permute_tokens(x: torch.Tensor, order: torch.Tensor, backend: str = "auto", *,
                   row_scale: torch.Tensor | None = None, addend: torch.Tensor | None = None) -> torch.Tensor:
    """x[:, :, order] for a (B, H, N, ...) tensor and a permutation `order` of range(N) (int, on x's device).

    row_scale (B, H, N) and addend (x's shape), both in the output's token order, make it
    row_scale * x[:, :, order] + addend, computed in float32 and rounded once to x's dtype.
    backend: "auto" (Triton for 4-D CUDA tensors, the reference otherwise), "triton" (on CPU tensors it needs
    TRITON_INTERPRET=1) or "reference"."""
    if backend not in BACKENDS:
        raise ValueError(f"permute_tokens: backend must be one of {BACKENDS}, got {backend!r}")
    if order.dim() != 1 or order.numel() != x.shape[2]:
        raise ValueError(f"permute_tokens: order must be a permutation of the {x.shape[2]} tokens, got shape "
                         f"{tuple(order.shape)}")
    if row_scale is not None and tuple(row_scale.shape) != tuple(x.shape[:3]):
        raise ValueError(f"permute_tokens: row_scale must have shape {tuple(x.shape[:3])}, got "
                         f"{tuple(row_scale.shape)}")
    if addend is not None and addend.shape != x.shape:
        raise ValueError(f"permute_tokens: addend must have x's shape {tuple(x.shape)}, got {tuple(addend.shape)}")
    use_triton = backend == "triton" or (backend == "auto" and x.is_cuda and x.dim() == 4)
    if not use_triton:
        return permute_tokens_reference(x, order, row_scale, addend)
    if x.dim() != 4:
        raise ValueError(f"permute_tokens: backend='triton' takes (B, H, N, D) tensors, got {x.dim()} dims")
    if row_scale is None and addend is None:
        return _PermuteTokens.apply(x, order)
    if needs_autograd(x, row_scale, addend):
        return permute_tokens_reference(x, order, row_scale, addend)  # the fused pass has no backward
    from .triton_permute import permute_tokens_triton

    return permute_tokens_triton(x, order, row_scale, addend)


__all__ = ["inverse_permutation", "permute_tokens", "permute_tokens_reference"]
