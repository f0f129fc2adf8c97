"""Triton kernels of SLA's linear branch (forward only): the feature map fused into the two passes that read
tokens, so that no phi(q), phi(k) or padded copy is materialised.

1. `block_states`: per key block j, phi(K_j)^T V_j (D x D, stored in the compute dtype for the tensor-core
   product that follows) and z_j = sum_t phi(k_t) (float32), rows past the sequence end left out.
2. The "not selected" mask (nQ x nK) times the stacked states: one cuBLAS matmul, in the wrapper.
3. `linear_readout`: per query block i, phi(Q_i) S_i / (phi(Q_i) . z_i + eps), written in q's dtype.

Same maths as block_states.py (which autograd differentiates, and which the training path uses); measured
at Wan 480p, the unfused branch spent 1.4 of its 1.8 ms in feature maps, casts and padding copies.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

FEATURE_SOFTMAX, FEATURE_ELU = 0, 1


@triton.jit
def _feature_map(x, d_ok, FEATURE: tl.constexpr):
    """phi over the head dim of a (rows, BLOCK_D) float32 tile: softmax, or elu + 1; 0 in padded lanes."""
    if FEATURE == 0:
        x = tl.where(d_ok[None, :], x, float("-inf"))
        e = tl.exp(x - tl.max(x, 1)[:, None])
        return e / tl.sum(e, 1)[:, None]
    return tl.where(d_ok[None, :], tl.where(x > 0, x + 1.0, tl.exp(x)), 0.0)


@triton.jit
def _block_phi(X, s_xb, s_xh, s_xn, num_heads, seq_len, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr,
               BLOCK_D: tl.constexpr, FEATURE: tl.constexpr):
    """This program's block of tokens (axis 0: block, axis 1: batch * head): phi of its (BLOCK, BLOCK_D) tile
    of X in float32 (rows past the end are 0), with the tile's rows, head lanes and (batch * head) index."""
    bh = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    tile_ok = (rows < seq_len)[:, None] & d_ok[None, :]
    x = tl.load(X + (bh // num_heads) * s_xb + (bh % num_heads) * s_xh + rows[:, None] * s_xn + offs_d[None, :],
                mask=tile_ok, other=0.0)
    phi = tl.where((rows < seq_len)[:, None], _feature_map(x.to(tl.float32), d_ok, FEATURE), 0.0)
    return phi, rows, offs_d, d_ok, bh


@triton.jit
def _block_states_kernel(K, V, States, Norms, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, num_heads, seq_len, num_blocks,
                         BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, FEATURE: tl.constexpr):
    phi, rows, offs_d, d_ok, bh = _block_phi(K, s_kb, s_kh, s_kn, num_heads, seq_len, BLOCK, HEAD_DIM, BLOCK_D,
                                             FEATURE)
    v = tl.load(V + (bh // num_heads) * s_vb + (bh % num_heads) * s_vh + rows[:, None] * s_vn + offs_d[None, :],
                mask=(rows < seq_len)[:, None] & d_ok[None, :], other=0.0)
    state = tl.dot(tl.trans(phi.to(v.dtype)), v)
    base = bh * num_blocks + tl.program_id(0)
    offs_dd = offs_d[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(States + base * HEAD_DIM * HEAD_DIM + offs_dd, state.to(States.dtype.element_ty),
             mask=d_ok[:, None] & d_ok[None, :])
    tl.store(Norms + base * HEAD_DIM + offs_d, tl.sum(phi, 0), mask=d_ok)


@triton.jit
def _linear_readout_kernel(Q, States, Norms, Out, s_qb, s_qh, s_qn, num_heads, seq_len, num_blocks, eps,
                           BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                           FEATURE: tl.constexpr):
    phi, rows, offs_d, d_ok, bh = _block_phi(Q, s_qb, s_qh, s_qn, num_heads, seq_len, BLOCK, HEAD_DIM, BLOCK_D,
                                             FEATURE)
    base = bh * num_blocks + tl.program_id(0)
    offs_dd = offs_d[:, None] * HEAD_DIM + offs_d[None, :]
    state = tl.load(States + base * HEAD_DIM * HEAD_DIM + offs_dd, mask=d_ok[:, None] & d_ok[None, :], other=0.0)
    norm = tl.load(Norms + base * HEAD_DIM + offs_d, mask=d_ok, other=0.0)
    numer = tl.dot(phi.to(state.dtype), state)
    denom = tl.sum(phi * norm[None, :], 1) + eps
    out_rows = bh * seq_len + rows
    tl.store(Out + out_rows[:, None] * HEAD_DIM + offs_d[None, :], (numer / denom[:, None]).to(Out.dtype.element_ty),
             mask=(rows < seq_len)[:, None] & d_ok[None, :])


def linear_attention_outside_blocks_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, selected: torch.Tensor,
                                          block_size: int, feature: str, eps: float) -> torch.Tensor:
    """Raw (B, H, N, D) q, k, v (last dim contiguous, 16-bit) and selected (B|1, H|1, nQ, nK) bool -> the linear
    branch (B, H, N, D) in q's dtype; phi is applied inside the kernels."""
    b, h, n, d = q.shape
    n_blocks = triton.cdiv(n, block_size)
    block_d = max(16, triton.next_power_of_2(d))
    kind = FEATURE_SOFTMAX if feature == "softmax" else FEATURE_ELU
    common = dict(BLOCK=block_size, HEAD_DIM=d, BLOCK_D=block_d, FEATURE=kind, num_warps=8 if block_d >= 128 else 4)
    states = torch.empty((b, h, n_blocks, d * d), dtype=q.dtype, device=q.device)
    norms = torch.empty((b, h, n_blocks, d), dtype=torch.float32, device=q.device)
    _block_states_kernel[(n_blocks, b * h)](k, v, states, norms, k.stride(0), k.stride(1), k.stride(2), v.stride(0),
                                            v.stride(1), v.stride(2), h, n, n_blocks, **common)
    outside = (~selected).expand(b, h, -1, -1)
    outside_states = (outside.to(q.dtype) @ states).contiguous()  # (B, H, nQ, D*D), fp32 accumulation
    outside_norms = (outside.to(torch.float32) @ norms).contiguous()  # (B, H, nQ, D)
    out = torch.empty((b, h, n, d), dtype=q.dtype, device=q.device)
    _linear_readout_kernel[(n_blocks, b * h)](q, outside_states, outside_norms, out, q.stride(0), q.stride(1),
                                              q.stride(2), h, n, n_blocks, eps, **common)
    return out
