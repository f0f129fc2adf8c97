"""Fused SLA forward/backward: the block-sparse kernels with their linear branch compiled in.

Forward, one launch: per query block the softmax part over the selected blocks, and in the same loop the
selected blocks' linear terms phi(q)phi(k)^T v and phi(q)phi(k)^T 1, subtracted in the epilogue from the
all-keys totals phi(q) S and phi(q) z (S = phi(k)^T v, z = sum phi(k), computed once per head with two
small matmuls). Backward: the dQ and dK/dV passes accumulate the selected blocks' linear gradients next to
the softmax ones; the all-keys terms are (N, D) x (D, D) matmuls done here.
"""

from __future__ import annotations

import torch

from ..block_sparse_attention.triton_ops import LinearBranch, LinearGrads, TextKeys, launch_backward, launch_forward


def _rest_is_empty(kv_counts: torch.Tensor, block_size: int, shape: torch.Size) -> torch.Tensor:
    """(B, H, N) bool: rows whose query block selected every key block (no linear part)."""
    b, h, n = shape
    n_blocks = kv_counts.shape[-1]
    rows = (kv_counts >= n_blocks).repeat_interleave(block_size, -1)[..., :n]
    return rows.expand(b, h, n)


class SparseLinearAttentionFunction(torch.autograd.Function):
    """(out_sparse, out_linear, lse); differentiable in q, k, v, phi(q), phi(k), text_k, text_v."""

    @staticmethod
    def forward(ctx, q, k, v, phi_q, phi_k, text_k, text_v, kv_indices, kv_counts, text_key_mask, block_size,
                scale, eps):
        state = torch.matmul(phi_k.float().transpose(-1, -2), v.float()).contiguous()
        norm = phi_k.float().sum(2).contiguous()
        linear = LinearBranch(phi_q, phi_k, state, norm, eps)
        text = TextKeys(text_k, text_v, text_key_mask) if text_k is not None else None
        out, lse, out_lin, den_lin = launch_forward(q, k, v, kv_indices, kv_counts, block_size, scale, text, None,
                                                    linear)
        ctx.save_for_backward(q, k, v, phi_q, phi_k, text_k, text_v, kv_indices, kv_counts, text_key_mask, out, lse,
                              out_lin, den_lin, state, norm)
        ctx.block_size, ctx.scale, ctx.eps = block_size, scale, eps
        return out, out_lin, lse

    @staticmethod
    def backward(ctx, grad_out, grad_out_lin, grad_lse):
        (q, k, v, phi_q, phi_k, text_k, text_v, kv_indices, kv_counts, text_key_mask, out, lse, out_lin, den_lin,
         state, norm) = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        if grad_out_lin is None:
            grad_out_lin = torch.zeros_like(out_lin)
        # out_lin = numer / denom: d numer = g / denom, d denom = -(g . out_lin) / denom; zero where constant.
        live = ~_rest_is_empty(kv_counts, ctx.block_size, den_lin.shape)
        g = grad_out_lin.float()
        d_numer = torch.where(live[..., None], g / den_lin[..., None], 0.0).contiguous()
        d_denom = torch.where(live, -(g * out_lin.float()).sum(-1) / den_lin, 0.0).contiguous()
        grads = LinearGrads(d_numer, d_denom)
        linear = LinearBranch(phi_q, phi_k, state, norm, ctx.eps)
        text = TextKeys(text_k, text_v, text_key_mask) if text_k is not None else None
        dq, dk, dv, d_text_k, d_text_v = launch_backward(
            q, k, v, out, lse, grad_out, grad_lse, kv_indices, kv_counts, ctx.block_size, ctx.scale, text, None,
            linear, grads,
        )
        # All-keys terms minus the selected blocks' terms the kernels accumulated.
        phi_q32, phi_k32 = phi_q.float(), phi_k.float()
        d_phi_q = d_numer @ state.transpose(-1, -2) + d_denom[..., None] * norm[:, :, None, :] - grads.d_phi_q_selected
        d_state = phi_q32.transpose(-1, -2) @ d_numer
        d_norm = (phi_q32 * d_denom[..., None]).sum(2)
        d_phi_k = v.float() @ d_state.transpose(-1, -2) + d_norm[:, :, None, :] - grads.d_phi_k_selected
        dv = dv.float() + phi_k32 @ d_state - grads.d_v_selected
        return (dq, dk, dv.to(v.dtype), d_phi_q.to(phi_q.dtype), d_phi_k.to(phi_k.dtype), d_text_k, d_text_v,
                None, None, None, None, None, None)
