"""Sparse-linear attention (SLA): exact attention on the selected key blocks, linear attention on the rest.

`sparse_linear_attention` computes the softmax part with `block_sparse_attention` (on CUDA bf16/fp16 the
Triton kernels, forward and backward, with the Gluon forward on an H100) and the linear part over the non-selected blocks through per-block
states (block_states.py), whose cost does not grow with the density; where the Triton kernels run, the linear
part is two Triton passes with the feature map fused in around one matmul, and its backward two more
(triton_linear.py). `backend="reference"` runs the
explicit N x N reference in `naive.py`; "triton" forces the Triton softmax part (the CPU tests use it
under TRITON_INTERPRET=1).
"""

from __future__ import annotations

import torch

from ..block_sparse_attention import (
    block_sparse_attention,
    check_block_sparse_inputs,
    index_table_to_block_mask,
    uses_triton,
)
from .block_states import linear_attention_outside_blocks
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
    if backend == "reference":
        return sparse_linear_attention_reference(
            q, k, v, kv_indices, kv_counts, block_size, feature=feature, text_k=text_k, text_v=text_v,
            text_key_mask=text_key_mask, scale=scale, eps=eps,
        )
    out_sparse, lse = block_sparse_attention(
        q, k, v, kv_indices, kv_counts, block_size, text_k=text_k, text_v=text_v, text_key_mask=text_key_mask,
        scale=scale, backend=backend,
    )
    selected = index_table_to_block_mask(kv_indices, kv_counts, kv_indices.shape[-2])
    if uses_fused_linear_branch(q, block_size, backend):
        from .triton_linear import linear_attention_outside_blocks_fused

        q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
        return out_sparse, linear_attention_outside_blocks_fused(q, k, v, selected, block_size, feature, eps), lse
    # Tensor cores on CUDA (bf16/fp16 products, fp32 accumulation); float32 elsewhere.
    dtype = q.dtype if q.is_cuda else torch.float32
    out_linear = linear_attention_outside_blocks(
        feature_map(q, feature).to(dtype), feature_map(k, feature).to(dtype), v.to(dtype), selected, block_size, eps,
    )
    return out_sparse, out_linear.to(q.dtype), lse


def uses_fused_linear_branch(q, block_size: int, backend: str) -> bool:
    """The fused Triton linear branch (triton_linear.py, forward and backward) runs where the block-sparse kernels
    do, for head dims up to 128 (a D x D state per program); elsewhere the block-state tensor ops
    (block_states.py) run, and autograd differentiates them."""
    return q.shape[-1] <= 128 and uses_triton(q, block_size, backend)


__all__ = ["FEATURE_MAPS", "sparse_linear_attention", "sparse_linear_attention_reference"]
