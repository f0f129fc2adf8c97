"""Block patterns: which key blocks each query block attends to, over the visual tokens.

A plan is data, so that it can be cached across steps, counted, drawn and tested without a model.
Text tokens are never part of a pattern: their rows and columns are always computed exactly by the
method base class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .kernels.block_index_table import block_mask_to_index_table
from .kernels.block_sparse_attention.pooled import block_token_counts
from .kernels.block_sparse_attention.window import LocalWindowMask
from .kernels.token_permutation import inverse_permutation


@dataclass
class BlockPattern:
    """Block mask over the visual tokens of one attention call.

    block_mask: bool tensor (B or 1, H or 1, num_q_blocks, num_k_blocks); True = the block is computed.
        Singleton batch/head dims broadcast (a static mask shared by all heads has H == 1).
    block_size: tokens per block (query and key blocks have the same size); the last block may be short.
    token_order: optional permutation of the visual tokens applied before blocking (reorder="hilbert",
        DraftAttention's cell reordering); `token_order[i]` is the original index of reordered token i.
        None means raster order.
    element_mask: optional exact mask on token pairs inside kept blocks, in the (possibly reordered) token
        order: a bool tensor (B|1, H|1, N, N), or a `LocalWindowMask` (CLEAR's radius as per-token coordinates,
        which the kernels evaluate in place; `to_dense()` builds the (1, 1, N, N) form for the reference);
        None = whole blocks.
    extras: method-specific data that travels with the plan (e.g. pooled mass for rectified attention).
    """

    block_mask: torch.Tensor
    block_size: int
    num_tokens: int
    token_order: torch.Tensor | None = None
    element_mask: torch.Tensor | LocalWindowMask | None = None
    extras: dict | None = None
    # density_per_head() of this pattern, computed once: the runtime records it on every attention call, and a
    # cached pattern serves many calls (with an element mask at 720p the count is gigabytes of work).
    _density: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    # inverse of token_order, computed once: every attention call with this pattern restores its output order.
    _inverse_order: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.block_mask.dtype != torch.bool or self.block_mask.dim() != 4:
            raise ValueError("BlockPattern.block_mask must be a 4-D bool tensor (B, H, num_q_blocks, num_k_blocks)")
        n_blocks = num_blocks(self.num_tokens, self.block_size)
        if self.block_mask.shape[-2:] != (n_blocks, n_blocks):
            raise ValueError(
                f"BlockPattern.block_mask has {tuple(self.block_mask.shape[-2:])} blocks, expected "
                f"({n_blocks}, {n_blocks}) for {self.num_tokens} tokens in blocks of {self.block_size}"
            )

    @property
    def num_blocks(self) -> int:
        return self.block_mask.shape[-1]

    def inverse_token_order(self) -> torch.Tensor | None:
        """The permutation that puts reordered tokens back in raster order (None without a token order)."""
        if self.token_order is not None and self._inverse_order is None:
            self._inverse_order = inverse_permutation(self.token_order)
        return self._inverse_order

    def density(self) -> float:
        """Fraction of visual query-key pairs computed, counting the short last block by its real size."""
        return float(self.density_per_head().mean())

    def density_per_head(self) -> torch.Tensor:
        """Density per (batch, head) as a float tensor (B or 1, H or 1). Patterns are not changed in place
        (`dataclasses.replace` makes a new one), so the first result stands."""
        if self._density is None:
            self._density = self._compute_density_per_head()
        return self._density

    def _compute_density_per_head(self) -> torch.Tensor:
        if isinstance(self.element_mask, LocalWindowMask):
            # Allowed pairs per block pair, counted from the coordinates in row chunks (no (N, N) tensor).
            counts = self.element_mask.block_pair_counts(self.block_size).to(self.block_mask.device, torch.float64)
            return (self.block_mask.to(torch.float64) * counts).sum(dim=(-2, -1)) / (self.num_tokens**2)
        if self.element_mask is not None:
            return self._element_density_per_head()
        sizes = block_sizes(self.num_tokens, self.block_size, self.block_mask.device)
        # Key tokens kept per query block: whole numbers below 2**24, exact in float32, one pass over the mask.
        keys_per_row = self.block_mask.to(torch.float32) @ sizes.to(torch.float32)
        return (keys_per_row.double() * sizes.double()).sum(-1) / (self.num_tokens**2)

    def _element_density_per_head(self, rows_per_slice: int = 4096) -> torch.Tensor:
        """Kept pairs under the element mask, counted a slice of query rows at a time: at 720p one (N, N)
        temporary would be tens of gigabytes."""
        n, block = self.num_tokens, self.block_size
        rows_per_slice = max(block, rows_per_slice // block * block)
        kept = torch.zeros(torch.broadcast_shapes(self.block_mask.shape[:2], self.element_mask.shape[:2]),
                           dtype=torch.int64, device=self.block_mask.device)
        for start in range(0, n, rows_per_slice):
            stop = min(start + rows_per_slice, n)
            blocks = self.block_mask[..., start // block:(stop + block - 1) // block, :]
            rows = blocks.repeat_interleave(block, dim=-2)[..., : stop - start, :]
            rows = rows.repeat_interleave(block, dim=-1)[..., :n]
            kept += (rows & self.element_mask[..., start:stop, :]).sum(dim=(-2, -1))
        return kept.to(torch.float64) / (n * n)

    def to_index_table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(kv_block_indices, counts) per (batch, head, query block), the kernels' input format.

        kv_block_indices: int32 (B, H, num_q_blocks, num_k_blocks), kept block ids first, ascending,
        padded with -1; counts: int32 (B, H, num_q_blocks).
        """
        return block_mask_to_index_table(self.block_mask)

    def to_element_mask(self) -> torch.Tensor:
        """Token-level bool mask (B or 1, H or 1, N, N) in the pattern's token order (reference path only)."""
        n = self.num_tokens
        mask = self.block_mask.repeat_interleave(self.block_size, dim=-2)[..., :n, :]
        mask = mask.repeat_interleave(self.block_size, dim=-1)[..., :n]
        if isinstance(self.element_mask, LocalWindowMask):
            mask = mask & self.element_mask.to_dense(mask.device)
        elif self.element_mask is not None:
            mask = mask & self.element_mask
        return mask


def num_blocks(num_tokens: int, block_size: int) -> int:
    return (num_tokens + block_size - 1) // block_size


def block_sizes(num_tokens: int, block_size: int, device=None) -> torch.Tensor:
    """Number of real tokens in each block (the last one may be short), int64 on `device`."""
    return block_token_counts(num_tokens, block_size, device, torch.int64)
