"""Patterns against the published formulas on small grids worked out by hand (radial bands, draft quantile,
CLEAR radius, sparse selection and structural blocks), and token reordering."""

import math

import pytest
import torch

from method_cases import make_call, random_inputs
from swiftdit.methods import build_method
from swiftdit.methods.blocking import grid_coords, hilbert_order, patch_order, reorder_tokens, restore_token_order
from swiftdit.kernels.block_sparse_attention import window as window_module
from swiftdit.methods.base import attend_with_pattern
from swiftdit.pattern import BlockPattern
from swiftdit.pattern_cache import PatternCache
from swiftdit.methods.draft import quantile_keep
from swiftdit.methods.radial import radial_block_mask


def plan(name, options, grid, **input_options):
    inputs = random_inputs(grid, **input_options)
    return build_method(name, options).plan(inputs.q, inputs.k, make_call(grid))


# ----------------------------------------------------------------------------------------------- radial


def test_radial_one_block_per_frame_keeps_log_spaced_frame_distances():
    # 8 frames of 8x8 = 64 tokens: one block per frame. B = 2^bit_length(64) = 128; for distance d >= 2 the
    # band B / 2^bit_length(d) is 32 (d = 2, 3) or 16 (d = 4..7), below the block, so only d % 2 == 0 and
    # d % 4 == 0 survive thinning, with a window of at least one block (the whole frame): d in {0, 1, 2, 4}.
    frames = torch.arange(8)
    dist = (frames[:, None] - frames[None, :]).abs()
    banded = (dist <= 2) | (dist == 4)
    assert torch.equal(radial_block_mask((8, 8, 8), 64, 1.0, False), banded)
    with_sink = banded.clone()
    with_sink[:, 0] = True
    assert torch.equal(radial_block_mask((8, 8, 8), 64, 1.0, True), with_sink)


@pytest.mark.parametrize("decay, band_blocks", [(1.0, 2), (0.5, 1)])
def test_radial_spatial_band_inside_distant_frame_pairs(decay, band_blocks):
    # 4 frames of 16x16 = 256 tokens, 4 blocks of 64 per frame. B = 512; at distance 2 and 3 the window is
    # max(512 / 4 * decay, 64) tokens. For window 128, key block b = a + 2 has column counts 64..1 of which
    # 43 exceed 64/3, and 43/64 > 60% keeps it; b = a + 3 has none. For window 64 the same happens one block
    # closer. So the band is |a - b| <= 2 (decay 1) or <= 1 (decay 0.5).
    frame = torch.arange(16) // 4
    spatial = torch.arange(16) % 4
    dist = (frame[:, None] - frame[None, :]).abs()
    expected = (dist <= 1) | ((spatial[:, None] - spatial[None, :]).abs() <= band_blocks) | (frame[None, :] == 0)
    assert torch.equal(radial_block_mask((4, 16, 16), 64, decay, True), expected)


def radial_token_level_reference(grid, block_size, decay):
    """The authors' construction transcribed: a token mask per frame pair, shrunk per pair, OR-ed."""
    frames, tpf = grid[0], grid[1] * grid[2]
    n = frames * tpf
    n_blocks = n // block_size
    big = 2 ** tpf.bit_length()
    mask = torch.eye(n_blocks, dtype=torch.bool)  # our one addition: diagonal blocks always kept
    rows = torch.arange(tpf)[:, None]
    cols = torch.arange(tpf)[None, :]
    for i in range(frames):
        for j in range(frames):
            dist = abs(i - j)
            if j == 0 or dist <= 1:
                local = torch.ones(tpf, tpf, dtype=torch.bool)
            else:
                group = dist.bit_length()
                band = big / 2**group
                if band < block_size and dist % int(block_size / band) != 0:
                    continue
                local = (cols - rows).abs() <= max(band * decay, block_size)
            placed = torch.zeros(n, n, dtype=torch.bool)
            placed[i * tpf:(i + 1) * tpf, j * tpf:(j + 1) * tpf] = local
            blocks = placed.view(n_blocks, block_size, n_blocks, block_size)
            column_density = blocks.sum(1) / block_size  # (nQ, nK, block_size)
            nonempty = (column_density > 0).sum(-1)
            dense = (column_density > 1 / 3).sum(-1)
            mask |= dense / (nonempty + 1e-9) > 0.6
    return mask


@pytest.mark.parametrize("grid", [(4, 8, 12), (8, 8, 10), (3, 16, 16)])
@pytest.mark.parametrize("decay", [1.0, 0.3])
def test_radial_closed_form_matches_token_level_construction(grid, decay):
    # Frames of 96 and 80 tokens put block boundaries inside frames, where blocks are judged per frame pair.
    assert torch.equal(radial_block_mask(grid, 64, decay, True), radial_token_level_reference(grid, 64, decay))


