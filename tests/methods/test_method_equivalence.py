"""With every block kept, each method is exact attention (to fp32 tolerance), whatever its reordering,
for grids that are not multiples of the block, with text keys (some padded) and a batch of two."""

import pytest
import torch

from method_cases import ALL_BLOCKS_OPTIONS, dense_attention, make_call, random_inputs
from swiftdit.methods import build_method

GRIDS = [(2, 6, 11), (1, 9, 13)]


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("name", sorted(ALL_BLOCKS_OPTIONS))
def test_all_blocks_kept_equals_dense(name, grid):
    inputs = random_inputs(grid, text_len=5)
    call = make_call(grid, text_len=5)
    method = build_method(name, ALL_BLOCKS_OPTIONS[name])
    pattern = method.plan(inputs.q, inputs.k, call)
    assert pattern.density() == pytest.approx(1.0)
    out = method.attend(inputs, pattern, call)
    assert out.shape == inputs.q.shape and out.dtype == inputs.q.dtype
    torch.testing.assert_close(out, dense_attention(inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [dict(rectify="pooled", pooled_estimate="block"),
                                     dict(rectify="history", refresh_every=2)])
def test_rectified_variants_with_all_blocks_equal_dense(options):
    grid = (2, 6, 11)
    inputs = random_inputs(grid, text_len=5)
    call = make_call(grid, text_len=5)
    method = build_method("rectified", dict(density=1.0, **options))
    pattern = method.plan(inputs.q, inputs.k, call)
    for _ in range(2):  # history: the refresh step and a reusing step
        torch.testing.assert_close(method.attend(inputs, pattern, call), dense_attention(inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(ALL_BLOCKS_OPTIONS))
def test_sparse_patterns_differ_from_dense(name):
    """The other side of the equivalence: with default options on a larger video the output changes."""
    grid = (6, 16, 16)
    inputs = random_inputs(grid, batch=1, heads=1, head_dim=8)
    call = make_call(grid)
    smaller_blocks = {"radial": dict(block_size=64), "rectified": dict(block_size=64),
                      "draft": dict(pool_h=4, pool_w=8), "clear": dict(radius=4)}
    options = smaller_blocks.get(name, {})
    method = build_method(name, options)
    pattern = method.plan(inputs.q, inputs.k, call)
    assert pattern.density() < 1.0
    assert not torch.allclose(method.attend(inputs, pattern, call), dense_attention(inputs), atol=1e-4)
