"""Plain-PyTorch reference of sparse-linear attention (SLA, thu-ml/SLA; the paper's variant: linear on the rest).

Key blocks selected for a query block (the index table) get exact softmax attention; every other visual
key gets linear attention with a feature map phi (softmax over head_dim, or elu + 1) applied to q and k:

    out_sparse = softmax attention over the selected blocks (+ text keys), with its LSE
    out_linear_i = sum_{t not selected} (phi(q_i) . phi(k_t)) v_t / (sum_{t not selected} phi(q_i) . phi(k_t) + eps)

The method combines them as out_sparse + proj(out_linear) with its learned projection. A query block that
selected every key block has no linear part: its out_linear is 0.
"""

from __future__ import annotations

import torch

from ..block_sparse_attention.naive import block_sparse_attention_reference, index_table_to_block_mask

FEATURE_MAPS = ("softmax", "elu")


def feature_map(x: torch.Tensor, name: str) -> torch.Tensor:
    """phi(x) in float32: softmax over head_dim, or elu(x) + 1; both positive so denominators stay > 0."""
    if name == "softmax":
        return torch.softmax(x.float(), dim=-1)
    if name == "elu":
        return torch.nn.functional.elu(x.float()) + 1.0
    raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {name!r}")


def sparse_linear_attention_reference(
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns out_sparse (B, H, N, D) q.dtype, out_linear (B, H, N, D) q.dtype, lse (B, H, N) float32."""
    out_sparse, lse = block_sparse_attention_reference(
        q, k, v, kv_indices, kv_counts, block_size, text_k=text_k, text_v=text_v, text_key_mask=text_key_mask,
        scale=scale,
    )
    n = q.shape[2]
    n_blocks = kv_indices.shape[-2]
    selected = index_table_to_block_mask(kv_indices, kv_counts, n_blocks)
    selected = selected.repeat_interleave(block_size, -2)[..., :n, :].repeat_interleave(block_size, -1)[..., :n]
    weights = feature_map(q, feature) @ feature_map(k, feature).transpose(-1, -2)
    weights = weights.masked_fill(selected, 0.0)
    out_linear = (weights @ v.float()) / (weights.sum(-1, keepdim=True) + eps)
    return out_sparse, out_linear.to(q.dtype), lse
