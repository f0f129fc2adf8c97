"""`draft`: DraftAttention (Shen et al., arXiv 2505.14708; shawnricecake/draft-attention).

Q and K are average-pooled per frame over cells of pool_h x pool_w tokens (the "draft" tokens); per head,
the draft map softmax(q_hat k_hat^T / sqrt(d)) is thresholded by a *global* quantile over the whole map:
with S^2 entries and k = floor(sparsity * S^2), the threshold is the largest of the k smallest entries
and every entry >= threshold is kept (the authors' `attention_percentile_mask_headwise`). Tokens are
reordered so that each cell is one contiguous kernel block, and the output is restored to raster order.

Differences from the released code, where its users found faults:
- any resolution works (draft-attention#2; the code asserts 768x1280 or 768x512): frames whose sides are
  not multiples of the cell are pooled over the partial cells at the edge, the whole cells are laid out
  first (one block each) and the partial cells after them, where a block covering several cells is kept
  when any of its cell pairs is.
- `keep_diagonal` keeps each cell's own cell: a per-head global quantile can leave a query cell with no
  key at all, whose tokens would then attend only the text (or nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from swiftdit.kernels.block_sparse_attention import TRITON_BLOCK_SIZES

from ..context import AttentionCall
from ..pattern import BlockPattern, num_blocks
from ..validation import check_bool, check_choice, check_float, check_int
from .base import AttentionMethod, MethodConfig
from .blocking import mean_pool_segments, patch_cells, patch_order
from .registry import register_method


@dataclass(frozen=True)
class DraftConfig(MethodConfig):
    """Options of `draft`.

    pool_h, pool_w: draft cell in latent tokens (height x width); pool_h * pool_w is the kernel block size
        and must be a block size the kernels tile (32, 64 or 128). Default 8 x 16 (the authors').
    sparsity: fraction of the draft map dropped per head, in [0, 1). Default 0.75 (the authors' Wan setting;
        0.9 for HunyuanVideo).
    keep_diagonal: always keep each query cell's own key cell. Default True.
    """

    pool_h: int = 8
    pool_w: int = 16
    sparsity: float = 0.75
    keep_diagonal: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("DraftConfig", "pool_h", self.pool_h, minimum=1)
        check_int("DraftConfig", "pool_w", self.pool_w, minimum=1)
        check_choice("DraftConfig", "pool_h * pool_w", self.pool_h * self.pool_w, TRITON_BLOCK_SIZES)
        check_float("DraftConfig", "sparsity", self.sparsity, minimum=0.0, maximum=1.0)
        if self.sparsity >= 1.0:
            raise ValueError(f"DraftConfig: option 'sparsity' must be < 1 (1 keeps nothing), got {self.sparsity!r}")
        check_bool("DraftConfig", "keep_diagonal", self.keep_diagonal)

    @property
    def block_size(self) -> int:
        return self.pool_h * self.pool_w


def quantile_keep(draft_map: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per (batch, head), keep entries >= the largest of the floor(sparsity * S^2) smallest entries."""
    flat = draft_map.flatten(-2)
    dropped = int(sparsity * flat.shape[-1])
    if dropped == 0:
        return torch.ones_like(draft_map, dtype=torch.bool)
    threshold = flat.kthvalue(dropped, dim=-1).values
    return draft_map >= threshold[..., None, None]


def cells_to_blocks(cell_mask: torch.Tensor, cell_of_position: torch.Tensor, block_size: int) -> torch.Tensor:
    """Lift a (B, H, S, S) cell mask to the blocks of a token order: a block pair is kept when any pair of
    the cells it covers is. cell_of_position: cell of each token in that order."""
    n = cell_of_position.numel()
    blocks = torch.arange(n, device=cell_of_position.device) // block_size
    incidence = torch.zeros(num_blocks(n, block_size), cell_mask.shape[-1], device=cell_mask.device)
    incidence[blocks, cell_of_position] = 1.0
    return (incidence @ cell_mask.float() @ incidence.T) > 0


@register_method
class DraftAttention(AttentionMethod):
    name = "draft"
    Config = DraftConfig
    summary = "Low-resolution draft attention per frame selects cells by a per-head quantile; cells become kernel blocks."
    paper = "DraftAttention: Fast Video Diffusion via Low-Resolution Attention Guidance (Shen et al., 2025)"

    def plan(self, q: torch.Tensor, k: torch.Tensor, call: AttentionCall) -> BlockPattern:
        cfg: DraftConfig = self.config
        grid = call.layout.grid
        cell, _, n_cells = patch_cells(grid, cfg.pool_h, cfg.pool_w)
        cell = cell.to(q.device)
        # The cell of each row as q and k arrive (raster, or an order held through the forward).
        arrival_cell = cell if call.token_order is None else cell[call.token_order]
        q_draft = mean_pool_segments(q, arrival_cell, n_cells)
        k_draft = mean_pool_segments(k, arrival_cell, n_cells)
        draft_map = torch.softmax(q_draft @ k_draft.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        cell_mask = quantile_keep(draft_map, cfg.sparsity)
        if cfg.keep_diagonal:
            cell_mask |= torch.eye(n_cells, dtype=torch.bool, device=q.device)
        order = self.token_order(grid, q.device)
        block_mask = cells_to_blocks(cell_mask, cell[order], cfg.block_size)
        return BlockPattern(block_mask, cfg.block_size, q.shape[2], token_order=order)

    def build_token_order(self, grid, device):
        return patch_order(grid, self.config.pool_h, self.config.pool_w).to(device)