def test_radial_pattern_is_shared_by_heads_and_pads_odd_token_counts():
    pattern = plan("radial", dict(block_size=64), (5, 7, 9), heads=3)
    assert pattern.block_mask.shape[:2] == (1, 1)
    assert pattern.num_tokens == 315 and pattern.num_blocks == 5


def test_radial_keeps_blocks_of_frames_shorter_than_a_block():
    # 30-token frames: every 64-token block holds parts of three frames, each too few rows for the
    # per-pair rule (density <= 30/64 only in one frame pair); the diagonal still keeps every row non-empty.
    mask = radial_block_mask((8, 5, 6), 64, 1.0, False)
    assert mask.diagonal().all()


# ----------------------------------------------------------------------------------------------- draft


def test_draft_quantile_keeps_entries_from_the_largest_of_the_dropped_smallest():
    # 16 entries, sparsity 0.75: the threshold is the 12th smallest value, kept with everything above it
    # (the authors' `>=`), i.e. 5 entries per head; the second head ranks its entries the other way.
    values = torch.arange(16.0).view(4, 4)
    draft_map = torch.stack([values, 15 - values])[None]
    keep = quantile_keep(draft_map, 0.75)
    assert torch.equal(keep[0, 0], values >= 11)
    assert torch.equal(keep[0, 1], values <= 4)
    assert quantile_keep(draft_map, 0.0).all()


def test_draft_plan_matches_pooled_draft_map_on_whole_cells():
    grid, pool_h, pool_w, sparsity = (2, 8, 16), 4, 8, 0.6
    inputs = random_inputs(grid, batch=1, heads=2, head_dim=8, seed=3)
    method = build_method("draft", dict(pool_h=pool_h, pool_w=pool_w, sparsity=sparsity, keep_diagonal=False))
    pattern = method.plan(inputs.q, inputs.k, make_call(grid))

    def draft_tokens(x):  # the authors' avg_pool2d over each frame, cells in (frame, row, column) order
        b, h, n, d = x.shape
        frames = x.view(b * h, grid[0], grid[1], grid[2], d).permute(0, 1, 4, 2, 3).reshape(-1, d, grid[1], grid[2])
        pooled = torch.nn.functional.avg_pool2d(frames, (pool_h, pool_w))
        return pooled.view(b, h, grid[0], d, -1).permute(0, 1, 2, 4, 3).reshape(b, h, -1, d)

    scores = draft_tokens(inputs.q) @ draft_tokens(inputs.k).transpose(-1, -2) / math.sqrt(8)
    draft_map = torch.softmax(scores, -1)
    flat = draft_map.flatten(-2)
    threshold = flat.sort(-1).values[..., int(sparsity * flat.shape[-1]) - 1]
    assert torch.equal(pattern.block_mask, draft_map >= threshold[..., None, None])
    # Each kernel block is one cell: a pool_h x pool_w square of one frame.
    cells = grid_coords(grid)[pattern.token_order].view(-1, pool_h * pool_w, 3)
    assert (cells[:, :, 0] == cells[:, :1, 0]).all()
    extent = cells.amax(1) - cells.amin(1)
    assert (extent[:, 1] == pool_h - 1).all() and (extent[:, 2] == pool_w - 1).all()


def test_draft_any_resolution_covers_every_kept_cell_pair():
    grid, pool_h, pool_w = (3, 6, 11), 4, 8  # partial cells at the bottom and right of every frame
    method = build_method("draft", dict(pool_h=pool_h, pool_w=pool_w, sparsity=0.8))
    inputs = random_inputs(grid, batch=1, heads=2, head_dim=8)
    pattern = method.plan(inputs.q, inputs.k, make_call(grid))
    coords = grid_coords(grid)[pattern.token_order]
    cells_per_row = math.ceil(grid[2] / pool_w)
    cells_per_frame = math.ceil(grid[1] / pool_h) * cells_per_row
    cell = coords[:, 0] * cells_per_frame + coords[:, 1] // pool_h * cells_per_row + coords[:, 2] // pool_w
    blocks_of_cell_pairs = pattern.to_element_mask()  # (1, H, N, N) in the pattern's order
    diagonal = cell[:, None] == cell[None, :]
    assert blocks_of_cell_pairs[..., diagonal].all()  # keep_diagonal: no query cell is left without keys
    assert 0.0 < pattern.density() < 1.0


# ----------------------------------------------------------------------------------------------- CLEAR


def test_clear_circle_uses_strict_radius():
    grid = (1, 9, 9)
    centre = 4 * 9 + 4
    window = local_window_mask(grid, 4, 0, None)[centre].view(9, 9)
    # d^2 < 16: the 7x7 square around the centre without its four corners (3^2 + 3^2 = 18), not (4, 0).
    expected = torch.zeros(9, 9, dtype=torch.bool)
    expected[1:8, 1:8] = True
    for y, x in ((1, 1), (1, 7), (7, 1), (7, 7)):
        expected[y, x] = False
    assert torch.equal(window, expected)
    assert int(window.sum()) == 45


