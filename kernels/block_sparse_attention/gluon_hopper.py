"""Block-sparse attention forward for Hopper written in Gluon (Triton's explicit-layout dialect), with
FlashAttention-3's intra-warpgroup overlap.

Why a second forward: the Triton kernel (triton_attention.py) reaches 0.72-0.85 of cuDNN's dense rate. Its
`tl.dot` compiles to async wgmma, but Triton waits on every Q K^T at once, so the softmax and the tensor cores
never run at the same time (BENCHMARKS.md, session 11). Gluon exposes the async wgmma and its waits, so this
kernel orders one iteration over key tile j as

    issue S_j = Q K_j^T            (async)
    issue O += P_{j-1} V_{j-1}     (async, P from registers)
    wait until only the last one is outstanding -> S_j is ready
    softmax of S_j                 (runs while the tensor cores do P_{j-1} V_{j-1})
    wait for P_{j-1} V_{j-1}, rescale O, refill the freed stage with TMA

K and V tiles come through a ring of STAGES shared-memory buffers filled by TMA (device-side descriptors, so
any (B, N, H, D) or (B, H, N, D) layout with a unit last stride works).

Scope: visual keys only (no text columns, element mask or pooled columns), 128-token blocks, head_dim 64 or
128, bf16/fp16, sm_90. Everything else stays on the Triton kernel. Same conventions as the Triton forward:
scores in log2 units, natural-log LSE, empty rows give zeros and -inf.
"""

from __future__ import annotations

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

LOG2E = 1.4426950408889634
GLUON_BLOCK = 128
GLUON_HEAD_DIMS = (64, 128)
GLUON_STAGES = 3  # Q (32 KB) + 3 x (K + V) tiles (64 KB each at head_dim 128) = 224 KB of the 227 KB


@gluon.jit
def _issue_tile_load(k_desc, v_desc, k_smem, v_smem, ready, idx_row, tile, STAGES: gl.constexpr,
                     BLOCK: gl.constexpr):
    """TMA loads of the row's `tile`-th kept key block (its K and V) into stage tile % STAGES."""
    stage = tile % STAGES
    start = gl.load(idx_row + tile) * BLOCK
    bar = ready.index(stage)
    mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(k_desc, [start, 0], bar, k_smem.index(stage))
    tma.async_copy_global_to_shared(v_desc, [start, 0], bar, v_smem.index(stage))


@gluon.jit
def _masked_scores(s, idx_row, tile, seq_len, cols, BLOCK: gl.constexpr, EVEN_N: gl.constexpr):
    """Raw scores of the tile, -inf on keys past the sequence end (TMA filled their rows with zeros)."""
    if not EVEN_N:
        start = gl.load(idx_row + tile) * BLOCK
        s = gl.where(gl.expand_dims(start + cols < seq_len, 0), s, float("-inf"))
    return s


