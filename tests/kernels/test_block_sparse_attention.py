"""Triton block-sparse attention against the plain-PyTorch reference: forward, LSE and gradients."""

import math

import pytest
import torch
from kernel_cases import (
    assert_lse_close,
    finite_lse_sum,
    interpreter_only,
    leaf_copies,
    qkv,
    random_block_mask,
    relative_error,
)

from swiftdit.kernels.block_sparse_attention import (
    block_mask_to_index_table,
    block_sparse_attention,
    block_sparse_attention_reference,
)
from swiftdit.kernels.block_sparse_attention.gluon_hopper import gluon_forward_takes


def compare_with_reference(q, k, v, block_mask, block, *, text=None, text_key_mask=None, element_mask=None,
                           lse_weight=0.5, tol=1e-2, estimate_dropped=False):
    """Run both backends on the same values (reference in float32); check out, lse and every gradient."""
    kv_indices, kv_counts = block_mask_to_index_table(block_mask)
    kernel_inputs = leaf_copies([q, k, v, *(text or ())], q.dtype)
    reference_inputs = leaf_copies([q, k, v, *(text or ())], torch.float32)
    out_weight = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(q.device)
    results = []
    for backend, inputs in (("triton", kernel_inputs), ("reference", reference_inputs)):
        text_kv = dict(text_k=inputs[3], text_v=inputs[4], text_key_mask=text_key_mask) if text else {}
        out, lse = block_sparse_attention(*inputs[:3], kv_indices, kv_counts, block, element_mask=element_mask,
                                          backend=backend, estimate_dropped=estimate_dropped, **text_kv)
        loss = (out.float() * out_weight).sum() + lse_weight * finite_lse_sum(lse)
        grads = torch.autograd.grad(loss, inputs)
        results.append((out, lse, grads))
    (out, lse, grads), (ref_out, ref_lse, ref_grads) = results
    assert relative_error(out, ref_out) < tol
    assert_lse_close(lse, ref_lse)
    for name, grad, ref_grad in zip(("q", "k", "v", "text_k", "text_v"), grads, ref_grads):
        assert relative_error(grad, ref_grad) < 2 * tol, f"gradient of {name}"
    return out, lse


CPU_CASES = [
    # (batch, heads, tokens, head_dim, block): ragged ends, an odd head_dim, both kernel block sizes.
    (2, 2, 150, 32, 32),
    (1, 2, 128, 64, 64),
    (1, 3, 97, 40, 32),
]


@interpreter_only
@pytest.mark.parametrize("b,h,n,d,block", CPU_CASES)
def test_per_head_patterns_with_empty_rows(b, h, n, d, block):
    q, k, v = qkv(b, h, n, d, torch.float16)
    mask = random_block_mask(b, h, math.ceil(n / block), 0.4, empty_rows=1)
    out, lse = compare_with_reference(q, k, v, mask, block)
    assert torch.all(out[:, 0, :block] == 0) and torch.all(torch.isneginf(lse[:, 0, :block]))


def padded_text_case(text_len: int, valid_text: float, density: float, empty_rows: int):
    """Two videos of 100 tokens in 32-token blocks, text keys with a random padding mask, a random block mask."""
    b, h, n, d, block = 2, 2, 100, 32, 32
    q, k, v = qkv(b, h, n, d, torch.float16)
    text = qkv(b, h, text_len, d, torch.float16, seed=3)[:2]
    text_key_mask = torch.rand(b, text_len, generator=torch.Generator().manual_seed(4)) < valid_text
    mask = random_block_mask(b, h, math.ceil(n / block), density, empty_rows=empty_rows)
    return (q, k, v, mask, block), text, text_key_mask


@interpreter_only
def test_text_columns_with_padding_and_empty_visual_rows():
    case, text, text_key_mask = padded_text_case(text_len=40, valid_text=0.7, density=0.3, empty_rows=2)
    text_key_mask[1] = False  # batch 1 has no valid text key: its empty visual rows stay empty
    block = case[-1]
    out, lse = compare_with_reference(*case, text=text, text_key_mask=text_key_mask)
    assert torch.isfinite(lse[0]).all(), "with text keys no row of batch 0 is empty"
    assert torch.isneginf(lse[1, 0, : 2 * block]).all()


