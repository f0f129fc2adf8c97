"""Helpers shared by the block-sparse methods: token orders, block pooling, structural blocks.

Token orders are permutations of the visual tokens in raster (t, h, w) order; `order[i]` is the raster index
of reordered token i, which is what `BlockPattern.token_order` holds. Orders depend only on the grid, so
they are computed once per (grid, options) on the CPU and cached.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import torch

from swiftdit.kernels.token_permutation import inverse_permutation, permute_tokens

from ..pattern import BlockPattern, num_blocks

Reorder = Literal["none", "patch", "hilbert"]
REORDERS = ("none", "patch", "hilbert")


# ----------------------------------------------------------------------------------------------- token orders


def patch_tile(block_size: int) -> tuple[int, int]:
    """Spatial tile (h, w) holding one block: 64 -> 8x8 (NABLA), 128 -> 8x16 (DraftAttention)."""
    tile_h = 2 ** (int(math.log2(block_size)) // 2)
    return tile_h, block_size // tile_h


def grid_coords(grid: tuple[int, int, int]) -> torch.Tensor:
    """(N, 3) int64 (t, h, w) of every token in raster order."""
    axes = torch.meshgrid(*(torch.arange(size) for size in grid), indexing="ij")
    return torch.stack(axes, dim=-1).reshape(-1, 3)


def patch_cells(grid: tuple[int, int, int], tile_h: int, tile_w: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per raster token: its cell (frame-major, then cell row, then cell column) and whether the frame
    edge cuts that cell short; plus the number of cells."""
    t, h, w = grid
    coords = grid_coords(grid)
    cell_row, cell_col = coords[:, 1] // tile_h, coords[:, 2] // tile_w
    cells_per_row = -(-w // tile_w)
    cells_per_frame = -(-h // tile_h) * cells_per_row
    cell = coords[:, 0] * cells_per_frame + cell_row * cells_per_row + cell_col
    partial = ((cell_row + 1) * tile_h > h) | ((cell_col + 1) * tile_w > w)
    return cell, partial, t * cells_per_frame


@lru_cache(maxsize=64)
def _patch_order_cpu(grid: tuple[int, int, int], tile_h: int, tile_w: int) -> torch.Tensor:
    cell, partial, n_cells = patch_cells(grid, tile_h, tile_w)
    coords = grid_coords(grid)
    within = (coords[:, 1] % tile_h) * tile_w + coords[:, 2] % tile_w
    # Whole cells go first so that each one fills exactly one kernel block; the cells cut by the frame
    # edge (grids that are not multiples of the tile) follow together at the end, where blocks straddle them.
    key = (partial.long() * n_cells + cell) * (tile_h * tile_w) + within
    return key.argsort(stable=True)


def patch_order(grid: tuple[int, int, int], tile_h: int, tile_w: int) -> torch.Tensor:
    """Tokens grouped per frame into contiguous tile_h x tile_w spatial cells (raster order inside a cell)."""
    return _patch_order_cpu(tuple(grid), tile_h, tile_w)


def _hilbert_keys(coords: torch.Tensor, bits: int) -> torch.Tensor:
    """Hilbert-curve index of integer points (N, dims) in a 2**bits cube (Skilling, AIP Conf. Proc. 707, 2004)."""
    x = coords.clone()
    dims = x.shape[1]
    top = 1 << (bits - 1)
    q = top
    while q > 1:  # inverse undo of the excess work
        low = q - 1
        for i in range(dims):
            bit_set = (x[:, i] & q) != 0
            x[:, 0] = torch.where(bit_set, x[:, 0] ^ low, x[:, 0])
            swap = torch.where(bit_set, torch.zeros_like(x[:, 0]), (x[:, 0] ^ x[:, i]) & low)
            x[:, 0] ^= swap
            x[:, i] ^= swap
        q >>= 1
    for i in range(1, dims):  # Gray encode
        x[:, i] ^= x[:, i - 1]
    flips = torch.zeros_like(x[:, 0])
    q = top
    while q > 1:
        flips = torch.where((x[:, dims - 1] & q) != 0, flips ^ (q - 1), flips)
        q >>= 1
    x ^= flips[:, None]
    key = torch.zeros_like(x[:, 0])
    for b in reversed(range(bits)):  # interleave the transposed bits into one index
        for i in range(dims):
            key = (key << 1) | ((x[:, i] >> b) & 1)
    return key


@lru_cache(maxsize=64)
def _hilbert_order_cpu(grid: tuple[int, int, int]) -> torch.Tensor:
    coords = grid_coords(grid)
    present = [axis for axis, size in enumerate(grid) if size > 1]  # an image is a 2-D curve, not a flat 3-D one
    if not present:
        return torch.arange(1)
    bits = max(1, max(int(grid[axis] - 1).bit_length() for axis in present))
    return _hilbert_keys(coords[:, present], bits).argsort(stable=True)


def hilbert_order(grid: tuple[int, int, int]) -> torch.Tensor:
    """Tokens sorted along the Hilbert curve of the enclosing power-of-two cube.

    Jenga and Rectified SpaAttn use the generalized (Gilbert) curve, which fills non-power-of-two boxes
    without jumps; restricting the power-of-two curve to the grid gives the same blocks in the interior
    and only a few non-contiguous blocks where the curve leaves the grid.
    """
    return _hilbert_order_cpu(tuple(grid))


def token_order(reorder: Reorder, grid: tuple[int, int, int], block_size: int, device) -> torch.Tensor | None:
    """The permutation for a `reorder` option, on `device`; None for raster order."""
    if reorder == "none":
        return None
    if reorder == "patch":
        return patch_order(grid, *patch_tile(block_size)).to(device)
    return hilbert_order(grid).to(device)


def reorder_tokens(x: torch.Tensor, order: torch.Tensor | None, arrived_in: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token tensors (B, H, N, ...) whose rows arrive in the order `arrived_in` (None: raster), put in
    `order` (None: raster); whole-row copies on CUDA. No copy when the two are the same order: the runtime
    holds a method's order through the whole forward (`ForwardState.token_order`), and the method's patterns
    use that very tensor."""
    gather = relative_order(order, arrived_in)
    return x if gather is None else permute_tokens(x, gather)


def restore_token_order(x: torch.Tensor, pattern: BlockPattern, arrived_in: torch.Tensor | None = None, *,
                        row_scale: torch.Tensor | None = None, addend: torch.Tensor | None = None) -> torch.Tensor:
    """Undo `reorder_tokens`: per-token tensors (B, H, N, ...) in the pattern's token order back to the order
    the call's tokens arrived in (`arrived_in`, None: raster). The pattern computes its inverse order once,
    for every call it serves.

    row_scale (B, H, N) and addend (x's shape), in the arrival order, give row_scale * x + addend in the same
    pass (float32, rounded once to x's dtype), also when no rows move."""
    gather = relative_order(arrived_in, pattern.token_order, pattern.inverse_token_order())
    if row_scale is None and addend is None:
        return x if gather is None else permute_tokens(x, gather)
    if gather is None:
        gather = torch.arange(x.shape[2], device=x.device)
    return permute_tokens(x, gather, row_scale=row_scale, addend=addend)


def relative_order(order: torch.Tensor | None, arrived_in: torch.Tensor | None,
                   arrival_position: torch.Tensor | None = None) -> torch.Tensor | None:
    """The gather that takes rows arriving in `arrived_in` to `order` (both raster indices per position, None
    for raster itself); None when nothing moves. Orders are compared by identity: the same order is the same
    cached tensor, and comparing values would wait for the GPU. arrival_position: the inverse of `arrived_in`
    (raster index -> position), where the caller keeps it."""
    if order is arrived_in:
        return None
    if arrived_in is None:
        return order
    if arrival_position is None:
        arrival_position = inverse_permutation(arrived_in)
    return arrival_position if order is None else arrival_position[order]


# ----------------------------------------------------------------------------------------------- pooling


def block_ids(num_tokens: int, block_size: int, device=None) -> torch.Tensor:
    return torch.arange(num_tokens, device=device) // block_size


def mean_pool_segments(x: torch.Tensor, segment_ids: torch.Tensor, num_segments: int) -> torch.Tensor:
    """(B, H, N, D) -> (B, H, num_segments, D) float32 means over the tokens of each segment."""
    sums = torch.zeros(*x.shape[:2], num_segments, x.shape[-1], device=x.device, dtype=torch.float32)
    sums.index_add_(2, segment_ids, x.float())
    counts = torch.bincount(segment_ids, minlength=num_segments).clamp_min(1).to(torch.float32)
    return sums / counts[:, None]


# ----------------------------------------------------------------------------------------------- structure


@lru_cache(maxsize=64)
def _structural_cpu(grid: tuple[int, int, int], block_size: int, reorder: str, neighbours: bool,
                    first_frame_sink: bool) -> torch.Tensor:
    t, h, w = grid
    order = token_order(reorder, grid, block_size, "cpu")
    n = t * h * w
    n_blocks = num_blocks(n, block_size)
    position = torch.empty(n, dtype=torch.long)  # raster index -> position in the order
    position[order if order is not None else torch.arange(n)] = torch.arange(n)
    coords = grid_coords(grid)
    block_of_raster = position // block_size
    mask = torch.eye(n_blocks, dtype=torch.bool)  # a query block always sees itself: no empty rows
    if neighbours:
        # Key blocks holding any of the 26 grid neighbours of a query block's tokens.
        for dt in (-1, 0, 1):
            for dh in (-1, 0, 1):
                for dw in (-1, 0, 1):
                    nb = coords + torch.tensor([dt, dh, dw])
                    inside = ((nb >= 0) & (nb < torch.tensor(grid))).all(-1)
                    nb_raster = (nb[:, 0] * h + nb[:, 1]) * w + nb[:, 2]
                    mask[block_of_raster[inside], block_of_raster[nb_raster[inside]]] = True
    if first_frame_sink and t > 1:
        mask[:, block_of_raster[: h * w].unique()] = True
    return mask


def structural_blocks(grid: tuple[int, int, int], block_size: int, reorder: Reorder, *, neighbours: bool,
                      first_frame_sink: bool, device) -> torch.Tensor:
    """Blocks kept whatever the scores say, as a (1, 1, nQ, nK) bool mask: the diagonal, optionally the
    3-D neighbourhood (key blocks holding a grid neighbour of a query token) and the first-frame sink
    (every key block holding a token of latent frame 0; videos only)."""
    return _structural_on(tuple(grid), block_size, reorder, neighbours, first_frame_sink, str(torch.device(device)))


@lru_cache(maxsize=64)
def _structural_on(grid, block_size: int, reorder: str, neighbours: bool, first_frame_sink: bool,
                   device: str) -> torch.Tensor:
    """The structural mask on a device, kept there: planning asks for it at every layer of every plan, and a
    host-to-device copy each time would cost a copy and a wait."""
    return _structural_cpu(grid, block_size, reorder, neighbours, first_frame_sink).to(device)[None, None]
