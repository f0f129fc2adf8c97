"""Sparse-linear attention (SLA): exact attention on the selected key blocks, linear attention on the rest.

`sparse_linear_attention` runs the fused Triton kernels on CUDA bf16/fp16 tensors and the reference in
`naive.py` elsewhere; `backend` forces either (the tests run the kernels under TRITON_INTERPRET=1).
"""

from __future__ import annotations

import math

import torch

from ..block_sparse_attention import check_block_sparse_inputs, uses_triton
from .naive import FEATURE_MAPS, feature_map, sparse_linear_attention_reference


def sparse_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_counts: torch.Tensor,
    block_size: int,
    *,
    feature: str = "softmax",
    text_k: torch.Tensor | None = None,
    text_v: torch.Tensor | None = None,
    text_key_mask: torch.Tensor | None = None,
    scale: float | None = None,
    eps: float = 1e-5,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns out_sparse, out_linear (B, H, N, D) in q's dtype and the sparse part's lse (B, H, N) float32.

    kv_indices/kv_counts select the critical blocks as for `block_sparse_attention`; feature is one of
    FEATURE_MAPS; all three outputs are differentiable in q, k, v, text_k, text_v.
    """
    check_block_sparse_inputs(q, k, v, kv_indices, kv_counts, block_size, text_k, text_v, text_key_mask, None)
    if feature not in FEATURE_MAPS:
        raise ValueError(f"feature must be one of {FEATURE_MAPS}, got {feature!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if not uses_triton(q, block_size, backend):
        return sparse_linear_attention_reference(
            q, k, v, kv_indices, kv_counts, block_size, feature=feature, text_k=text_k, text_v=text_v,
            text_key_mask=text_key_mask, scale=scale, eps=eps,
        )
    from .triton_ops import SparseLinearAttentionFunction

    phi_q = feature_map(q, feature).to(q.dtype).contiguous()
    phi_k = feature_map(k, feature).to(k.dtype).contiguous()
    key_mask = text_key_mask.to(torch.uint8).contiguous() if text_key_mask is not None else None
    return SparseLinearAttentionFunction.apply(
        q, k, v, phi_q, phi_k, text_k, text_v, kv_indices, kv_counts, key_mask, block_size, scale, eps,
    )


__all__ = ["FEATURE_MAPS", "sparse_linear_attention", "sparse_linear_attention_reference"]
