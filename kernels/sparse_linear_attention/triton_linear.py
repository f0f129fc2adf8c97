"""Triton kernels of SLA's linear branch, forward and backward: the feature map fused into the passes that read
tokens, so that no phi(q), phi(k) or padded copy is materialised.

Forward:
1. `block_states`: per key block j, S_j = phi(K_j)^T V_j (D x D, stored in the compute dtype for the
   tensor-core product that follows) and z_j = sum_t phi(k_t) (float32), rows past the sequence end left out.
2. The "not selected" mask (nQ x nK) times the stacked states: one cuBLAS matmul, in the wrapper, giving
   S̄_i and z̄_i per query block.
3. `linear_readout`: per query block i, O = phi(Q_i) S̄_i / (phi(Q_i) . z̄_i + eps), written in q's dtype.

Backward (with u = phi(q), den = u . z̄ + eps and G = dO / den per row):
1. `linear_readout_backward`, per query block: recomputes O, then du = G S̄^T - (G . O) z̄, dS̄_i = U^T G,
   dz̄_i = -sum_t (G_t . O_t) u_t, and dq through the feature map.
2. The transposed mask times dS̄ and dz̄: dS_j and dz_j per key block (cuBLAS again).
3. `block_states_backward`, per key block: dphi(K_j) = V_j dS_j^T + dz_j, dV_j = phi(K_j) dS_j, and dk
   through the feature map.
The states are recomputed in the backward instead of being kept from the forward: at Wan 480p with 64-token
blocks S̄ alone is 200 MB per layer.

Same maths as block_states.py, which autograd differentiates and which runs where Triton does not. Measured at
Wan 480p, that unfused branch spent 1.4 of its 1.8 ms forward in feature maps, casts and padding copies.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

FEATURE_SOFTMAX, FEATURE_ELU = 0, 1
BACKWARD_ROWS = 64  # tokens per step of the backward kernels


@triton.jit
def _feature_map(x, d_ok, FEATURE: tl.constexpr):
    """phi over the head dim of a (rows, BLOCK_D) float32 tile: softmax, or elu + 1; 0 in padded lanes."""
    if FEATURE == 0:
        x = tl.where(d_ok[None, :], x, float("-inf"))
        e = tl.exp(x - tl.max(x, 1)[:, None])
        return e / tl.sum(e, 1)[:, None]
    return tl.where(d_ok[None, :], tl.where(x > 0, x + 1.0, tl.exp(x)), 0.0)


@triton.jit
def _feature_map_backward(phi, dphi, FEATURE: tl.constexpr):
    """d x from d phi for the tile's phi (both float32); written with phi alone. Softmax: phi (dphi - phi.dphi).
    elu + 1: phi = x + 1 > 1 where x > 0 (slope 1), else phi = exp(x) <= 1 (slope exp(x) = phi)."""
    if FEATURE == 0:
        return phi * (dphi - tl.sum(phi * dphi, 1)[:, None])
    return dphi * tl.where(phi > 1.0, 1.0, phi)


@triton.jit
def _program_lanes(HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """Programs run over (token block, batch * head): this one's batch * head index, head lanes and their mask."""
    offs_d = tl.arange(0, BLOCK_D)
    return tl.program_id(1).to(tl.int64), offs_d, offs_d < HEAD_DIM


@triton.jit
def _phi_rows(X, s_xb, s_xh, s_xn, bh, num_heads, seq_len, rows, offs_d, d_ok, FEATURE: tl.constexpr):
    """phi of X's tokens `rows` as a (rows, BLOCK_D) float32 tile; rows past the end are 0."""
    x = _load_rows(X, s_xb, s_xh, s_xn, bh, num_heads, rows, offs_d, rows < seq_len, d_ok)
    return tl.where((rows < seq_len)[:, None], _feature_map(x.to(tl.float32), d_ok, FEATURE), 0.0)


