"""The optional cuDNN-frontend backend of block-sparse attention: when "auto" takes it, how its inputs are
shaped for NVIDIA's kernel (queries padded to whole blocks, the table expanded per head, a short last key
block), and on a Hopper GPU with the frontend installed, its results against the reference."""

import math

import pytest
import torch
from kernel_cases import assert_lse_close, qkv, random_block_mask, relative_error

from swiftdit.kernels.block_sparse_attention import (
    block_mask_to_index_table,
    block_sparse_attention,
    block_sparse_attention_reference,
    cudnn_frontend,
)


def test_auto_keeps_cpu_calls_and_forcing_it_names_what_it_needs():
    q, k, v = qkv(1, 2, 130, 64, torch.float32)
    kv_indices, kv_counts = block_mask_to_index_table(random_block_mask(1, 2, 3, 0.5))
    assert not cudnn_frontend.cudnn_frontend_takes(q, 64, has_text=False, has_element_mask=False,
                                                   estimate_dropped=False, needs_grad=False)
    with pytest.raises(ValueError, match="backend='cudnn-frontend' needs the cuDNN frontend installed"):
        block_sparse_attention(q, k, v, kv_indices, kv_counts, 64, backend="cudnn-frontend")


def test_inputs_are_shaped_for_the_kernel(monkeypatch):
    """A stand-in for NVIDIA's forward checks the contract its SM90 kernel states (query length a multiple of
    64, int32 tables with one row per (batch, head, query block), block sizes) and answers with the
    reference; the wrapper must hand back (B, H, N, D) and (B, H, N) exactly as the reference does."""
    b, h, n, d, block = 2, 3, 150, 64, 64
    q, k, v = qkv(b, h, n, d, torch.float32)
    mask = random_block_mask(1, h, math.ceil(n / block), 0.5, empty_rows=1)
    kv_indices, kv_counts = block_mask_to_index_table(mask)  # shared by the batch: (1, H, nQ, maxK)
    seen = {}

    def forward(q_padded, k_, v_, indices, *, block_sizes, q2k_block_nums, sparse_block_size,
                allow_empty_block_nums, softmax_scale, layout):
        assert q_padded.shape[2] % 64 == 0 and layout == "bhsd" and allow_empty_block_nums
        assert indices.dtype == q2k_block_nums.dtype == block_sizes.dtype == torch.int32
        assert indices.shape[:3] == q2k_block_nums.shape == (b, h, q_padded.shape[2] // sparse_block_size)
        assert indices.is_contiguous() and q2k_block_nums.is_contiguous()
        assert torch.equal(q_padded[:, :, n:], torch.zeros_like(q_padded[:, :, n:]))
        seen.update(sizes=block_sizes.tolist(), scale=softmax_scale)
        out, lse = block_sparse_attention_reference(q_padded[:, :, :n], k_, v_, indices, q2k_block_nums,
                                                    sparse_block_size, scale=softmax_scale)
        pad = q_padded.shape[2] - n
        return {"o_tensor": torch.nn.functional.pad(out, (0, 0, 0, pad)),
                "lse_tensor": torch.nn.functional.pad(lse, (0, pad), value=float("-inf"))}

    monkeypatch.setattr(cudnn_frontend, "forward_entry", lambda: forward)
    out, lse = cudnn_frontend.cudnn_frontend_block_sparse_attention(q, k, v, kv_indices, kv_counts, block, 0.125)
    ref_out, ref_lse = block_sparse_attention_reference(q, k, v, kv_indices, kv_counts, block, scale=0.125)
    assert seen == {"sizes": [64, 64, 22], "scale": 0.125}
    assert out.shape == (b, h, n, d) and lse.shape == (b, h, n) and lse.dtype == torch.float32
    assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse)


@pytest.mark.gpu
@pytest.mark.parametrize("n,d", [(4000, 128), (8192, 64)])
def test_gpu_cudnn_frontend_against_the_reference(n, d):
    if cudnn_frontend.forward_entry() is None or torch.cuda.get_device_capability()[0] != cudnn_frontend.HOPPER:
        pytest.skip("needs the cuDNN frontend (swiftdit[hopper]) and a Hopper GPU")
    b, h, block = 2, 3, 64
    q, k, v = qkv(b, h, n, d, torch.bfloat16, device="cuda")
    mask = random_block_mask(b, h, math.ceil(n / block), 0.15, empty_rows=2).cuda()
    kv_indices, kv_counts = block_mask_to_index_table(mask)
    with torch.no_grad():
        out, lse = block_sparse_attention(q, k, v, kv_indices, kv_counts, block, backend="cudnn-frontend")
        auto_out, _ = block_sparse_attention(q, k, v, kv_indices, kv_counts, block)
    ref_out, ref_lse = block_sparse_attention(q.float(), k.float(), v.float(), kv_indices, kv_counts, block,
                                              backend="reference")
    assert relative_error(out, ref_out) < 2e-2
    assert_lse_close(lse, ref_lse)
    assert torch.equal(auto_out, out), "auto takes the frontend at 64-token blocks without gradients"
    q.requires_grad_(True)
    grad_out, _ = block_sparse_attention(q, k, v, kv_indices, kv_counts, block)
    triton_out, _ = block_sparse_attention(q, k, v, kv_indices, kv_counts, block, backend="triton")
    assert torch.equal(grad_out, triton_out), "a call that needs gradients stays on the Triton kernel"