@interpreter_only
def test_element_mask_on_boundary_blocks():
    b, h, n, d, block = 1, 2, 150, 32, 32
    q, k, v = qkv(b, h, n, d, torch.float16)
    rows = torch.arange(n)
    # A radius mask: whole blocks near the diagonal, partial ones at its edge (CLEAR-style).
    element_mask = ((rows[:, None] - rows[None, :]).abs() <= 45)[None, None]
    mask = random_block_mask(b, h, math.ceil(n / block), 0.6)
    compare_with_reference(q, k, v, mask, block, element_mask=element_mask)


@interpreter_only
@pytest.mark.parametrize("b,h,n,d,block", CPU_CASES)
def test_pooled_columns_of_dropped_blocks(b, h, n, d, block):
    """estimate_dropped: forward, LSE and gradients (through the block means) against the reference, with
    ragged ends, an empty kept row (it sees only pooled columns) and a fully kept row (no pooled column)."""
    q, k, v = qkv(b, h, n, d, torch.float16)
    text = qkv(b, h, 9, d, torch.float16, seed=3)[:2] if n % block else None
    mask = random_block_mask(b, h, math.ceil(n / block), 0.4, empty_rows=1)
    mask[:, -1, -1] = True  # the last query block of the last head keeps every block
    out, lse = compare_with_reference(q, k, v, mask, block, text=text, estimate_dropped=True)
    assert torch.isfinite(lse).all(), "every row sees at least a pooled column"
    kv_indices, kv_counts = block_mask_to_index_table(mask)
    plain, _ = block_sparse_attention(q, k, v, kv_indices, kv_counts, block, text_k=text and text[0],
                                      text_v=text and text[1], backend="triton")
    last_rows = slice((math.ceil(n / block) - 1) * block, n)
    torch.testing.assert_close(out[:, -1, last_rows], plain[:, -1, last_rows], rtol=0, atol=0)


@interpreter_only
def test_pooled_columns_with_text_padding_and_element_mask():
    """The pooled columns are independent of the text padding mask and of an element mask inside kept blocks."""
    case, text, text_key_mask = padded_text_case(text_len=12, valid_text=0.6, density=0.4, empty_rows=1)
    rows = torch.arange(case[0].shape[2])
    element_mask = ((rows[:, None] - rows[None, :]).abs() <= 40)[None, None]
    compare_with_reference(*case, text=text, text_key_mask=text_key_mask, element_mask=element_mask,
                           estimate_dropped=True)


@interpreter_only
def test_shared_table_broadcast_and_strided_inputs():
    b, h, n, d, block = 2, 3, 96, 32, 32
    # (B, N, H, D) storage viewed as (B, H, N, D), as the attention processors hand it over.
    q, k, v = (x.transpose(1, 2) for x in qkv(b, n, h, d, torch.float16))
    mask = random_block_mask(1, 1, math.ceil(n / block), 0.5)
    out, _ = compare_with_reference(q, k, v, mask, block)
    # The output is laid out like q, so that the processor's flatten of the heads needs no copy.
    assert out.transpose(1, 2).is_contiguous()


@interpreter_only
def test_all_rows_empty_gives_zeros_and_zero_gradients():
    b, h, n, d, block = 1, 2, 64, 32, 32
    q, k, v = qkv(b, h, n, d, torch.float16, grad=True)
    mask = torch.zeros(b, h, 2, 2, dtype=torch.bool)
    kv_indices, kv_counts = block_mask_to_index_table(mask)
    out, lse = block_sparse_attention(q, k, v, kv_indices, kv_counts, block, backend="triton")
    assert torch.all(out == 0) and torch.all(torch.isneginf(lse))
    grads = torch.autograd.grad(out.float().sum(), (q, k, v))
    assert all(torch.all(g == 0) for g in grads)


def test_auto_backend_on_cpu_is_the_reference():
    q, k, v = qkv(1, 1, 64, 16, torch.float32)
    kv_indices, kv_counts = block_mask_to_index_table(torch.ones(1, 1, 1, 1, dtype=torch.bool))
    out, _ = block_sparse_attention(q, k, v, kv_indices, kv_counts, 64)
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert relative_error(out, dense) < 1e-5


