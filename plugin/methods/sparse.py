"""`sparse`: dynamic block sparsity from mean-pooled queries and keys.

The recipe most dynamic methods converge on (SpargeAttn, NABLA, Jenga, Rectified SpaAttn, SVG2's selection
step): optionally reorder the tokens so that each block is a compact piece of the video, mean-pool Q and K
per block, score key blocks with softmax(q_bar k_bar^T / sqrt(d)) per query block, keep the top
`density` fraction and/or the smallest set reaching `mass` of the pooled probability, and always keep the
structural blocks (the diagonal, the 3-D neighbourhood, the first-frame sink).

SpargeAttn users found its `topk` ambiguous (SpargeAttn#99); here `density` is the fraction of key blocks
kept per query block *before* structural blocks are added, so the achieved density (`pattern.density()`)
is at least `density`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from swiftdit.kernels.block_sparse_planning import plan_block_sparse

from ..context import AttentionCall
from ..pattern import BlockPattern
from ..validation import check_bool, check_choice, check_float
from .base import AttentionMethod, MethodConfig
from .blocking import REORDERS, Reorder, reorder_tokens, structural_blocks, token_order
from .registry import register_method


@dataclass(frozen=True)
class SparseConfig(MethodConfig):
    """Options of `sparse` (and of the methods built on its plan: `rectified`, `sla`).

    block_size: tokens per query/key block, 64 or 128 (128 suits Hopper kernels). Default 64.
    density: fraction of key blocks kept per query block by pooled score (top-k, at least one), in (0, 1].
        Default 0.25. The always-kept blocks (diagonal, neighbours, sink) come on top, so on short or small
        videos the achieved density is well above this (0.45 for density 0.1 on the embedded model's 2,048
        tokens); `attention_session(pipe).density_summary()` reports what was computed.
    mass: also keep the best key blocks until their pooled probability reaches this mass (SVG2's top-p,
        NABLA's CDF threshold), in [0, 1]; 0 turns the rule off. Default 0.
    reorder: token order before blocking: "none" (raster t, h, w), "patch" (8x8 or 8x16 spatial cells per
        frame, NABLA/DraftAttention) or "hilbert" (3-D Hilbert curve, Jenga/Rectified SpaAttn). The output
        is returned in the original order. Default "patch".
    neighbours: always keep the key blocks holding a 3-D grid neighbour of the query block's tokens.
        Default True.
    first_frame_sink: always keep the key blocks of latent frame 0 (videos only). Default True.
    """

    block_size: int = 64
    density: float = 0.25
    mass: float = 0.0
    reorder: Reorder = "patch"
    neighbours: bool = True
    first_frame_sink: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        check_choice(owner, "block_size", self.block_size, (64, 128))
        check_float(owner, "density", self.density, minimum=0.0, maximum=1.0, exclusive_minimum=True)
        check_float(owner, "mass", self.mass, minimum=0.0, maximum=1.0)
        check_choice(owner, "reorder", self.reorder, REORDERS)
        check_bool(owner, "neighbours", self.neighbours)
        check_bool(owner, "first_frame_sink", self.first_frame_sink)


@register_method
class SparseAttention(AttentionMethod):
    name = "sparse"
    Config = SparseConfig
    summary = "Dynamic block sparsity: keep the key blocks with the highest mean-pooled score per query block."
    paper = "SpargeAttn (Zhang et al., ICML 2025); NABLA (Mikhailov et al., 2025); Sparse VideoGen 2 (Yang et al., 2025)"

    def plan(self, q: torch.Tensor, k: torch.Tensor, call: AttentionCall) -> BlockPattern:
        cfg: SparseConfig = self.config
        grid = call.layout.grid
        order = self.token_order(grid, q.device)
        q, k = (reorder_tokens(x, order, call.token_order) for x in (q, k))
        scored = plan_block_sparse(q, k, cfg.block_size, keep_ratio=cfg.density, keep_mass=cfg.mass or None)
        keep = scored.block_mask | structural_blocks(grid, cfg.block_size, cfg.reorder, neighbours=cfg.neighbours,
                                                     first_frame_sink=cfg.first_frame_sink, device=q.device)
        return BlockPattern(keep, cfg.block_size, q.shape[2], token_order=order)

    def build_token_order(self, grid, device):
        return token_order(self.config.reorder, grid, self.config.block_size, device)
