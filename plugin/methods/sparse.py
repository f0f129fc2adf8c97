"""`sparse`: dynamic block sparsity from mean-pooled queries and keys.

Each query block keeps the key blocks with the highest pooled score softmax(q_bar k_bar^T / sqrt(d)),
plus its own diagonal block so that no row is ever empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..pattern import BlockPattern, num_blocks
from ..validation import check_choice, check_float
from .base import AttentionMethod, MethodConfig
from .registry import register_method


@dataclass(frozen=True)
class SparseConfig(MethodConfig):
    """block_size: tokens per block (64 or 128). density: fraction of key blocks kept per query block."""

    block_size: int = 64
    density: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("SparseConfig", "block_size", self.block_size, (64, 128))
        check_float("SparseConfig", "density", self.density, minimum=0.0, maximum=1.0, exclusive_minimum=True)


def mean_pool_blocks(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """(B, H, N, D) -> (B, H, ceil(N/block_size), D) means over each block, the short last block by its size."""
    b, h, n, d = x.shape
    n_blocks = num_blocks(n, block_size)
    pad = n_blocks * block_size - n
    padded = torch.nn.functional.pad(x.float(), (0, 0, 0, pad))
    sums = padded.view(b, h, n_blocks, block_size, d).sum(3)
    counts = torch.full((n_blocks,), float(block_size), device=x.device)
    counts[-1] = block_size - pad
    return sums / counts[:, None]


@register_method
class SparseAttention(AttentionMethod):
    name = "sparse"
    Config = SparseConfig
    summary = "Dynamic block sparsity: keep the key blocks with the highest mean-pooled score per query block."
    paper = "SpargeAttn (Zhang et al., ICML 2025); Sparse VideoGen 2 (Yang et al., 2025)"

    def plan(self, q: torch.Tensor, k: torch.Tensor, call) -> BlockPattern:
        cfg: SparseConfig = self.config
        n = q.shape[2]
        q_bar = mean_pool_blocks(q, cfg.block_size)
        k_bar = mean_pool_blocks(k, cfg.block_size)
        scores = torch.softmax(q_bar @ k_bar.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        n_blocks = scores.shape[-1]
        keep = max(1, math.ceil(cfg.density * n_blocks))
        top = scores.topk(keep, dim=-1).indices
        mask = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)
        mask |= torch.eye(n_blocks, dtype=torch.bool, device=mask.device)
        return BlockPattern(mask, cfg.block_size, n)
