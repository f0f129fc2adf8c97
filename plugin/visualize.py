"""Render a block pattern as an RGB image (the app shows which blocks a method computes).

Rows are query blocks, columns key blocks, in the pattern's token order (the order the kernel sees).
A block's brightness is the fraction of its token pairs that are computed: 1 for kept whole blocks,
0 for skipped ones, in between for blocks cut by an element mask (CLEAR's circle).
"""

from __future__ import annotations

import numpy as np
import torch

from .kernels.block_sparse_attention import LocalWindowMask
from .pattern import BlockPattern, block_sizes, num_blocks

KEPT_COLOUR = np.array([255, 196, 61], dtype=np.float32)
SKIPPED_COLOUR = np.array([24, 26, 33], dtype=np.float32)


def block_fill(pattern: BlockPattern, batch: int = 0, head: int = 0) -> torch.Tensor:
    """(nQ, nK) float: fraction of each block's token pairs computed, for one batch element and head."""
    def pick(mask: torch.Tensor) -> torch.Tensor:
        return mask[min(batch, mask.shape[0] - 1), min(head, mask.shape[1] - 1)] if mask.dim() == 4 else mask

    block_mask = pick(pattern.block_mask).float()
    if pattern.element_mask is None:
        return block_mask
    n, size = pattern.num_tokens, pattern.block_size
    if isinstance(pattern.element_mask, LocalWindowMask):
        allowed = pattern.element_mask.block_pair_counts(size).to(block_mask.device, torch.float32)
    else:
        padded_len = num_blocks(n, size) * size
        elements = torch.zeros(padded_len, padded_len, dtype=torch.bool, device=block_mask.device)
        elements[:n, :n] = pick(pattern.element_mask)
        allowed = elements.view(padded_len // size, size, padded_len // size, size).sum(dim=(1, 3),
                                                                                       dtype=torch.float32)
    sizes = block_sizes(n, size, block_mask.device).float()
    return block_mask * allowed / (sizes[:, None] * sizes[None, :])


def render_block_pattern(pattern: BlockPattern, batch: int = 0, head: int = 0, pixels_per_block: int = 4) -> np.ndarray:
    """(nQ * pixels_per_block, nK * pixels_per_block, 3) uint8 image of one (batch, head) block map.

    Singleton batch/head dimensions (patterns shared by all heads) are shown whatever index is asked.
    """
    if pixels_per_block < 1:
        raise ValueError(f"render_block_pattern: pixels_per_block must be >= 1, got {pixels_per_block!r}")
    fill = block_fill(pattern, batch, head).cpu().numpy()[..., None]
    image = SKIPPED_COLOUR + fill * (KEPT_COLOUR - SKIPPED_COLOUR)
    image = image.repeat(pixels_per_block, axis=0).repeat(pixels_per_block, axis=1)
    return image.round().astype(np.uint8)
