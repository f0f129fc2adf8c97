"""Block mask -> index table: the Triton row compaction against the tensor-op reference, and the reference
against its definition (kept ids ascending, then -1)."""

import pytest
import torch
from kernel_cases import interpreter_only

from swiftdit.kernels.block_index_table import block_mask_to_index_table, index_table_reference


def masks(shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=generator) < 0.3
    mask[..., 0, :] = False  # an empty row
    mask[..., 1, :] = True  # a full row
    return mask


def by_definition(mask):
    rows = mask.reshape(-1, mask.shape[-1])
    table = torch.full(rows.shape, -1, dtype=torch.int32)
    for index, row in enumerate(rows):
        kept = row.nonzero().flatten()
        table[index, : kept.numel()] = kept.to(torch.int32)
    return table.view(mask.shape), mask.sum(-1, dtype=torch.int32)


@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 1, 5, 33), (1, 2, 3, 64)])
def test_reference_matches_the_definition(shape):
    mask = masks(shape)
    for actual, expected in zip(index_table_reference(mask), by_definition(mask)):
        assert actual.dtype == torch.int32 and torch.equal(actual, expected)


@interpreter_only
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 1, 5, 33), (1, 2, 4, 130)])
def test_triton_matches_the_reference(shape):
    mask = masks(shape, seed=1)
    broadcast = mask[:, :1].expand(mask.shape)  # a static pattern shared by heads arrives expanded
    for case in (mask, broadcast):
        for actual, expected in zip(block_mask_to_index_table(case, backend="triton"), index_table_reference(case)):
            assert torch.equal(actual, expected)


def test_bad_arguments_name_the_option():
    with pytest.raises(ValueError, match="backend must be one of"):
        block_mask_to_index_table(torch.ones(1, 2, dtype=torch.bool), backend="cuda")
    with pytest.raises(ValueError, match="block_mask must be a bool tensor"):
        block_mask_to_index_table(torch.ones(1, 2))


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(1, 12, 1182, 1182), (1, 24, 929, 929), (2, 1, 256, 256)])
def test_gpu_triton_matches_the_reference_at_real_shapes(shape):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(2)) < 0.12
    mask = mask.cuda()
    for actual, expected in zip(block_mask_to_index_table(mask), index_table_reference(mask)):
        assert torch.equal(actual, expected)
