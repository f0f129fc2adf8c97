"""Rendering a block pattern for the app: one pixel square per block, brightness = computed share."""

import numpy as np
import pytest
import torch

from method_cases import make_call, random_inputs
from swiftdit.methods import build_method
from swiftdit.pattern import BlockPattern
from swiftdit.visualize import KEPT_COLOUR, SKIPPED_COLOUR, block_fill, render_block_pattern


def test_renders_the_chosen_head_block_by_block():
    mask = torch.zeros(1, 2, 3, 3, dtype=torch.bool)
    mask[0, 1, 0, 2] = True
    pattern = BlockPattern(mask, 16, 40)
    image = render_block_pattern(pattern, head=1, pixels_per_block=5)
    assert image.shape == (15, 15, 3) and image.dtype == np.uint8
    assert (image[0:5, 10:15] == KEPT_COLOUR).all()
    assert (image[5:, :] == SKIPPED_COLOUR).all()
    assert (render_block_pattern(pattern, head=0) == SKIPPED_COLOUR).all()


def test_boundary_blocks_show_their_computed_share():
    grid = (1, 16, 16)
    inputs = random_inputs(grid, batch=1, heads=1)
    pattern = build_method("clear", dict(radius=5)).plan(inputs.q, inputs.k, make_call(grid))
    fill = block_fill(pattern)
    assert fill.max() <= 1.0 and ((fill > 0) & (fill < 1)).any()
    # The shares weighted by block area add up to the pattern's density.
    assert float(fill.mean()) == pytest.approx(pattern.density(), rel=1e-6)


def test_rejects_non_positive_pixels_per_block():
    pattern = BlockPattern(torch.ones(1, 1, 2, 2, dtype=torch.bool), 16, 32)
    with pytest.raises(ValueError, match="pixels_per_block"):
        render_block_pattern(pattern, pixels_per_block=0)
