"""Plain-PyTorch reference of block-sparse attention (the maths the Triton kernel must match).

Queries in block i attend to the key blocks listed for i in the index table, plus every text key
("dense columns"), with an optional exact element mask inside kept blocks, and optionally one pooled column
per dropped key block (pooled.py: the estimate of the dropped mass that `rectified` uses). Computed in float32 through
an explicit softmax so that the log-sum-exp is exact; rows with no key at all return zeros and an LSE of
-inf instead of NaN.
"""

from __future__ import annotations

import math

import torch

from .pooled import pooled_columns


def index_table_to_block_mask(kv_indices: torch.Tensor, kv_counts: torch.Tensor, num_k_blocks: int) -> torch.Tensor:
    """(B, H, nQ, maxK) int table + (B, H, nQ) counts -> (B, H, nQ, nK) bool block mask."""
    slot = torch.arange(kv_indices.shape[-1], device=kv_indices.device)
    valid = slot < kv_counts[..., None]
    mask = torch.zeros(*kv_indices.shape[:-1], num_k_blocks + 1, dtype=torch.bool, device=kv_indices.device)
    # Invalid slots scatter into the spare column `num_k_blocks`, which is dropped.
    target = torch.where(valid, kv_indices.long(), torch.full_like(kv_indices, num_k_blocks, dtype=torch.long))
    mask.scatter_(-1, target, True)
    return mask[..., :num_k_blocks]


def block_sparse_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_counts: torch.Tensor,
    block_size: int,
    *,
    text_k: torch.Tensor | None = None,
    text_v: torch.Tensor | None = None,
    text_key_mask: torch.Tensor | None = None,
    element_mask: torch.Tensor | None = None,
    scale: float | None = None,
    return_lse: bool = True,
    estimate_dropped: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Block-sparse attention.

    q, k, v: (B, H, N, D) visual tokens. kv_indices: int (B|1, H|1, ceil(N/block_size), maxK) key-block
    ids per query block (entries beyond kv_counts are ignored); kv_counts: (B|1, H|1, nQ).
    text_k, text_v: (B, H, L, D) keys/values every query attends to; text_key_mask: (B, L) bool, False =
    padding. element_mask: (B|1, H|1, N, N) bool applied inside kept blocks, or a `LocalWindowMask`.
    estimate_dropped: also attend one pooled column per dropped key block (mean key with logit bias log n_j,
    mean value; see pooled.py), differentiable through the block means.
    Returns out (B, H, N, D) in q's dtype and lse (B, H, N) float32 (natural log); lse is None with
    return_lse=False, which takes PyTorch's fused SDPA instead of the explicit softmax.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    keys, values, mask = keys_values_and_token_mask(q, k, v, kv_indices, kv_counts, block_size, text_k, text_v,
                                                    text_key_mask, element_mask)
    bias = None
    if estimate_dropped:
        keys, values, mask, bias = with_pooled_columns(keys, values, mask, k, v, kv_indices, kv_counts, block_size)
    if not return_lse:
        # Same output through PyTorch's fused SDPA with the token mask: it saves no work (the mask only hides
        # pairs) but on the CPU it is several times faster than the explicit float32 softmax below.
        attn_mask = mask if bias is None else torch.where(mask, bias.to(q.dtype), float("-inf"))
        out = torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask, scale=scale)
        # A query with no key at all gets zeros, as below and in the kernels (SDPA would give NaN).
        return torch.where(mask.any(-1, keepdim=True), out, torch.zeros((), dtype=out.dtype, device=out.device)), None
    scores = torch.matmul(q.float(), keys.float().transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)[..., None])
    out = torch.matmul(probs, values.float())
    return out.to(q.dtype), lse


def keys_values_and_token_mask(q, k, v, kv_indices, kv_counts, block_size, text_k, text_v, text_key_mask,
                               element_mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The keys and values every query may see ([visual, text]) and the (B, H, N, N + L) bool token mask."""
    b, h, n, _ = q.shape
    n_blocks = (n + block_size - 1) // block_size
    if kv_indices.shape[-2] != n_blocks:
        raise ValueError(f"kv_indices has {kv_indices.shape[-2]} query blocks, expected {n_blocks}")
    block_mask = index_table_to_block_mask(kv_indices, kv_counts, n_blocks)
    mask = block_mask.repeat_interleave(block_size, -2)[..., :n, :].repeat_interleave(block_size, -1)[..., :n]
    if element_mask is not None:
        if not isinstance(element_mask, torch.Tensor):
            # A LocalWindowMask (window.py): the reference evaluates the same window as a dense mask.
            element_mask = element_mask.to_dense(q.device)
        mask = mask & element_mask
    mask = mask.expand(b, h, n, n)
    keys, values = k, v
    if text_k is not None:
        keys = torch.cat([k, text_k], dim=2)
        values = torch.cat([v, text_v], dim=2)
        text_mask = (
            torch.ones(b, text_k.shape[2], dtype=torch.bool, device=q.device) if text_key_mask is None else text_key_mask
        )
        mask = torch.cat([mask, text_mask[:, None, None, :].expand(b, h, n, -1)], dim=-1)
    return keys, values, mask


def with_pooled_columns(keys, values, mask, k, v, kv_indices, kv_counts, block_size):
    """Append one pooled column per key block to [visual, text] keys/values; returns the extended keys,
    values, token mask (a pooled column counts only for the query blocks that drop its block) and the
    additive logit bias per key (0 for tokens, log n_j for the pooled columns)."""
    n = k.shape[2]
    n_blocks = (n + block_size - 1) // block_size
    pooled = pooled_columns(k, v, index_table_to_block_mask(kv_indices, kv_counts, n_blocks), block_size)
    dropped = pooled.dropped.repeat_interleave(block_size, -2)[..., :n, :].expand(*mask.shape[:3], -1)
    bias = torch.cat([torch.zeros(keys.shape[2], device=k.device), pooled.log_weight])
    return (torch.cat([keys, pooled.k.to(keys.dtype)], dim=2), torch.cat([values, pooled.v.to(values.dtype)], dim=2),
            torch.cat([mask, dropped], dim=-1), bias)
