"""How model attention masks are split into text-key masks and visual element masks."""

import pytest
import torch

from swiftdit.intercept import UnsupportedCall, split_attention_mask, text_row_mask
from swiftdit.layout import TokenLayout

LAYOUT = TokenLayout((2, 2, 2), 3, "last")  # 8 visual tokens, then 3 text tokens
S, VIS, TXT = LAYOUT.seq_len, LAYOUT.visual_slice, LAYOUT.text_slice


def key_padding(batch=2):
    mask = torch.ones(batch, S, dtype=torch.bool)
    mask[1, -1] = False  # sample 1 has one padded text token
    return mask


def test_no_mask():
    assert split_attention_mask(None, 2, S, VIS, TXT) == (None, None)


@pytest.mark.parametrize("shape", ["2d", "4d_key", "4d_full"])
def test_key_padding_becomes_a_text_key_mask(shape):
    mask = key_padding()
    if shape == "4d_key":
        mask = mask[:, None, None, :]
    elif shape == "4d_full":  # HunyuanVideo 1.5 builds a dense (B, 1, S, S) mask from the padding
        mask = mask[:, None, None, :].expand(2, 1, S, S)
    text_keys, visual = split_attention_mask(mask, 2, S, VIS, TXT)
    assert visual is None
    assert text_keys.tolist() == [[True, True, True], [True, True, False]]


def test_all_true_masks_vanish():
    assert split_attention_mask(torch.ones(2, S, dtype=torch.bool), 2, S, VIS, TXT) == (None, None)


def test_block_causal_visual_mask_is_kept():
    frame = torch.arange(8) // 4
    visual = frame[:, None] >= frame[None, :]  # chunk-causal over two frames of 4 tokens
    mask = torch.ones(1, 1, S, S, dtype=torch.bool)
    mask[0, 0, :8, :8] = visual
    text_keys, visual_mask = split_attention_mask(mask, 2, S, VIS, TXT)
    assert text_keys is None
    assert torch.equal(visual_mask[0, 0], visual)


def test_square_two_dimensional_mask_is_query_by_key():
    frame = torch.arange(S) // 4
    chunk_causal = frame[:, None] >= frame[None, :]
    chunk_causal[:, 8:] = True  # text columns visible to all
    text_keys, visual_mask = split_attention_mask(chunk_causal, 2, S, VIS, TXT)
    assert text_keys is None
    assert torch.equal(visual_mask[0, 0], chunk_causal[:8, :8])


def test_additive_zero_minus_inf_mask_is_boolean():
    additive = torch.zeros(2, 1, 1, S)
    additive[1, ..., -1] = float("-inf")
    text_keys, _ = split_attention_mask(additive, 2, S, VIS, TXT)
    assert text_keys.tolist() == [[True, True, True], [True, True, False]]


@pytest.mark.parametrize(
    "mask, reason",
    [
        (torch.full((2, 1, 1, S), -0.5), "additive attention mask with finite non-zero biases"),
        (torch.ones(2, 4, 1, S, dtype=torch.bool).index_put_((torch.tensor([0]), torch.tensor([1])), torch.tensor(False)),
         "per-head attention mask"),
        (torch.ones(2, S, dtype=torch.bool).index_put_((torch.tensor([0]), torch.tensor([0])), torch.tensor(False)),
         "padding mask on visual tokens"),
    ],
)
def test_masks_that_cannot_be_sparsified_exactly_are_refused(mask, reason):
    with pytest.raises(UnsupportedCall, match=reason):
        split_attention_mask(mask, 2, S, VIS, TXT)


def test_text_columns_that_differ_per_visual_row_are_refused():
    mask = torch.ones(1, 1, S, S, dtype=torch.bool)
    mask[0, 0, 0, 9] = False
    with pytest.raises(UnsupportedCall, match="text-column mask that differs"):
        split_attention_mask(mask, 1, S, VIS, TXT)


def test_text_rows_of_the_mask():
    full = torch.rand(2, 1, S, S) > 0.5
    assert torch.equal(text_row_mask(full, 2, S, TXT), full[:, :, TXT])
    assert text_row_mask(key_padding(), 2, S, TXT).shape == (2, 1, 1, S)
