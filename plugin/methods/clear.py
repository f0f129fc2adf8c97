"""`clear`: CLEAR's local attention (Liu et al., NeurIPS 2025; Huage001/CLEAR).

Each visual query attends the keys inside a circle of `radius` tokens around it in the latent grid,
allowed = (dy^2 + dx^2 < radius^2) with the authors' strict inequality; for video the window is a
cylinder: the same circle in every frame with |dt| <= `temporal_radius`. Text keys are global (the runtime
passes them to every query) and text queries stay dense, as in CLEAR's FlexAttention `mask_mod`.

The window becomes kernel work in two levels: block pairs with no allowed pair are skipped, and the
exact element mask removes the disallowed pairs inside boundary blocks. With reorder="patch" (default)
blocks are compact 2-D cells, so far fewer blocks straddle the circle's edge than with raster rows.

CLEAR was distilled with this window for FLUX.1-dev (10K steps on q/k/v/o); training-free use keeps only
the local part of attention. Its learned down-sampled KV branch and proportional-attention scale belong
to those trained weights and are not part of this training-free method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..context import AttentionCall
from ..pattern import BlockPattern, num_blocks
from ..validation import check_choice, check_int
from .base import AttentionMethod, MethodConfig
from .blocking import REORDERS, Reorder, grid_coords, token_order
from .registry import register_method

QUERY_CHUNK = 1024


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


def local_window_mask(grid: tuple[int, int, int], radius: int, temporal_radius: int,
                      order: torch.Tensor | None, device=None) -> torch.Tensor:
    """(N, N) bool: query token i may attend key token j, both in the given token order."""
    coords = grid_coords(grid).to(device)
    if order is not None:
        coords = coords[order.to(device)]
    n = coords.shape[0]
    mask = torch.empty(n, n, dtype=torch.bool, device=device)
    # Row chunks bound the int64 temporaries to QUERY_CHUNK x N instead of N x N.
    for start in range(0, n, QUERY_CHUNK):
        rows = coords[start:start + QUERY_CHUNK, None, :]
        offset = rows - coords[None, :, :]
        within_frames = offset[..., 0].abs() <= temporal_radius
        within_circle = offset[..., 1] ** 2 + offset[..., 2] ** 2 < radius**2
        mask[start:start + QUERY_CHUNK] = within_frames & within_circle
    return mask


def blocks_touched(element_mask: torch.Tensor, block_size: int) -> torch.Tensor:
    """(N, N) element mask -> (nQ, nK) bool: block pairs holding at least one allowed pair."""
    n = element_mask.shape[-1]
    n_blocks = num_blocks(n, block_size)
    touched = torch.empty(n_blocks, n_blocks, dtype=torch.bool, device=element_mask.device)
    # Whole query blocks per chunk, so that only one chunk is ever padded to the block grid.
    rows_per_chunk = max(block_size, QUERY_CHUNK // block_size * block_size)
    for start in range(0, n, rows_per_chunk):
        chunk = element_mask[start:start + rows_per_chunk]
        chunk_blocks = num_blocks(chunk.shape[0], block_size)
        padded = torch.nn.functional.pad(chunk, (0, n_blocks * block_size - n,
                                                 0, chunk_blocks * block_size - chunk.shape[0]))
        first_block = start // block_size
        touched[first_block:first_block + chunk_blocks] = (
            padded.view(chunk_blocks, block_size, n_blocks, block_size).any(dim=3).any(dim=1))
    return touched


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
        order = token_order(cfg.reorder, grid, cfg.block_size, q.device)
        element_mask = local_window_mask(grid, cfg.radius, cfg.temporal_radius, order, q.device)
        block_mask = blocks_touched(element_mask, cfg.block_size)
        return BlockPattern(block_mask[None, None], cfg.block_size, q.shape[2], token_order=order,
                            element_mask=element_mask[None, None])
