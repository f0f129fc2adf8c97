"""Shared inputs for the method tests: attention calls, raw q/k/v with text, a dense reference, and
structured (spatially local) inputs on which sparse attention is a meaningful approximation."""

from __future__ import annotations

import math

import torch

from swiftdit.context import AttentionCall, StepInfo
from swiftdit.layout import TokenLayout
from swiftdit.methods import VisualAttentionInputs
from swiftdit.methods.blocking import grid_coords

# Options that keep every block of each method (density forced to 1).
ALL_BLOCKS_OPTIONS = {
    "sparse": dict(density=1.0, reorder="hilbert"),
    "radial": dict(decay=1.0),  # on the small grids below every frame pair is within the dense band
    "draft": dict(sparsity=0.0, pool_h=4, pool_w=8),
    "rectified": dict(density=1.0),
    "clear": dict(radius=1000, temporal_radius=1000),
    "sla": dict(density=1.0, reorder="patch"),
}


def make_call(grid, text_len: int = 0, step: int = 0, branch: str = "cond", layer: int = 0) -> AttentionCall:
    layout = TokenLayout(tuple(grid), text_len, "first" if text_len else "none")
    return AttentionCall(f"blocks.{layer}.attn1", layer, 4, False, StepInfo(step, 10, branch), layout)


def random_inputs(grid, batch: int = 2, heads: int = 2, head_dim: int = 16, text_len: int = 0,
                  seed: int = 0) -> VisualAttentionInputs:
    """Gaussian q/k/v; with text, the second sample's last two text tokens are padding."""
    gen = torch.Generator().manual_seed(seed)
    n = math.prod(grid)
    q, k, v = (torch.randn(batch, heads, n, head_dim, generator=gen) for _ in range(3))
    text_k = text_v = text_mask = None
    if text_len:
        text_k, text_v = (torch.randn(batch, heads, text_len, head_dim, generator=gen) for _ in range(2))
        text_mask = torch.ones(batch, text_len, dtype=torch.bool)
        text_mask[-1, -2:] = False
    return VisualAttentionInputs(q, k, v, 1 / math.sqrt(head_dim), text_k, text_v, text_mask)


def structured_inputs(grid, heads: int = 2, head_dim: int = 32, sharpness: float = 2.0, seed: int = 0):
    """Queries and keys that are smooth functions of the grid position (random Fourier features), so that
    attention decays with distance as in video DiTs, plus a little noise; values smooth too."""
    gen = torch.Generator().manual_seed(seed)
    coords = grid_coords(grid).float()
    n = coords.shape[0]

    def smooth(frequency: float) -> torch.Tensor:
        phase = coords @ (torch.randn(heads, 3, head_dim // 2, generator=gen) * frequency)
        return torch.cat([phase.sin(), phase.cos()], -1)[None] / math.sqrt(head_dim // 2)

    position = smooth(0.35) * sharpness * head_dim**0.25
    q = position + 0.05 * torch.randn(1, heads, n, head_dim, generator=gen)
    k = position + 0.05 * torch.randn(1, heads, n, head_dim, generator=gen)
    v = smooth(0.2) * math.sqrt(head_dim // 2) + 0.1 * torch.randn(1, heads, n, head_dim, generator=gen)
    return VisualAttentionInputs(q, k, v, 1 / math.sqrt(head_dim))


def dense_attention(inputs: VisualAttentionInputs) -> torch.Tensor:
    """Exact softmax attention of the visual queries over visual and (unpadded) text keys, float64."""
    keys, values = inputs.k.double(), inputs.v.double()
    scores = inputs.q.double() @ keys.transpose(-1, -2) * inputs.scale
    if inputs.text_k is not None:
        text_scores = inputs.q.double() @ inputs.text_k.double().transpose(-1, -2) * inputs.scale
        if inputs.text_key_mask is not None:
            text_scores = text_scores.masked_fill(~inputs.text_key_mask[:, None, None, :], float("-inf"))
        scores = torch.cat([scores, text_scores], -1)
        values = torch.cat([values, inputs.text_v.double()], 2)
    return (torch.softmax(scores, -1) @ values).float()


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    return float((out.float() - reference).norm() / reference.norm())
