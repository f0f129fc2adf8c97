"""Forced forward configs (launch_forward(config=...)): the TMA-descriptor path and the pointer path give the
reference's output and LSE on ragged ends, empty rows, text columns with padding and element masks."""

import math

import pytest
import torch
from kernel_cases import (
    assert_lse_close,
    interpreter_only,
    qkv,
    random_block_mask,
    relative_error,
)
from swiftdit.kernels.block_sparse_attention import (
    block_mask_to_index_table,
    block_sparse_attention_reference,
)
from swiftdit.kernels.block_sparse_attention.triton_ops import (
    ElementMask,
    TextKeys,
    launch_forward,
)

POINTER = {"SUB": 32, "num_warps": 4, "num_stages": 1, "USE_TMA": False, "WARP_SPEC": False}
TMA = dict(POINTER, USE_TMA=True)


@interpreter_only
@pytest.mark.parametrize("config", [POINTER, TMA], ids=["pointer", "tma"])
@pytest.mark.parametrize("with_text,with_emask", [(False, False), (True, False), (False, True)])
def test_forced_config_matches_reference(config, with_text, with_emask):
    b, h, n, d, block = 2, 2, 150, 32, 64
    q, k, v = qkv(b, h, n, d, torch.float16)
    mask = random_block_mask(b, h, math.ceil(n / block), 0.4, empty_rows=1)
    kv_indices, kv_counts = block_mask_to_index_table(mask)
    reference_args, text, emask = {}, None, None
    if with_text:
        text_k, text_v = qkv(b, h, 40, d, torch.float16, seed=3)[:2]
        key_mask = torch.rand(b, 40, generator=torch.Generator().manual_seed(4)) < 0.7
        key_mask[1] = False  # no valid text key in batch 1: its empty rows stay empty
        text = TextKeys(text_k, text_v, key_mask.to(torch.uint8))
        reference_args = {"text_k": text_k.float(), "text_v": text_v.float(), "text_key_mask": key_mask}
    if with_emask:
        rows = torch.arange(n)
        element_mask = ((rows[:, None] - rows[None, :]).abs() <= 45)[None, None]
        emask = ElementMask.from_bool(element_mask, block)
        reference_args = {"element_mask": element_mask}
    scale = 1.0 / math.sqrt(d)
    out, lse = launch_forward(q, k, v, kv_indices, kv_counts, block, scale, text, emask, config=config)
    ref, ref_lse = block_sparse_attention_reference(q.float(), k.float(), v.float(), kv_indices, kv_counts, block,
                                                    scale=scale, **reference_args)
    assert relative_error(out, ref) < 1e-2
    assert_lse_close(lse, ref_lse)


@interpreter_only
@pytest.mark.parametrize("scale", [-0.3, 0.0])
def test_non_positive_scale(scale):
    """The kernel takes the row max before scaling; the wrapper folds a sign (or a zero scale) into q."""
    b, h, n, d, block = 1, 2, 96, 32, 32
    q, k, v = qkv(b, h, n, d, torch.float16)
    mask = random_block_mask(b, h, 3, 0.5)
    kv_indices, kv_counts = block_mask_to_index_table(mask)
    out, lse = launch_forward(q, k, v, kv_indices, kv_counts, block, scale, None, None)
    ref, ref_lse = block_sparse_attention_reference(q.float(), k.float(), v.float(), kv_indices, kv_counts, block,
                                                    scale=scale)
    assert relative_error(out, ref) < 1e-2
    assert_lse_close(lse, ref_lse)


def test_config_that_cannot_run_is_refused():
    q, k, v = qkv(1, 1, 64, 32, torch.float16)
    kv_indices, kv_counts = block_mask_to_index_table(torch.ones(1, 1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="SUB 64 > block 32"):
        launch_forward(q, k, v, kv_indices, kv_counts, 32, 0.1, None, None, config=dict(POINTER, SUB=64))
