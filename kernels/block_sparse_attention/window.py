"""A local-window element mask described by per-token coordinates instead of an (N, N) tensor.

Query token i may attend key token j when |t_i - t_j| <= temporal_radius and
(y_i - y_j)^2 + (x_i - x_j)^2 < radius^2 (CLEAR's strict inequality), with (t, y, x) the tokens' latent-grid
coordinates in the order the kernel sees them (after any reorder). The kernels evaluate this on the fly
for partially kept blocks; everything here that needs all pairs (block flags, pair counts, the dense mask
of the reference) walks query rows in chunks of a bounded number of pairs, so nothing is O(N^2) in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Pairs per chunk when scanning the window (a few int32 temporaries of this many elements live at once).
PAIRS_PER_CHUNK = 1 << 23
# Coordinates given to padding rows / columns: far apart in time from every real token and from each other.
_PAD_T = 1 << 28


@dataclass
class LocalWindowMask:
    """Element mask of a local window, for `block_sparse_attention(element_mask=...)`.

    coords: (N, 3) int32 [t, y, x] per token, in kernel (reordered) order.
    radius, temporal_radius: allowed = |dt| <= temporal_radius and dy^2 + dx^2 < radius^2.
    block_full: optional (B|1, H|1, nQ, nK) uint8, 1 where every pair of the block is allowed (the kernels
        then skip the window test); computed from the coordinates at launch when None.

    Code that needs the token-pair mask itself (the reference, pictures, a per-call visual mask) asks for it
    with `to_dense()`; everything else works from the coordinates and the per-block counts.
    """

    coords: torch.Tensor
    radius: int
    temporal_radius: int
    block_full: torch.Tensor | None = None
    # Allowed pairs per (query block, key block), per block size: computed once, shared by plan and density.
    _counts: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.coords.dim() != 2 or self.coords.shape[1] != 3:
            raise ValueError(f"LocalWindowMask.coords must be (N, 3); got {tuple(self.coords.shape)}")
        self.coords = self.coords.to(torch.int32).contiguous()
        self.radius = int(self.radius)
        self.temporal_radius = int(self.temporal_radius)
        if self.radius < 0 or self.temporal_radius < 0:
            raise ValueError("LocalWindowMask radius and temporal_radius must be >= 0")

    @property
    def num_tokens(self) -> int:
        return self.coords.shape[0]

    @property
    def device(self) -> torch.device:
        return self.coords.device

    def block_pair_counts(self, block_size: int) -> torch.Tensor:
        """(nQ, nK) int32: allowed pairs per block pair (cached per block size)."""
        if block_size not in self._counts:
            self._counts[block_size] = window_block_counts(self.coords, self.radius, self.temporal_radius,
                                                           block_size)
        return self._counts[block_size]

    def block_classes(self, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(touched, full), each (nQ, nK) bool: some pair allowed / every pair allowed."""
        return classify_blocks(self.block_pair_counts(block_size), self.num_tokens, block_size)

    def with_block_full(self, block_size: int) -> LocalWindowMask:
        """This window with `block_full` filled in for `block_size` (self if already there)."""
        n_blocks = -(-self.num_tokens // block_size)
        if self.block_full is not None and self.block_full.shape[-2:] == (n_blocks, n_blocks):
            return self
        full = self.block_classes(block_size)[1]
        out = LocalWindowMask(self.coords, self.radius, self.temporal_radius, full.to(torch.uint8)[None, None])
        out._counts = self._counts
        return out

    def to_dense(self, device=None) -> torch.Tensor:
        """(1, 1, N, N) bool: the whole mask (reference, tests and pictures on small shapes only)."""
        return window_dense_mask(self.coords.to(device) if device is not None else self.coords, self.radius,
                                 self.temporal_radius)[None, None]

    def nbytes(self) -> int:
        """Bytes held: coordinates, block flags and the cached per-block counts."""
        tensors = [self.coords, self.block_full, *self._counts.values()]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def _allowed(rows: torch.Tensor, cols: torch.Tensor, radius: int, temporal_radius: int) -> torch.Tensor:
    """(R, C) bool window test between (R, 3) and (C, 3) int coordinates."""
    dt = (rows[:, None, 0] - cols[None, :, 0]).abs()
    dy = rows[:, None, 1] - cols[None, :, 1]
    dx = rows[:, None, 2] - cols[None, :, 2]
    return (dt <= temporal_radius) & (dy * dy + dx * dx < radius * radius)


def _rows_per_chunk(num_cols: int, multiple: int) -> int:
    return max(multiple, PAIRS_PER_CHUNK // max(num_cols, 1) // multiple * multiple)


def window_dense_mask(coords: torch.Tensor, radius: int, temporal_radius: int) -> torch.Tensor:
    """(N, N) bool window mask (for references and tests), built a chunk of rows at a time."""
    coords = coords.to(torch.int32)
    n = coords.shape[0]
    mask = torch.empty(n, n, dtype=torch.bool, device=coords.device)
    step = _rows_per_chunk(n, 1)
    for start in range(0, n, step):
        mask[start:start + step] = _allowed(coords[start:start + step], coords, radius, temporal_radius)
    return mask


def window_block_counts(coords: torch.Tensor, radius: int, temporal_radius: int, block_size: int,
                        pairs_per_chunk: int | None = None) -> torch.Tensor:
    """(nQ, nK) int32 number of allowed (query, key) pairs in every block pair, without an (N, N) tensor.

    Rows are processed a whole number of query blocks at a time, about `pairs_per_chunk` pairs per chunk
    (at least one block row); padding rows/columns get coordinates that allow nothing.
    """
    coords = coords.to(torch.int32)
    n = coords.shape[0]
    n_blocks = -(-n // block_size)
    padded = n_blocks * block_size
    pad = padded - n
    # Distinct far times for padded rows and padded columns: padding never pairs with anything, itself included.
    cols = torch.nn.functional.pad(coords, (0, 0, 0, pad))
    cols[n:, 0] = _PAD_T
    rows_all = torch.nn.functional.pad(coords, (0, 0, 0, pad))
    rows_all[n:, 0] = -_PAD_T
    budget = PAIRS_PER_CHUNK if pairs_per_chunk is None else pairs_per_chunk
    step = max(block_size, budget // padded // block_size * block_size)
    counts = torch.empty(n_blocks, n_blocks, dtype=torch.int32, device=coords.device)
    for start in range(0, padded, step):
        rows = rows_all[start:start + step]
        allowed = _allowed(rows, cols, radius, temporal_radius)
        chunk_blocks = rows.shape[0] // block_size
        counts[start // block_size:start // block_size + chunk_blocks] = (
            allowed.view(chunk_blocks, block_size, n_blocks, block_size).sum(dim=(1, 3), dtype=torch.int32))
    return counts


def block_pair_sizes(num_tokens: int, block_size: int, device=None) -> torch.Tensor:
    """(nQ, nK) int32 number of real token pairs in every block pair (the last block may be short)."""
    n_blocks = -(-num_tokens // block_size)
    sizes = torch.full((n_blocks,), block_size, dtype=torch.int32, device=device)
    sizes[-1] = num_tokens - (n_blocks - 1) * block_size
    return sizes[:, None] * sizes[None, :]


def classify_blocks(counts: torch.Tensor, num_tokens: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Allowed-pair counts -> (touched, full) bool block maps: some pair allowed / every real pair allowed."""
    return counts > 0, counts == block_pair_sizes(num_tokens, block_size, counts.device)