@triton.jit
def _load_rows(X, s_xb, s_xh, s_xn, bh, num_heads, rows, offs_d, row_ok, d_ok):
    return tl.load(X + (bh // num_heads) * s_xb + (bh % num_heads) * s_xh + rows[:, None] * s_xn + offs_d[None, :],
                   mask=row_ok[:, None] & d_ok[None, :], other=0.0)


@triton.jit
def _store_rows(X, value, bh, seq_len, rows, offs_d, HEAD_DIM: tl.constexpr, row_ok, d_ok):
    """Into a contiguous (B, H, N, HEAD_DIM) tensor, cast to its dtype."""
    tl.store(X + (bh * seq_len + rows)[:, None] * HEAD_DIM + offs_d[None, :], value.to(X.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _load_block_state(States, Norms, block, offs_d, d_ok, HEAD_DIM: tl.constexpr):
    """One block's (D, D) state in its stored dtype and its (D,) float32 norm, padded lanes 0."""
    state = tl.load(States + block * HEAD_DIM * HEAD_DIM + offs_d[:, None] * HEAD_DIM + offs_d[None, :],
                    mask=d_ok[:, None] & d_ok[None, :], other=0.0)
    return state, tl.load(Norms + block * HEAD_DIM + offs_d, mask=d_ok, other=0.0)


@triton.jit
def _store_block_state(States, Norms, block, state, norm, offs_d, d_ok, HEAD_DIM: tl.constexpr):
    tl.store(States + block * HEAD_DIM * HEAD_DIM + offs_d[:, None] * HEAD_DIM + offs_d[None, :],
             state.to(States.dtype.element_ty), mask=d_ok[:, None] & d_ok[None, :])
    tl.store(Norms + block * HEAD_DIM + offs_d, norm, mask=d_ok)


@triton.jit
def _block_states_kernel(K, V, States, Norms, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, num_heads, seq_len, num_blocks,
                         BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, FEATURE: tl.constexpr):
    bh, offs_d, d_ok = _program_lanes(HEAD_DIM, BLOCK_D)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    phi = _phi_rows(K, s_kb, s_kh, s_kn, bh, num_heads, seq_len, rows, offs_d, d_ok, FEATURE)
    v = _load_rows(V, s_vb, s_vh, s_vn, bh, num_heads, rows, offs_d, rows < seq_len, d_ok)
    state = tl.dot(tl.trans(phi.to(v.dtype)), v)
    _store_block_state(States, Norms, bh * num_blocks + tl.program_id(0), state, tl.sum(phi, 0), offs_d, d_ok,
                       HEAD_DIM)


@triton.jit
def _linear_readout_kernel(Q, States, Norms, Out, s_qb, s_qh, s_qn, num_heads, seq_len, num_blocks, eps,
                           BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                           FEATURE: tl.constexpr):
    bh, offs_d, d_ok = _program_lanes(HEAD_DIM, BLOCK_D)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    phi = _phi_rows(Q, s_qb, s_qh, s_qn, bh, num_heads, seq_len, rows, offs_d, d_ok, FEATURE)
    state, norm = _load_block_state(States, Norms, bh * num_blocks + tl.program_id(0), offs_d, d_ok, HEAD_DIM)
    numer = tl.dot(phi.to(state.dtype), state)
    denom = tl.sum(phi * norm[None, :], 1) + eps
    _store_rows(Out, numer / denom[:, None], bh, seq_len, rows, offs_d, HEAD_DIM, rows < seq_len, d_ok)


@triton.jit
def _linear_readout_backward_kernel(Q, DOut, States, Norms, DQ, DStates, DNorms, s_qb, s_qh, s_qn, s_gb, s_gh, s_gn,
                                    num_heads, seq_len, num_blocks, eps, BLOCK: tl.constexpr, ROWS: tl.constexpr,
                                    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, FEATURE: tl.constexpr):
    """ROWS query tokens at a time (of the block's BLOCK), so that the live tiles fit in registers."""
    bh, offs_d, d_ok = _program_lanes(HEAD_DIM, BLOCK_D)
    block = bh * num_blocks + tl.program_id(0)
    state, norm = _load_block_state(States, Norms, block, offs_d, d_ok, HEAD_DIM)
    # A query block that selects every key block has S̄ = 0 and z̄ = 0: its output is 0 whatever the inputs, so
    # its gradients are 0. Dividing by its denominator (eps) would overflow fp16 and turn 0 * inf into NaN.
    has_outside = tl.sum(norm, 0) > 0
    d_state = tl.zeros([BLOCK_D, BLOCK_D], tl.float32)
    d_norm = tl.zeros([BLOCK_D], tl.float32)
    for part in tl.static_range(BLOCK // ROWS):
        rows = tl.program_id(0) * BLOCK + part * ROWS + tl.arange(0, ROWS)
        row_ok = rows < seq_len
        phi = _phi_rows(Q, s_qb, s_qh, s_qn, bh, num_heads, seq_len, rows, offs_d, d_ok, FEATURE)
        d_out = _load_rows(DOut, s_gb, s_gh, s_gn, bh, num_heads, rows, offs_d, row_ok, d_ok).to(tl.float32)
        denom = tl.sum(phi * norm[None, :], 1) + eps
        out = tl.dot(phi.to(state.dtype), state) / denom[:, None]
        g = tl.where(has_outside, d_out / denom[:, None], 0.0)
        g_dot_out = tl.sum(g * out, 1)
        d_phi = tl.dot(g.to(state.dtype), tl.trans(state)) - g_dot_out[:, None] * norm[None, :]
        _store_rows(DQ, _feature_map_backward(phi, d_phi, FEATURE), bh, seq_len, rows, offs_d, HEAD_DIM, row_ok,
                    d_ok)
        d_state = tl.dot(tl.trans(phi.to(state.dtype)), g.to(state.dtype), d_state)
        d_norm -= tl.sum(g_dot_out[:, None] * phi, 0)
    _store_block_state(DStates, DNorms, block, d_state, d_norm, offs_d, d_ok, HEAD_DIM)


@triton.jit
def _block_states_backward_kernel(K, V, DStates, DNorms, DK, DV, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, num_heads,
                                  seq_len, num_blocks, BLOCK: tl.constexpr, ROWS: tl.constexpr,
                                  HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, FEATURE: tl.constexpr):
    """ROWS key tokens at a time (of the block's BLOCK), so that the live tiles fit in registers."""
    bh, offs_d, d_ok = _program_lanes(HEAD_DIM, BLOCK_D)
    d_state, d_norm = _load_block_state(DStates, DNorms, bh * num_blocks + tl.program_id(0), offs_d, d_ok, HEAD_DIM)
    for part in tl.static_range(BLOCK // ROWS):
        rows = tl.program_id(0) * BLOCK + part * ROWS + tl.arange(0, ROWS)
        row_ok = rows < seq_len
        phi = _phi_rows(K, s_kb, s_kh, s_kn, bh, num_heads, seq_len, rows, offs_d, d_ok, FEATURE)
        v = _load_rows(V, s_vb, s_vh, s_vn, bh, num_heads, rows, offs_d, row_ok, d_ok)
        d_phi = tl.dot(v.to(d_state.dtype), tl.trans(d_state)) + d_norm[None, :]
        _store_rows(DV, tl.dot(phi.to(d_state.dtype), d_state), bh, seq_len, rows, offs_d, HEAD_DIM, row_ok, d_ok)
        _store_rows(DK, _feature_map_backward(phi, d_phi, FEATURE), bh, seq_len, rows, offs_d, HEAD_DIM, row_ok,
                    d_ok)


def _launch_options(block_size: int, d: int, feature: str) -> dict:
    block_d = max(16, triton.next_power_of_2(d))
    return dict(BLOCK=block_size, HEAD_DIM=d, BLOCK_D=block_d, FEATURE=FEATURE_SOFTMAX if feature == "softmax" else
                FEATURE_ELU, num_warps=8 if block_d >= 128 else 4)


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _outside_states(k, v, outside, launch):
    """Per query block, the summed states S̄_i (compute dtype) and norms z̄_i (float32) of the key blocks it does
    not select: `outside` is the (B, H, nQ, nK) "not selected" mask."""
    b, h, n, d = k.shape
    n_blocks = outside.shape[-1]
    states = torch.empty((b, h, n_blocks, d * d), dtype=k.dtype, device=k.device)
    norms = torch.empty((b, h, n_blocks, d), dtype=torch.float32, device=k.device)
    _block_states_kernel[(n_blocks, b * h)](k, v, states, norms, *_strides(k), *_strides(v), h, n, n_blocks, **launch)
    # (B, H, nQ, D*D) with fp32 accumulation, and (B, H, nQ, D).
    return (outside.to(k.dtype) @ states).contiguous(), (outside.to(torch.float32) @ norms).contiguous()


class _FusedLinearBranch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, outside, block_size, feature, eps):
        b, h, n, d = q.shape
        launch = _launch_options(block_size, d, feature)
        outside_states, outside_norms = _outside_states(k, v, outside, launch)
        out = torch.empty((b, h, n, d), dtype=q.dtype, device=q.device)
        _linear_readout_kernel[(outside.shape[-2], b * h)](q, outside_states, outside_norms, out, *_strides(q), h, n,
                                                           outside.shape[-2], eps, **launch)
        ctx.save_for_backward(q, k, v, outside)
        ctx.launch, ctx.eps = launch, eps
        return out

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, outside = ctx.saved_tensors
        b, h, n, d = q.shape
        n_blocks = outside.shape[-1]
        d_out = d_out if d_out.stride(-1) == 1 else d_out.contiguous()
        outside_states, outside_norms = _outside_states(k, v, outside, ctx.launch)
        dq, dk, dv = (torch.empty((b, h, n, d), dtype=x.dtype, device=x.device) for x in (q, k, v))
        d_outside_states, d_outside_norms = torch.empty_like(outside_states), torch.empty_like(outside_norms)
        # 64 rows at a time: at 128 the backward kernels spilled registers (sm_90 compile, Triton 3.9).
        rows = min(BACKWARD_ROWS, ctx.launch["BLOCK"])
        _linear_readout_backward_kernel[(n_blocks, b * h)](
            q, d_out, outside_states, outside_norms, dq, d_outside_states, d_outside_norms, *_strides(q),
            *_strides(d_out), h, n, n_blocks, ctx.eps, ROWS=rows, **ctx.launch)
        not_selected_by = outside.transpose(-1, -2)  # (B, H, nK, nQ): which query blocks each key block serves
        d_states = (not_selected_by.to(q.dtype) @ d_outside_states).contiguous()
        d_norms = (not_selected_by.to(torch.float32) @ d_outside_norms).contiguous()
        _block_states_backward_kernel[(n_blocks, b * h)](k, v, d_states, d_norms, dk, dv, *_strides(k), *_strides(v),
                                                         h, n, n_blocks, ROWS=rows, **ctx.launch)
        return dq, dk, dv, None, None, None, None


def linear_attention_outside_blocks_fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, selected: torch.Tensor,
                                          block_size: int, feature: str, eps: float) -> torch.Tensor:
    """Raw (B, H, N, D) q, k, v (last dim contiguous, 16-bit) and selected (B|1, H|1, nQ, nK) bool -> the linear
    branch (B, H, N, D) in q's dtype, differentiable in q, k and v; phi is applied inside the kernels."""
    b, h = q.shape[:2]
    outside = (~selected).expand(b, h, -1, -1)
    return _FusedLinearBranch.apply(q, k, v, outside, block_size, feature, eps)
