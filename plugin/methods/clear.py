"""`clear`: CLEAR's local attention (Liu et al., NeurIPS 2025; Huage001/CLEAR).

Each visual query attends the keys inside a circle of `radius` tokens around it in the latent grid,
allowed = (dy^2 + dx^2 < radius^2) with the authors' strict inequality; for video the window is a
cylinder: the same circle in every frame with |dt| <= `temporal_radius`. Text keys are global (the runtime
passes them to every query) and text queries stay dense, as in CLEAR's FlexAttention `mask_mod`.

The window becomes kernel work in two levels: block pairs with no allowed pair are skipped, and inside
boundary blocks the kernels evaluate the window from per-token (t, y, x) coordinates (a `LocalWindowMask`,
O(N) memory; no (N, N) mask is built). With reorder="patch" (default)
blocks are compact 2-D cells, so far fewer blocks straddle the circle's edge than with raster rows.

CLEAR was distilled with this window for FLUX.1-dev (10K steps on q/k/v/o); training-free use keeps only
the local part of attention. Its learned down-sampled KV branch and proportional-attention scale belong
to those trained weights and are not part of this training-free method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..context import AttentionCall
from ..kernels.block_sparse_attention.window import LocalWindowMask
from ..pattern import BlockPattern
from ..validation import check_choice, check_int
from .base import AttentionMethod, MethodConfig
from .blocking import REORDERS, Reorder, grid_coords, token_order
from .registry import register_method

@dataclass(frozen=True)
class ClearConfig(MethodConfig):
    """Options of `clear`.

    radius: spatial radius in latent tokens; a key is attended when its squared in-frame distance is
        < radius^2. Default 16 (CLEAR released 8, 16 and 32).
    temporal_radius: frames either side attended by video queries (|dt| <= temporal_radius); 0 keeps
        attention within the frame. Default 1.
    block_size: tokens per block, 64 or 128. Default 64.
    reorder: token order before blocking ("none", "patch" or "hilbert"). Default "patch".
    """

    radius: int = 16
    temporal_radius: int = 1
    block_size: int = 64
    reorder: Reorder = "patch"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("ClearConfig", "radius", self.radius, minimum=1)
        check_int("ClearConfig", "temporal_radius", self.temporal_radius, minimum=0)
        check_choice("ClearConfig", "block_size", self.block_size, (64, 128))
        check_choice("ClearConfig", "reorder", self.reorder, REORDERS)


def window_coords(grid: tuple[int, int, int], order: torch.Tensor | None, device=None) -> torch.Tensor:
    """(N, 3) int32 (t, y, x) of every visual token, in the given token order (the kernel's order)."""
    coords = grid_coords(grid).to(device)
    if order is not None:
        coords = coords[order.to(device)]
    return coords.to(torch.int32).contiguous()


@register_method
class ClearAttention(AttentionMethod):
    name = "clear"
    Config = ClearConfig
    summary = "Local attention: each visual token attends keys within a radius in the latent grid; text stays global."
    paper = "CLEAR: Conv-Like Linearization Revs Pre-Trained Diffusion Transformers Up (Liu et al., NeurIPS 2025)"
    static_pattern = True

    def plan(self, q: torch.Tensor, k: torch.Tensor, call: AttentionCall) -> BlockPattern:
        cfg: ClearConfig = self.config
        grid = call.layout.grid
        order = self.token_order(grid, q.device)
        # The window travels as coordinates: the kernels test it inside boundary blocks, and the block flags
        # below come from a chunked count of allowed pairs per block pair (no (N, N) tensor at any point).
        window = LocalWindowMask(window_coords(grid, order, q.device), cfg.radius, cfg.temporal_radius)
        window = window.with_block_full(cfg.block_size)
        touched, _ = window.block_classes(cfg.block_size)
        return BlockPattern(touched[None, None], cfg.block_size, q.shape[2], token_order=order, element_mask=window)

    def build_token_order(self, grid, device):
        return token_order(self.config.reorder, grid, self.config.block_size, device)
