"""The merge of split work items (kernels/block_sparse_attention/split_merge.py) against its reference, in
Triton's interpreter, and when the Gluon forward cuts items (gluon_hopper.plan_units)."""

import pytest
import torch
from kernel_cases import interpreter_only

from swiftdit.kernels.block_sparse_attention.gluon_hopper import WorkUnits, plan_units
from swiftdit.kernels.block_sparse_attention.split_merge import merge_pieces, merge_pieces_reference


def test_only_a_last_wave_at_most_half_full_is_cut():
    # Wan 480p at 128-token blocks on 132 SMs: 23 full waves and 36 items, each in 3 pieces.
    assert plan_units(3072, 132) == WorkUnits(3036, 3, 3036 + 36 * 3)
    assert plan_units(3072, 264) == WorkUnits(3072, 1, 3072)  # two lanes per program: a last wave of 168
    assert plan_units(132 * 5, 132) == WorkUnits(660, 1, 660)  # full waves
    assert plan_units(132 + 70, 132) == WorkUnits(202, 1, 202)  # a last wave over half full
    assert plan_units(6, 264) == WorkUnits(0, 4, 24)  # a single small wave: at most MAX_PIECES pieces
    assert plan_units(6, 264, max_pieces=1) == WorkUnits(6, 1, 6)


@interpreter_only
@pytest.mark.parametrize("layout", ["bhnd", "bnhd"])
def test_merge_matches_reference(layout):
    """Two (batch, head) pairs of 3 query blocks of 16 rows (a ragged last one), the last 4 items split in 3
    pieces: some pieces empty (-inf), one row empty in every piece (stays zeros and -inf)."""
    b, h, n, d, block, split, whole = 1, 2, 40, 16, 16, 3, 2
    generator = torch.Generator().manual_seed(0)
    items = b * h * 3 - whole
    part_out = torch.randn(items * split, block, d, generator=generator)
    part_lse = torch.randn(items * split, block, generator=generator) * 3
    part_lse[1] = float("-inf")  # an empty piece
    part_lse[3:6, 5] = float("-inf")  # row 5 of split item 1 empty in all its pieces
    part_out[part_lse == float("-inf")] = 0.0
    out = torch.full((b, h, n, d), 7.0) if layout == "bhnd" else torch.full((b, n, h, d), 7.0).transpose(1, 2)
    lse = torch.full((b, h, n), 7.0)
    merge_pieces(part_out, part_lse, out, lse, whole, split, block)
    ref_out, ref_lse = merge_pieces_reference(part_out.view(items, split, block, d), part_lse.view(items, split, block))
    for t in range(items):
        item = whole + t
        head, q_block = divmod(item, 3)
        rows = slice(q_block * block, min((q_block + 1) * block, n))
        valid = rows.stop - rows.start
        torch.testing.assert_close(out[0, head, rows], ref_out[t, :valid], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lse[0, head, rows], ref_lse[t, :valid], rtol=1e-5, atol=1e-5)
    # Split item 1 is item 3: head 1, query block 0, whose row 5 is empty.
    assert torch.all(out[0, 1, 5] == 0) and lse[0, 1, 5] == float("-inf")
    assert torch.all(out[0, 0, :32] == 7.0) and torch.all(lse[0, 0, :32] == 7.0)  # the whole items: untouched
    assert not torch.any(out[0, 0, 32:] == 7.0) and not torch.any(out[0, 1] == 7.0)


def test_reference_merges_like_one_softmax():
    """Two pieces' normalised outputs and LSEs merge into the softmax over their union of keys."""
    generator = torch.Generator().manual_seed(1)
    scores, values = torch.randn(4, 10, generator=generator), torch.randn(10, 3, generator=generator)
    pieces = [(torch.softmax(scores[:, cols], -1) @ values[cols], torch.logsumexp(scores[:, cols], -1))
              for cols in (slice(0, 4), slice(4, 10))]
    part_out, part_lse = (torch.stack([piece[i] for piece in pieces])[None] for i in (0, 1))
    out, lse = merge_pieces_reference(part_out, part_lse)
    torch.testing.assert_close(out[0], torch.softmax(scores, -1) @ values)
    torch.testing.assert_close(lse[0], torch.logsumexp(scores, -1))
