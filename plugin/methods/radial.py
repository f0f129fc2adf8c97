"""`radial`: Radial Attention's static O(n log n) mask (Li et al., NeurIPS 2025; mit-han-lab/radial-attention).

Token-level rule per pair of latent frames (i, j), dist = |i - j|, tpf = tokens per frame,
B = 2 ** bit_length(tpf):
- dist <= 1: dense; with `first_frame_sink`, key frame 0 is dense for every query frame;
- otherwise group = bit_length(dist) and the pair keeps the diagonal band |s_k - s_q| <= window over the
  in-frame indices, window = max(B / 2**group * decay, block_size): the window halves per log2 band;
- temporal thinning: where B / 2**group < block_size, only pairs with dist % (block_size / (B / 2**group))
  == 0 are kept at all.
The token mask is shrunk to blocks as the authors do (`shrinkMaskStrict`): within each frame pair, a block
is kept when more than 60% of its non-empty key columns have a density above 1/3; frame pairs are OR-ed.

Differences from the released code, where its users found faults or it hard-codes one model:
- adjacent frames (dist 1) are dense as the paper says; the Wan variant of the code narrows them to a
  half-frame band. The sink is a separate option (the code ties it to "wan").
- the temporal-thinning threshold is the block size (the code hard-codes 128 "equal to block-size").
- any token count works (radial-attention#59 asked to pad instead of requiring multiples of 128): the
  short last query block is judged by its real size, and diagonal blocks are always kept (with frames
  shorter than a block the per-pair rule would drop every block).
- the block mask is computed in closed form per frame pair (the column densities of a band are interval
  overlaps), never materialising a token mask, so building it for 100k+ tokens takes milliseconds.
The mask depends only on the layout, so it is planned once per layout and shared by all layers and heads.
It is a video method: a single frame (an image model) is one dense frame pair, so the mask keeps everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from ..context import AttentionCall
from ..pattern import BlockPattern, num_blocks
from ..validation import check_bool, check_choice, check_float
from .base import AttentionMethod, MethodConfig
from .registry import register_method

# The authors' shrink rule: a block is kept when more than KEPT_COLUMN_SHARE of its non-empty columns
# have a density above DENSE_COLUMN_DENSITY.
DENSE_COLUMN_DENSITY = 1 / 3
KEPT_COLUMN_SHARE = 0.6


@dataclass(frozen=True)
class RadialConfig(MethodConfig):
    """Options of `radial`.

    block_size: tokens per block, 64 or 128. Default 128 (the authors').
    decay: decay_factor scaling the spatial window of distant frames, > 0. Default 1.0 (the formula as
        published); the authors ran Wan2.1-14B with 0.2, HunyuanVideo with 0.95, Wan2.2 with 0.8.
    first_frame_sink: every query attends the whole first latent frame (the authors' Wan setting; their
        HunyuanVideo setting has no sink). Default True.
    """

    block_size: int = 128
    decay: float = 1.0
    first_frame_sink: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("RadialConfig", "block_size", self.block_size, (64, 128))
        check_float("RadialConfig", "decay", self.decay, minimum=0.0, exclusive_minimum=True)
        check_bool("RadialConfig", "first_frame_sink", self.first_frame_sink)


def frame_pair_window(dist: int, tokens_per_frame: int, block_size: int, decay: float) -> float:
    """The band half-width for two frames `dist` apart: inf when dense, -1 (no key) when the pair is dropped."""
    if dist <= 1:
        return float("inf")
    group = dist.bit_length()
    band_length = 2 ** tokens_per_frame.bit_length() / 2**group
    if band_length < block_size and dist % int(block_size / band_length) != 0:
        return -1.0
    return max(band_length * decay, block_size)


@lru_cache(maxsize=16)
def radial_block_mask(grid: tuple[int, int, int], block_size: int, decay: float, first_frame_sink: bool,
                      device: str = "cpu") -> torch.Tensor:
    """The (nQ, nK) block mask for a (T, H, W) token grid in raster order, built on `device` (cached across
    pipeline calls, like the authors' class-level `MaskMap`; callers must not modify it in place)."""
    frames = grid[0]
    tpf = grid[1] * grid[2]
    n = frames * tpf
    n_blocks = num_blocks(n, block_size)
    keys = torch.arange(n, device=device)
    key_frame, key_spatial, key_block = keys // tpf, keys % tpf, keys // block_size
    # The shrink rule is applied per frame pair, so a key block that straddles two frames is judged
    # separately for each: a segment is the part of one key block inside one frame.
    starts_segment = torch.ones(n, dtype=torch.bool, device=device)
    starts_segment[1:] = (key_frame[1:] != key_frame[:-1]) | (key_block[1:] != key_block[:-1])
    segment = starts_segment.cumsum(0) - 1
    segment_block, segment_frame = key_block[starts_segment], key_frame[starts_segment]
    n_segments = int(segment_block.numel())
    # The diagonal holds same-frame (dense) pairs and is always kept: when frames are shorter than a
    # block, the per-pair rule sees each frame's rows as too few and would otherwise drop every block.
    mask = torch.eye(n_blocks, dtype=torch.bool, device=device)
    for query_frame in range(frames):
        windows = torch.tensor([
            float("inf") if first_frame_sink and key_frame_index == 0
            else frame_pair_window(abs(query_frame - key_frame_index), tpf, block_size, decay)
            for key_frame_index in range(frames)
        ], device=device)
        # Query blocks overlapping this frame, and the in-frame index range [lo, hi] of their rows in it.
        first, last = query_frame * tpf, (query_frame + 1) * tpf - 1
        query_blocks = torch.arange(first // block_size, last // block_size + 1, device=device)
        lo = (query_blocks * block_size).clamp(min=first) - first
        hi = ((query_blocks + 1) * block_size - 1).clamp(max=last) - first
        block_len = ((query_blocks + 1) * block_size).clamp(max=n) - query_blocks * block_size
        # A dense frame pair gives every column of a segment the same row count, so the segment is kept
        # exactly when the query block's rows in this frame exceed the density threshold.
        dense_pair = torch.isinf(windows[segment_frame])
        enough_rows = (hi - lo + 1) / block_len > DENSE_COLUMN_DENSITY
        keep_segment = enough_rows[:, None] & dense_pair[None, :]
        # Banded pairs, column by column: rows r in [lo, hi] with |s - r| <= window, an interval overlap.
        banded = (windows[key_frame] >= 0) & torch.isfinite(windows[key_frame])
        if banded.any():
            window = windows[key_frame[banded]][None, :]
            spatial = key_spatial[banded][None, :]
            low = torch.maximum(spatial - window, lo[:, None].float())
            high = torch.minimum(spatial + window, hi[:, None].float())
            rows = (high - low + 1).clamp(min=0)
            dense_columns = torch.zeros(len(query_blocks), n_segments, device=device).index_add_(
                1, segment[banded], (rows / block_len[:, None] > DENSE_COLUMN_DENSITY).float())
            nonempty_columns = torch.zeros(len(query_blocks), n_segments, device=device).index_add_(
                1, segment[banded], (rows > 0).float())
            keep_segment |= dense_columns > KEPT_COLUMN_SHARE * nonempty_columns
        kept = torch.zeros(len(query_blocks), n_blocks, device=device).index_add_(
            1, segment_block, keep_segment.float()) > 0
        mask[query_blocks] |= kept
    return mask


@register_method
class RadialAttention(AttentionMethod):
    name = "radial"
    Config = RadialConfig
    summary = ("Static O(n log n) mask: dense for adjacent frames, a spatial band halving with each doubling of "
               "frame distance.")
    paper = ("Radial Attention: O(n log n) Sparse Attention with Energy Decay for Long Video Generation "
             "(Li et al., NeurIPS 2025)")
    static_pattern = True

    def plan(self, q: torch.Tensor, k: torch.Tensor, call: AttentionCall) -> BlockPattern:
        cfg: RadialConfig = self.config
        mask = radial_block_mask(tuple(call.layout.grid), cfg.block_size, cfg.decay, cfg.first_frame_sink,
                                 str(q.device))
        return BlockPattern(mask.clone()[None, None], cfg.block_size, q.shape[2])
