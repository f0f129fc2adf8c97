"""Dense attention with its LSE through cuDNN against the block-sparse reference with every block kept."""

import pytest
import torch

from swiftdit.kernels.block_sparse_attention import block_sparse_attention_reference
from swiftdit.kernels.block_sparse_attention.dense_lse import cudnn_attention_available, cudnn_attention_with_lse


def every_block(n, block, device):
    blocks = (n + block - 1) // block
    indices = torch.arange(blocks, device=device).expand(1, 1, blocks, blocks)
    return indices, torch.full((1, 1, blocks), blocks, device=device)


def test_cpu_tensors_are_refused_with_a_clear_error():
    q = torch.randn(1, 2, 8, 16)
    assert not cudnn_attention_available(q)
    with pytest.raises(ValueError, match="CUDA bf16/fp16"):
        cudnn_attention_with_lse(q, q, q, 0.25)


@pytest.mark.gpu
@pytest.mark.parametrize("n,text_len", [(4100, 0), (3000, 256)])
def test_gpu_cudnn_output_and_lse_match_the_reference(n, text_len):
    generator = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 3, n, 128, generator=generator, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    text_k, text_v = (torch.randn(1, 3, text_len, 128, generator=generator, device="cuda", dtype=torch.bfloat16)
                      for _ in range(2))
    scale = 128 ** -0.5
    out, lse = cudnn_attention_with_lse(q, torch.cat([k, text_k], 2), torch.cat([v, text_v], 2), scale)
    ref_out, ref_lse = block_sparse_attention_reference(
        q.float(), k.float(), v.float(), *every_block(n, 128, "cuda"), 128,
        text_k=text_k.float() if text_len else None, text_v=text_v.float() if text_len else None, scale=scale)
    assert lse.shape == (1, 3, n) and lse.dtype == torch.float32
    torch.testing.assert_close(lse, ref_lse, rtol=0, atol=2e-2)
    torch.testing.assert_close(out.float(), ref_out, rtol=0, atol=2e-2)
