"""The local-window element mask (LocalWindowMask: per-token coordinates, no (N, N) tensor): kernel mode
against the reference, and block flags from coordinates against those of the dense mask."""

import pytest
import torch
from kernel_cases import interpreter_only, qkv
from test_block_sparse_attention import compare_with_reference

from swiftdit.kernels.block_sparse_attention import (
    LocalWindowMask,
    block_mask_to_index_table,
    block_sparse_attention,
    window_block_counts,
    window_dense_mask,
)
from swiftdit.kernels.block_sparse_attention.triton_ops import ElementMask
from swiftdit.methods.blocking import grid_coords, token_order


def dense_window(coords, radius, temporal_radius):
    """The window as CLEAR's former (N, N) builder wrote it: int64 offsets, |dt| <= tr, dy^2 + dx^2 < r^2."""
    offset = coords[:, None, :].long() - coords[None, :, :].long()
    return (offset[..., 0].abs() <= temporal_radius) & (offset[..., 1] ** 2 + offset[..., 2] ** 2 < radius**2)


def window_coords(grid, reorder, block):
    coords = grid_coords(grid)
    order = token_order(reorder, grid, block, "cpu")
    return (coords if order is None else coords[order]).to(torch.int32)


def flags_from_dense(mask, block):
    emask = ElementMask.from_bool(mask[None, None], block)
    n = mask.shape[0]
    n_blocks = -(-n // block)
    padded = torch.nn.functional.pad(mask, (0, n_blocks * block - n, 0, n_blocks * block - n))
    touched = padded.view(n_blocks, block, n_blocks, block).any(dim=3).any(dim=1)
    return touched, emask.block_full[0, 0].bool()


GRIDS = [(2, 9, 11), (1, 16, 16), (3, 7, 13), (2, 12, 10)]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("reorder", ["none", "patch", "hilbert"])
@pytest.mark.parametrize("radius,temporal_radius", [(1, 0), (3, 0), (4, 1), (6, 2), (30, 1)])
@pytest.mark.parametrize("block", [32, 64])
def test_block_flags_from_coords_match_dense_mask(grid, reorder, radius, temporal_radius, block):
    coords = window_coords(grid, reorder, block)
    mask = dense_window(coords, radius, temporal_radius)
    assert torch.equal(window_dense_mask(coords, radius, temporal_radius), mask)
    touched, full = LocalWindowMask(coords, radius, temporal_radius).block_classes(block)
    ref_touched, ref_full = flags_from_dense(mask, block)
    assert torch.equal(touched, ref_touched)
    assert torch.equal(full, ref_full)
    # Small chunks (one block row at a time) give the same counts as one chunk.
    counts = window_block_counts(coords, radius, temporal_radius, block)
    assert torch.equal(window_block_counts(coords, radius, temporal_radius, block, pairs_per_chunk=1), counts)
    assert int(counts.sum()) == int(mask.sum())
    table, table_counts = block_mask_to_index_table(touched)
    ref_table, ref_counts = block_mask_to_index_table(ref_touched)
    assert torch.equal(table, ref_table) and torch.equal(table_counts, ref_counts)


def test_window_mask_densifies_on_request_and_stores_no_token_pairs():
    coords = window_coords((2, 6, 7), "patch", 32)
    window = LocalWindowMask(coords, 3, 1)
    assert torch.equal(window.to_dense(), dense_window(coords, 3, 1)[None, None])
    assert window.nbytes() == coords.numel() * 4  # nothing (N, N) stored
    full = window.with_block_full(32).block_full
    assert full.shape == (1, 1, 3, 3) and full.dtype == torch.uint8
    assert window.nbytes() < 84 * 84  # with the cached block counts


WINDOW_CASES = [
    # (grid, block, radius, temporal_radius, reorder, head_dim): 2 frames, ragged N, partially cut blocks.
    ((2, 9, 11), 32, 11, 0, "none", 32),
    ((2, 9, 11), 32, 8, 1, "patch", 40),
    ((2, 10, 13), 64, 9, 1, "hilbert", 32),
]


@interpreter_only
@pytest.mark.parametrize("grid,block,radius,temporal_radius,reorder,d", WINDOW_CASES)
@pytest.mark.parametrize("with_text", [False, True])
def test_window_kernel_matches_reference(grid, block, radius, temporal_radius, reorder, d, with_text):
    coords = window_coords(grid, reorder, block)
    n = coords.shape[0]
    assert n % block  # ragged end
    touched, full = LocalWindowMask(coords, radius, temporal_radius).block_classes(block)
    assert bool((touched & ~full).any()) and bool(full.any())  # blocks cut by the circle, and whole ones
    window = LocalWindowMask(coords, radius, temporal_radius, full.to(torch.uint8)[None, None])
    q, k, v = qkv(1, 2, n, d, torch.float16, seed=3)
    text, text_key_mask = None, None
    if with_text:
        text = qkv(1, 2, 7, d, torch.float16, seed=4)[:2]
        text_key_mask = torch.tensor([[True, True, False, True, True, True, False]])
    mask = touched[None, None].expand(1, 2, -1, -1)
    out, lse = compare_with_reference(q, k, v, mask, block, text=text, text_key_mask=text_key_mask,
                                      element_mask=window)
    # The same results as the dense element mask on the kernel path.
    kv_indices, kv_counts = block_mask_to_index_table(mask)
    text_kv = dict(text_k=text[0], text_v=text[1], text_key_mask=text_key_mask) if text else {}
    dense = dense_window(coords, radius, temporal_radius)[None, None]
    out_dense, lse_dense = block_sparse_attention(q, k, v, kv_indices, kv_counts, block, element_mask=dense,
                                                  backend="triton", **text_kv)
    assert torch.equal(out, out_dense)
    assert torch.equal(lse, lse_dense)


@interpreter_only
def test_window_without_block_full_is_completed_at_launch():
    coords = window_coords((2, 9, 11), "patch", 32)
    touched, _ = LocalWindowMask(coords, 4, 1).block_classes(32)
    kv_indices, kv_counts = block_mask_to_index_table(touched[None, None])
    q, k, v = qkv(1, 1, coords.shape[0], 32, torch.float16, seed=5)
    out, lse = block_sparse_attention(q, k, v, kv_indices, kv_counts, 32,
                                      element_mask=LocalWindowMask(coords, 4, 1), backend="triton")
    ref_out, ref_lse = block_sparse_attention(q.float(), k.float(), v.float(), kv_indices, kv_counts, 32,
                                              element_mask=dense_window(coords, 4, 1)[None, None],
                                              backend="reference")
    assert (out.float() - ref_out).abs().max() < 1e-2
    assert torch.allclose(lse, ref_lse, atol=2e-3)


def test_window_checks_its_shapes():
    coords = window_coords((1, 4, 4), "none", 32)
    q, k, v = qkv(1, 1, 16, 32, torch.float32)
    kv_indices, kv_counts = block_mask_to_index_table(torch.ones(1, 1, 1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="coordinates for 15 tokens"):
        block_sparse_attention(q, k, v, kv_indices, kv_counts, 32, element_mask=LocalWindowMask(coords[:15], 2, 0))
    with pytest.raises(ValueError, match="block_full"):
        block_sparse_attention(q, k, v, kv_indices, kv_counts, 32,
                               element_mask=LocalWindowMask(coords, 2, 0, torch.ones(1, 1, 2, 2, dtype=torch.uint8)))


@pytest.mark.gpu
@pytest.mark.parametrize("block", [64, 128])
def test_gpu_window_matches_reference_and_dense_mask(block):
    grid = (2, 30, 52)  # 3120 tokens: ragged for both block sizes
    coords = window_coords(grid, "patch", block).cuda()
    touched, full = LocalWindowMask(coords, 9, 1).block_classes(block)
    window = LocalWindowMask(coords, 9, 1, full.to(torch.uint8)[None, None])
    q, k, v = qkv(1, 2, coords.shape[0], 128, torch.bfloat16, device="cuda")
    text = qkv(1, 2, 77, 128, torch.bfloat16, device="cuda", seed=5)[:2]
    mask = touched[None, None].expand(1, 2, -1, -1)
    out, lse = compare_with_reference(q, k, v, mask, block, text=text, element_mask=window, tol=2e-2)
    kv_indices, kv_counts = block_mask_to_index_table(mask)
    dense = dense_window(coords, 9, 1)[None, None]
    out_dense, lse_dense = block_sparse_attention(q, k, v, kv_indices, kv_counts, block, element_mask=dense,
                                                  text_k=text[0], text_v=text[1])
    assert (out.float() - out_dense.float()).abs().max() < 2e-2
    assert torch.allclose(lse, lse_dense, atol=2e-3)