def test_clear_video_window_spans_temporal_radius():
    grid = (5, 6, 6)
    query = 2 * 36 + 2 * 6 + 3  # frame 2, row 2, column 3
    window = local_window_mask(grid, 2, 1, None)[query].view(5, 6, 6)
    assert not window[0].any() and not window[4].any()
    for frame in (1, 2, 3):
        assert int(window[frame].sum()) == 9 and window[frame, 2, 3]


def local_window_mask(grid, radius, temporal_radius, order):
    """CLEAR's former (N, N) element mask, kept here as the reference of the coordinate window."""
    coords = grid_coords(grid)
    if order is not None:
        coords = coords[order]
    offset = coords[:, None, :] - coords[None, :, :]
    return (offset[..., 0].abs() <= temporal_radius) & (offset[..., 1] ** 2 + offset[..., 2] ** 2 < radius**2)


def blocks_touched(element_mask, block_size):
    """CLEAR's former block map: block pairs holding at least one allowed pair."""
    n = element_mask.shape[-1]
    n_blocks = -(-n // block_size)
    padded = torch.nn.functional.pad(element_mask, (0, n_blocks * block_size - n, 0, n_blocks * block_size - n))
    return padded.view(n_blocks, block_size, n_blocks, block_size).any(dim=3).any(dim=1)


def test_clear_window_does_not_depend_on_chunking(monkeypatch):
    grid = (2, 7, 9)
    whole = local_window_mask(grid, 3, 1, None)
    pattern = plan("clear", dict(radius=3, reorder="none"), grid)
    monkeypatch.setattr(window_module, "PAIRS_PER_CHUNK", 10)
    small_chunks = plan("clear", dict(radius=3, reorder="none"), grid)
    assert torch.equal(small_chunks.block_mask, pattern.block_mask)
    assert torch.equal(small_chunks.element_mask.block_full, pattern.element_mask.block_full)
    assert torch.equal(small_chunks.element_mask.to_dense()[0, 0], whole)
    assert torch.equal(pattern.block_mask[0, 0], blocks_touched(whole, 64))


@pytest.mark.parametrize("grid,options", [
    ((2, 16, 16), dict(radius=3, temporal_radius=0)),
    ((3, 10, 14), dict(radius=5, temporal_radius=1, reorder="hilbert")),
    ((2, 9, 20), dict(radius=4, temporal_radius=1, reorder="none", block_size=128)),
])
def test_clear_matches_the_former_dense_mask_path(grid, options):
    inputs = random_inputs(grid, batch=1, heads=2, head_dim=8)
    method = build_method("clear", options)
    call = make_call(grid)
    pattern = method.plan(inputs.q, inputs.k, call)
    order = pattern.token_order
    dense = local_window_mask(grid, method.config.radius, method.config.temporal_radius, order)
    former = BlockPattern(blocks_touched(dense, method.config.block_size)[None, None], method.config.block_size,
                          dense.shape[0], token_order=order, element_mask=dense[None, None])
    assert torch.equal(pattern.block_mask, former.block_mask)
    assert torch.equal(pattern.to_index_table()[0], former.to_index_table()[0])
    assert torch.equal(pattern.element_mask.to_dense()[0, 0], dense)
    assert math.isclose(pattern.density(), former.density(), rel_tol=1e-12)
    assert math.isclose(pattern.density(), float(dense.double().mean()), rel_tol=1e-12)
    out = method.attend(inputs, pattern, call)
    former_out = attend_with_pattern(inputs, former, return_lse=False)[0]
    assert torch.allclose(out, former_out, atol=1e-6, rtol=1e-5)
    out, lse = attend_with_pattern(inputs, pattern)
    former_out, former_lse = attend_with_pattern(inputs, former)
    assert torch.equal(out, former_out) and torch.equal(lse, former_lse)


def test_clear_plan_builds_no_token_pair_tensor(monkeypatch):
    """Planning, density and the index table never hold an (N, N) tensor: every tensor any op creates is
    bounded by the row chunk (here 64 rows x N) or the (nQ, nK) block grid."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestOutput(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(t, torch.Tensor):
                    LargestOutput.largest = max(LargestOutput.largest, t.numel())
            return out

    monkeypatch.setattr(window_module, "PAIRS_PER_CHUNK", 1 << 16)
    grid = (2, 24, 32)
    n = 2 * 24 * 32
    inputs = random_inputs(grid, batch=1, heads=1, head_dim=8)
    method = build_method("clear", dict(radius=6, temporal_radius=1))
    with LargestOutput():
        pattern = method.plan(inputs.q, inputs.k, make_call(grid))
        density = pattern.density()
        pattern.to_index_table()
    assert 0.0 < density < 0.2
    assert LargestOutput.largest <= 64 * n < n * n // 16
    # What a pattern cache counts for it: block map, coordinates, flags and counts, not token pairs.
    cache = PatternCache(refresh_every=1)
    cache.get_or_plan_static("clear", lambda: pattern)
    assert pattern.element_mask.nbytes() < cache.memory_bytes() < n * n // 64


def test_clear_pattern_prunes_blocks_and_masks_boundaries_in_token_order():
    grid = (2, 16, 16)
    pattern = plan("clear", dict(radius=3, temporal_radius=0), grid)
    raster_window = local_window_mask(grid, 3, 0, None)
    order = pattern.token_order
    assert torch.equal(pattern.element_mask.to_dense()[0, 0], raster_window[order][:, order])
    blocks = pattern.block_mask[0, 0]
    assert not blocks.all()  # whole blocks outside every circle are skipped
    # Exactly the allowed pairs are computed: block pruning drops nothing the circle allows.
    assert torch.equal(pattern.to_element_mask()[0, 0], pattern.element_mask.to_dense()[0, 0])


# ----------------------------------------------------------------------------------------------- sparse


def test_sparse_keeps_top_fraction_plus_structural_blocks():
    grid = (4, 8, 8)  # raster order with 64-token blocks: block t is frame t
    pattern = plan("sparse", dict(density=0.25, reorder="none", neighbours=True, first_frame_sink=True), grid)
    mask = pattern.block_mask
    frames = torch.arange(4)
    neighbours = (frames[:, None] - frames[None, :]).abs() <= 1
    assert mask[..., neighbours].all() and mask[..., :, 0].all()
    counts = mask.sum(-1)
    assert (counts >= 1).all() and (counts <= 4).all()


def test_sparse_top_k_and_mass_are_best_first_prefixes():
    grid = (1, 16, 32)  # 8 blocks of 64
    inputs = random_inputs(grid, batch=1, heads=2, head_dim=8, seed=5)
    common = dict(reorder="none", neighbours=False, first_frame_sink=False)
    call = make_call(grid)
    top_only = build_method("sparse", dict(density=0.25, **common)).plan(inputs.q, inputs.k, call).block_mask
    with_mass = build_method("sparse", dict(density=0.25, mass=0.999, **common)).plan(inputs.q, inputs.k, call)
    q_bar = inputs.q.view(1, 2, 8, 64, 8).mean(3)
    k_bar = inputs.k.view(1, 2, 8, 64, 8).mean(3)
    probs = torch.softmax(q_bar @ k_bar.transpose(-1, -2) / math.sqrt(8), -1)
    ranks = probs.argsort(-1, descending=True).argsort(-1)
    diagonal = torch.eye(8, dtype=torch.bool)
    assert torch.equal(top_only, (ranks < 2) | diagonal)
    sorted_probs = probs.sort(-1, descending=True).values
    needed = ((sorted_probs.cumsum(-1) - sorted_probs) < 0.999).sum(-1, keepdim=True)
    assert torch.equal(with_mass.block_mask, (ranks < needed.clamp(min=2)) | diagonal)


# ----------------------------------------------------------------------------------------------- reordering


@pytest.mark.parametrize("grid", [(1, 1, 1), (1, 9, 13), (3, 8, 8), (5, 6, 13), (2, 30, 52)])
@pytest.mark.parametrize("order_of", [hilbert_order, lambda g: patch_order(g, 8, 8), lambda g: patch_order(g, 8, 16)])
def test_reorder_round_trips_exactly(grid, order_of):
    order = order_of(grid)
    n = math.prod(grid)
    assert torch.equal(order.sort().values, torch.arange(n))
    x = torch.randn(2, 3, n, 4)
    pattern = BlockPattern(torch.ones(1, 1, 1, 1, dtype=torch.bool), max(n, 1), n, token_order=order)
    assert torch.equal(restore_token_order(reorder_tokens(x, order), pattern), x)


@pytest.mark.parametrize("grid", [(1, 16, 16), (8, 8, 8)])
def test_hilbert_order_steps_to_a_grid_neighbour(grid):
    coords = grid_coords(grid)[hilbert_order(grid)]
    assert ((coords[1:] - coords[:-1]).abs().sum(-1) == 1).all()


def test_patch_order_makes_blocks_spatial_squares():
    coords = grid_coords((2, 16, 24))[patch_order((2, 16, 24), 8, 8)].view(-1, 64, 3)
    extent = coords.amax(1) - coords.amin(1)
    assert (extent == torch.tensor([0, 7, 7])).all()