@gluon.jit
def block_sparse_forward_hopper_kernel(
    Q, K, V, Out, Lse, KvIdx, KvCnt,
    s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_ob, s_oh, s_on, s_ib, s_ih, s_iq, s_cb, s_ch,
    num_heads, seq_len, qk_scale_log2,
    BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, EVEN_N: gl.constexpr,
    SMEM_LAYOUT: gl.constexpr, num_warps: gl.constexpr,
):
    q_block = gl.program_id(0)
    bh = gl.program_id(1)
    b = (bh // num_heads).to(gl.int64)
    h = (bh % num_heads).to(gl.int64)
    dtype: gl.constexpr = Q.dtype.element_ty

    # One wgmma layout for S (BLOCK x BLOCK) and O (BLOCK x HEAD_DIM): 8 warps along the rows, two warpgroups
    # of 64 rows each.
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    s_rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)

    q_desc = tma.make_tensor_descriptor(Q + b * s_qb + h * s_qh, [seq_len, HEAD_DIM], [s_qn, 1], [BLOCK, HEAD_DIM],
                                        SMEM_LAYOUT)
    k_desc = tma.make_tensor_descriptor(K + b * s_kb + h * s_kh, [seq_len, HEAD_DIM], [s_kn, 1], [BLOCK, HEAD_DIM],
                                        SMEM_LAYOUT)
    v_desc = tma.make_tensor_descriptor(V + b * s_vb + h * s_vh, [seq_len, HEAD_DIM], [s_vn, 1], [BLOCK, HEAD_DIM],
                                        SMEM_LAYOUT)
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK, HEAD_DIM], SMEM_LAYOUT)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK, HEAD_DIM], SMEM_LAYOUT)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK, HEAD_DIM], SMEM_LAYOUT)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    q_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
    mbarrier.init(q_ready, count=1)

    count = gl.load(KvCnt + b * s_cb + h * s_ch + q_block)
    idx_row = KvIdx + b * s_ib + h * s_ih + q_block * s_iq
    mbarrier.expect(q_ready, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [q_block * BLOCK, 0], q_ready, q_smem)
    for first in gl.static_range(STAGES - 1):
        if first < count:
            _issue_tile_load(k_desc, v_desc, k_smem, v_smem, ready, idx_row, first, STAGES, BLOCK)

    cols = gl.arange(0, BLOCK, layout=gl.SliceLayout(0, s_layout))
    m_i = gl.full([BLOCK], float("-inf"), gl.float32, layout=s_rows)
    l_i = gl.zeros([BLOCK], gl.float32, layout=s_rows)
    acc = gl.zeros([BLOCK, HEAD_DIM], gl.float32, layout=o_layout)
    s_zero = gl.zeros([BLOCK, BLOCK], gl.float32, layout=s_layout)
    mbarrier.wait(q_ready, phase=0)

    if count > 0:
        # Tile 0: its scores, softmax and P; its P V is issued in the next iteration (or after the loop).
        if STAGES - 1 < count:
            _issue_tile_load(k_desc, v_desc, k_smem, v_smem, ready, idx_row, STAGES - 1, STAGES, BLOCK)
        mbarrier.wait(ready.index(0), phase=0)
        s = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        s = warpgroup_mma_wait(num_outstanding=0, deps=(s, ))
        s = _masked_scores(s, idx_row, 0, seq_len, cols, BLOCK, EVEN_N)
        m_i = gl.max(s, 1) * qk_scale_log2
        p = gl.exp2(s * qk_scale_log2 - gl.expand_dims(m_i, 1))
        l_i = gl.sum(p, 1)
        p_prev = gl.convert_layout(p.to(dtype), p_layout)
        for tile in range(1, count):
            stage = tile % STAGES
            prev_stage = (tile - 1) % STAGES
            mbarrier.wait(ready.index(stage), phase=(tile // STAGES) & 1)
            s = warpgroup_mma(q_smem, k_smem.index(stage).permute((1, 0)), s_zero, use_acc=False, is_async=True)
            acc = warpgroup_mma(p_prev, v_smem.index(prev_stage), acc, is_async=True)
            # wgmma groups retire in order: with one left outstanding (P V), the scores are ready.
            s = warpgroup_mma_wait(num_outstanding=1, deps=(s, ))
            s = _masked_scores(s, idx_row, tile, seq_len, cols, BLOCK, EVEN_N)
            m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale_log2)
            p = gl.exp2(s * qk_scale_log2 - gl.expand_dims(m_new, 1))
            alpha = gl.exp2(m_i - m_new)
            l_i = l_i * alpha + gl.sum(p, 1)
            m_i = m_new
            p_prev = gl.convert_layout(p.to(dtype), p_layout)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
            # Stage prev_stage held tile - 1, whose K and V have now been read by both products in this warpgroup;
            # the CTA-wide barrier waits for the other warpgroup before one thread lets TMA overwrite them.
            gl.thread_barrier()
            if tile - 1 + STAGES < count:
                _issue_tile_load(k_desc, v_desc, k_smem, v_smem, ready, idx_row, tile - 1 + STAGES, STAGES, BLOCK)
        acc = warpgroup_mma(p_prev, v_smem.index((count - 1) % STAGES), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))

    for i in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(i))
    mbarrier.invalidate(q_ready)

    empty = l_i == 0.0
    lse = gl.where(empty, float("-inf"), (m_i + gl.log2(gl.where(empty, 1.0, l_i))) / 1.4426950408889634)
    out = acc / gl.expand_dims(gl.convert_layout(gl.where(empty, 1.0, l_i), o_rows), 1)
    rows = q_block * BLOCK + gl.arange(0, BLOCK, layout=o_rows)
    dims = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    o_ptrs = Out + b * s_ob + h * s_oh + gl.expand_dims(rows, 1) * s_on + gl.expand_dims(dims, 0)
    gl.store(o_ptrs, out.to(dtype), mask=gl.expand_dims(rows < seq_len, 1))
    lse_rows = q_block * BLOCK + gl.arange(0, BLOCK, layout=s_rows)
    gl.store(Lse + (b * num_heads + h) * seq_len + lse_rows, lse, mask=lse_rows < seq_len)


def shared_layout(dtype):
    """The NVMMA shared layout of a (128, head_dim) tile of `dtype` (a gl dtype), for TMA and wgmma."""
    return gl.NVMMASharedLayout.get_default_for([GLUON_BLOCK, 128], dtype)


def launch_forward_hopper(q, k, v, out, lse, kv_indices, kv_counts, scale: float) -> None:
    """q, k, v (B, H, N, D) with unit last stride, 16-byte aligned rows; out like q (any strides), lse (B, H, N)
    contiguous float32; kv_indices/kv_counts int32 (B|1, H|1, nQ, ...) / (B|1, H|1, nQ); scale > 0."""
    b, h, n, d = q.shape
    gl_dtype = gl.bfloat16 if q.dtype.itemsize == 2 and q.dtype.is_floating_point and str(q.dtype) == "torch.bfloat16" \
        else gl.float16
    layout = gl.NVMMASharedLayout.get_default_for([GLUON_BLOCK, d], gl_dtype)

    def strides(x, dims):
        return [x.stride(i) if x.shape[i] > 1 else 0 for i in range(dims)]

    block_sparse_forward_hopper_kernel[(triton.cdiv(n, GLUON_BLOCK), b * h)](
        q, k, v, out, lse, kv_indices, kv_counts,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1),
        v.stride(2), out.stride(0), out.stride(1), out.stride(2), *strides(kv_indices, 3), *strides(kv_counts, 2),
        h, n, scale * LOG2E,
        BLOCK=GLUON_BLOCK, HEAD_DIM=d, STAGES=GLUON_STAGES, EVEN_N=n % GLUON_BLOCK == 0, SMEM_LAYOUT=layout,
        num_warps=8,
    )
