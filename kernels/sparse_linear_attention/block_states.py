"""The linear branch of SLA over the non-selected key blocks, through per-block states (any device).

With S_j = phi(K_j)^T V_j (D x D) and z_j = sum_t phi(k_t) per key block j, the linear attention of query
block i over the blocks it did *not* select is

    numer_i = phi(Q_i) sum_{j not sel(i)} S_j,    denom_i = phi(Q_i) . sum_{j not sel(i)} z_j,

and the sums over j for every i at once are one matmul of the "not selected" block mask (nQ x nK) with the
stacked states (nK x D^2). Summing the kept-out blocks directly (instead of total minus selected) avoids
cancellation, so the tensor-core dtype is precise enough; the cost, 2*nQ*nK*D^2 per head, does not depend
on the density. Plain tensor ops, so autograd gives the backward.
"""

from __future__ import annotations

import math

import torch


def _blocked(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """(B, H, N, D) -> (B, H, nB, block, D), zero rows past the end (they add nothing to any sum)."""
    b, h, n, d = x.shape
    n_blocks = math.ceil(n / block_size)
    return torch.nn.functional.pad(x, (0, 0, 0, n_blocks * block_size - n)).view(b, h, n_blocks, block_size, d)


def linear_attention_outside_blocks(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    selected: torch.Tensor,
    block_size: int,
    eps: float,
) -> torch.Tensor:
    """phi_q, phi_k, v (B, H, N, D) in one dtype; selected (B|1, H|1, nQ, nK) bool -> (B, H, N, D)."""
    b, h, n, d = phi_q.shape
    phi_k_blocks, v_blocks = _blocked(phi_k, block_size), _blocked(v, block_size)
    states = (phi_k_blocks.transpose(-1, -2) @ v_blocks).flatten(-2)  # (B, H, nK, D*D)
    norms = phi_k_blocks.sum(-2)  # (B, H, nK, D)
    outside = (~selected).to(phi_q.dtype).expand(b, h, -1, -1)
    outside_states = (outside @ states).unflatten(-1, (d, d))  # (B, H, nQ, D, D)
    outside_norms = outside @ norms  # (B, H, nQ, D)
    phi_q_blocks = _blocked(phi_q, block_size)
    numer = phi_q_blocks @ outside_states
    denom = (phi_q_blocks @ outside_norms[..., None]).squeeze(-1) + eps
    return (numer / denom[..., None]).flatten(2, 3)[:, :, :n]
