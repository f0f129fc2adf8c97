"""BlockPattern's density: with CLEAR's element mask it is counted a slice of rows at a time (a whole (N, N)
temporary would not fit at 720p); the slices must add up to the whole mask's count."""

import pytest
import torch

from swiftdit.pattern import BlockPattern


@pytest.mark.parametrize("num_tokens, block_size, rows_per_slice", [(300, 64, 128), (1000, 128, 256), (64, 64, 64)])
def test_element_density_by_slices_equals_whole_mask(num_tokens, block_size, rows_per_slice):
    generator = torch.Generator().manual_seed(num_tokens)
    num_blocks = -(-num_tokens // block_size)
    block_mask = torch.rand(2, 3, num_blocks, num_blocks, generator=generator) < 0.5
    element_mask = torch.rand(1, 3, num_tokens, num_tokens, generator=generator) < 0.7
    pattern = BlockPattern(block_mask, block_size, num_tokens, element_mask=element_mask)
    whole = pattern.to_element_mask().to(torch.float64).mean(dim=(-2, -1))
    assert torch.allclose(pattern._element_density_per_head(rows_per_slice=rows_per_slice), whole)
    assert torch.allclose(pattern.density_per_head(), whole)


def test_density_is_computed_once_per_pattern_and_anew_for_a_replaced_one():
    import dataclasses

    block_mask = torch.ones(1, 2, 4, 4, dtype=torch.bool)
    pattern = BlockPattern(block_mask, 64, 256)
    first = pattern.density_per_head()
    assert pattern.density_per_head() is first  # the runtime records it on every call the pattern serves
    emptier = dataclasses.replace(pattern, block_mask=block_mask & ~torch.eye(4, dtype=torch.bool))
    assert torch.allclose(emptier.density_per_head(), torch.full((1, 2), 0.75, dtype=torch.float64))
    assert torch.equal(pattern.density_per_head(), torch.ones(1, 2, dtype=torch.float64))
