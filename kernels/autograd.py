"""When a kernel call must be differentiable: the forward-only fused paths (the cuDNN frontend, the gather that
adds a correction) hand such calls to a path autograd can follow."""

from __future__ import annotations

import torch


def needs_autograd(*tensors: torch.Tensor | None) -> bool:
    """True when gradients are being recorded and any given tensor requires one (None entries are skipped)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
