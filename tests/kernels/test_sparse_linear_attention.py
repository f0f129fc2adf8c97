"""SLA (Triton sparse softmax on selected blocks + block-state linear attention on the rest) against its reference."""

import math

import pytest
import torch
from kernel_cases import (
    assert_lse_close,
    interpreter_only,
    leaf_copies,
    qkv,
    random_block_mask,
    relative_error,
)

from swiftdit.kernels.block_sparse_attention import block_mask_to_index_table
from swiftdit.kernels.sparse_linear_attention import sparse_linear_attention


def compare_with_reference(q, k, v, block_mask, block, feature, *, text=None, tol=1e-2):
    kv_indices, kv_counts = block_mask_to_index_table(block_mask)
    generator = torch.Generator().manual_seed(2)
    weights = [torch.randn(q.shape, generator=generator).to(q.device) for _ in range(2)]
    results = []
    for backend, dtype in (("triton", q.dtype), ("reference", torch.float32)):
        inputs = leaf_copies([q, k, v, *(text or ())], dtype)
        text_kv = dict(text_k=inputs[3], text_v=inputs[4]) if text else {}
        out_sparse, out_linear, lse = sparse_linear_attention(*inputs[:3], kv_indices, kv_counts, block,
                                                              feature=feature, backend=backend, **text_kv)
        loss = (out_sparse.float() * weights[0]).sum() + (out_linear.float() * weights[1]).sum()
        results.append((out_sparse, out_linear, lse, torch.autograd.grad(loss, inputs)))
    (out_s, out_l, lse, grads), (ref_s, ref_l, ref_lse, ref_grads) = results
    assert relative_error(out_s, ref_s) < tol
    assert relative_error(out_l, ref_l) < tol
    assert_lse_close(lse, ref_lse)
    for name, grad, ref_grad in zip(("q", "k", "v", "text_k", "text_v"), grads, ref_grads):
        assert relative_error(grad, ref_grad) < 2 * tol, f"gradient of {name}"
    return out_l


@interpreter_only
@pytest.mark.parametrize("feature", ["softmax", "elu"])
def test_sla_matches_reference_with_ragged_end_and_per_head_patterns(feature):
    b, h, n, d, block = 1, 2, 150, 32, 32
    q, k, v = qkv(b, h, n, d, torch.float16)
    compare_with_reference(q, k, v, random_block_mask(b, h, math.ceil(n / block), 0.3), block, feature)


@interpreter_only
def test_sla_text_columns_and_fully_selected_rows():
    b, h, n, d, block = 1, 2, 128, 32, 64
    q, k, v = qkv(b, h, n, d, torch.float16)
    text = qkv(b, h, 24, d, torch.float16, seed=6)[:2]
    mask = random_block_mask(b, h, 2, 0.3)
    mask[:, :, 0] = True  # query block 0 selects everything: no linear part
    out_linear = compare_with_reference(q, k, v, mask, block, "softmax", text=text)
    assert torch.all(out_linear[:, :, :block] == 0)


def test_unknown_feature_map_is_rejected():
    q, k, v = qkv(1, 1, 64, 16, torch.float32)
    kv_indices, kv_counts = block_mask_to_index_table(torch.ones(1, 1, 1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="feature must be one of"):
        sparse_linear_attention(q, k, v, kv_indices, kv_counts, 64, feature="relu2")


@pytest.mark.gpu
@pytest.mark.parametrize("block", [64, 128])
def test_gpu_sla_real_shape(block):
    b, h, n, d = 1, 2, 4000, 128
    q, k, v = qkv(b, h, n, d, torch.bfloat16, device="cuda")
    mask = random_block_mask(b, h, math.ceil(n / block), 0.1).cuda()
    compare_with_reference(q, k, v, mask, block, "softmax", tol=2e-2)


def compare_fused_linear_branch(q, k, v, block_mask, block, feature, tol):
    """The linear branch alone through the fused Triton kernels, forward and backward, against the reference in
    float32, with a strided gradient of the output."""
    kv_indices, kv_counts = block_mask_to_index_table(block_mask)
    d_out = torch.randn(q.shape[0], q.shape[2], q.shape[1], q.shape[3], generator=torch.Generator().manual_seed(3))
    d_out = d_out.to(q.device).transpose(1, 2)
    results = []
    for backend, dtype in (("triton", q.dtype), ("reference", torch.float32)):
        inputs = leaf_copies([q, k, v], dtype)
        _, out_linear, _ = sparse_linear_attention(*inputs, kv_indices, kv_counts, block, feature=feature,
                                                   backend=backend)
        results.append((out_linear, torch.autograd.grad(out_linear, inputs, d_out.to(dtype))))
    (fused, grads), (expected, expected_grads) = results
    assert relative_error(fused, expected) < tol
    for name, grad, expected_grad in zip("qkv", grads, expected_grads):
        assert relative_error(grad, expected_grad) < 2 * tol, f"gradient of {name}"
    return fused


@interpreter_only
@pytest.mark.parametrize("feature", ["softmax", "elu"])
@pytest.mark.parametrize("b,h,n,d,block", [(1, 2, 150, 32, 32), (2, 1, 128, 40, 64), (1, 1, 300, 32, 128)])
def test_fused_linear_branch(feature, b, h, n, d, block):
    """Ragged end, an odd head dim (padded lanes), a fully selected row (its linear part is 0), strided input;
    at block 128 the backward kernels take each block in two steps of 64 tokens."""
    q, k, v = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in qkv(b, h, n, d, torch.float16))
    mask = random_block_mask(b, h, math.ceil(n / block), 0.3)
    mask[:, :, 0] = True
    fused = compare_fused_linear_branch(q, k, v, mask, block, feature, 1e-2)
    assert torch.all(fused[:, :, :block] == 0)


@pytest.mark.gpu
@pytest.mark.parametrize("block", [64, 128])
@pytest.mark.parametrize("feature", ["softmax", "elu"])
def test_gpu_fused_linear_branch(block, feature):
    b, h, n, d = 1, 2, 4000, 128
    q, k, v = qkv(b, h, n, d, torch.bfloat16, device="cuda")
    compare_fused_linear_branch(q, k, v, random_block_mask(b, h, math.ceil(n / block), 0.1).cuda(), block, feature,
                                2e-2)