def test_masked_sdpa_path_without_lse_matches_the_reference():
    """return_lse=False on the CPU takes PyTorch's fused SDPA with the token mask: same output, empty rows 0."""
    b, h, n, d, block, text_len = 2, 2, 100, 32, 32, 12
    q, k, v = qkv(b, h, n, d, torch.float32)
    text_k, text_v = qkv(b, h, text_len, d, torch.float32, seed=3)[:2]
    text_key_mask = torch.ones(b, text_len, dtype=torch.bool)
    text_key_mask[1] = False  # batch 1: no valid text key, so its empty visual rows stay empty
    element_mask = ((torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs() <= 45)[None, None]
    kv_indices, kv_counts = block_mask_to_index_table(random_block_mask(b, h, math.ceil(n / block), 0.4, empty_rows=1))
    arguments = dict(text_k=text_k, text_v=text_v, text_key_mask=text_key_mask, element_mask=element_mask)
    expected, expected_lse = block_sparse_attention_reference(q, k, v, kv_indices, kv_counts, block, **arguments)
    out, lse = block_sparse_attention(q, k, v, kv_indices, kv_counts, block, return_lse=False, **arguments)
    assert lse is None
    empty_rows = torch.isneginf(expected_lse)
    assert empty_rows.any() and torch.all(out[empty_rows] == 0)
    assert relative_error(out, expected) < 1e-5


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(backend="cuda"), "backend must be one of"),
        (dict(block_size=48, backend="triton"), "block_size in"),
        (dict(text_k=torch.zeros(1, 1, 4, 16)), "text_k and text_v must be given together"),
        (dict(element_mask=torch.ones(1, 1, 64, 64)), "element_mask must be bool"),
        (dict(kv_counts=torch.ones(1, 1, 2, dtype=torch.int32)), "kv_counts must have shape"),
        (dict(estimate_dropped=True, scale=-0.25), "estimate_dropped=True needs a positive scale"),
    ],
)
def test_bad_arguments_name_themselves(change, message):
    q, k, v = qkv(1, 1, 96, 16, torch.float32)
    block_size = change.pop("block_size", 32)
    kv_indices, kv_counts = block_mask_to_index_table(torch.ones(1, 1, 96 // block_size, 96 // block_size,
                                                                 dtype=torch.bool))
    kv_counts = change.pop("kv_counts", kv_counts)
    with pytest.raises(ValueError, match=message):
        block_sparse_attention(q, k, v, kv_indices, kv_counts, block_size, **change)


GPU_CASES = [
    # Wan-like head_dim 128 and block 128 with a ragged end; block 64; head_dim 64 (e.g. smaller DiTs).
    (1, 4, 8190, 128, 128, 0),
    (2, 2, 4000, 128, 64, 256),
    (1, 4, 6000, 64, 128, 0),
]


@pytest.mark.gpu
@pytest.mark.parametrize("b,h,n,d,block,text_len", GPU_CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gpu_real_shapes(b, h, n, d, block, text_len, dtype):
    q, k, v = qkv(b, h, n, d, dtype, device="cuda")
    mask = random_block_mask(b, h, math.ceil(n / block), 0.15, empty_rows=1).cuda()
    text = qkv(b, h, text_len, d, dtype, device="cuda", seed=5)[:2] if text_len else None
    compare_with_reference(q, k, v, mask, block, text=text, tol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("b,h,n,d,block,text_len", GPU_CASES)
def test_gpu_pooled_columns_of_dropped_blocks(b, h, n, d, block, text_len):
    q, k, v = qkv(b, h, n, d, torch.bfloat16, device="cuda")
    mask = random_block_mask(b, h, math.ceil(n / block), 0.15, empty_rows=1).cuda()
    text = qkv(b, h, text_len, d, torch.bfloat16, device="cuda", seed=5)[:2] if text_len else None
    compare_with_reference(q, k, v, mask, block, text=text, tol=2e-2, estimate_dropped=True)


@pytest.mark.gpu
def test_gpu_element_mask_and_auto_dispatch():
    b, h, n, d, block = 1, 2, 3000, 128, 128
    q, k, v = qkv(b, h, n, d, torch.bfloat16, device="cuda")
    rows = torch.arange(n, device="cuda")
    element_mask = ((rows[:, None] - rows[None, :]).abs() <= 700)[None, None]
    mask = random_block_mask(b, h, math.ceil(n / block), 0.5).cuda()
    compare_with_reference(q, k, v, mask, block, element_mask=element_mask, tol=2e-2)
    kv_indices, kv_counts = block_mask_to_index_table(mask)
    auto_out, _ = block_sparse_attention(q, k, v, kv_indices, kv_counts, block)
    # On an H100 "auto" runs this plain call on the Gluon forward; elsewhere on the Triton kernel.
    expected = "gluon" if gluon_forward_takes(q, k, v, block, text_k=None, has_element_mask=False) else "triton"
    expected_out, _ = block_sparse_attention(q, k, v, kv_indices, kv_counts, block, backend=expected)
    assert torch.equal(auto_out, expected_out), f"auto must pick {expected} for CUDA bf16"
