"""Dense attention with its log-sum-exp through cuDNN, for callers that need a full softmax's statistics at
dense speed (Re-ttention's refresh steps measure the share of mass a pattern keeps).

PyTorch's public SDPA returns no LSE; its cuDNN backend's own op does (`aten::_scaled_dot_product_cudnn_attention`,
the op SDPA dispatches to, with compute_log_sumexp=True). On the H100 cuDNN runs dense attention about 1.3x
faster than this package's block-sparse kernel with every block kept, so a refresh that needs the full output
and its LSE is cheaper here than as the kernel over a pattern and its complement. The reference is the
block-sparse reference with every block kept (`naive.py`); a GPU test compares the two.
"""

from __future__ import annotations

import torch

CUDNN_DTYPES = (torch.bfloat16, torch.float16)


def cudnn_attention_available(q: torch.Tensor) -> bool:
    """Whether `cudnn_attention_with_lse` can take these queries: CUDA on sm_80 or newer (where PyTorch
    offers cuDNN attention), bf16/fp16, a head dim that is a multiple of 8 up to 128, cuDNN present."""
    return (q.is_cuda and q.dtype in CUDNN_DTYPES and q.shape[-1] <= 128 and q.shape[-1] % 8 == 0
            and torch.cuda.get_device_capability(q.device) >= (8, 0) and torch.backends.cudnn.is_available()
            and hasattr(torch.ops.aten, "_scaled_dot_product_cudnn_attention"))


def cudnn_attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Unmasked attention of q (B, H, N, D) over k, v (B, H, M, D): (out (B, H, N, D), lse (B, H, N) float32,
    natural log of the scaled scores' sum of exponentials)."""
    if not cudnn_attention_available(q):
        raise ValueError("cudnn_attention_with_lse needs CUDA bf16/fp16 tensors on sm_80+ with head_dim a multiple "
                         "of 8 up to 128, and cuDNN")
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(
        q, k, v, None, True, 0.0, False, False, scale=scale)[:2]
    return out, lse.reshape(q.shape[:3]).float()
