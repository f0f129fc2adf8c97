"""The Gluon kernel of the Hopper forward (gluon_hopper.py says what it does and when it runs). Imported only
through gluon_hopper.load_kernel(), so a Triton without Gluon's Hopper API never reaches these imports."""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait

# Triton 3.6 (the H100's) names the TMA load async_copy_global_to_shared; later versions call it async_load.
tma_load = tma.async_load if hasattr(tma, "async_load") else tma.async_copy_global_to_shared


@gluon.jit
def _work_item(item, num_q_blocks, num_heads, seq_len, HEAD_DIM: gl.constexpr, BNHD: gl.constexpr):
    """Work item -> (query block, batch, head, first row and column of this (batch, head) in the 2D views the
    TMA descriptors cover). Items run query blocks fastest, so the programs at work together share heads (and
    their keys in L2). BNHD: the tensors are (B, N, H, D) seen as (B * N, H * D); else (B * H * N, D)."""
    bh = item // num_q_blocks
    q_block = item % num_q_blocks
    b = bh // num_heads
    h = bh % num_heads
    if BNHD:
        return q_block, b, h, b * seq_len, h * HEAD_DIM
    return q_block, b, h, bh * seq_len, h * 0


@gluon.jit
def _masked_scores(s, idx_row, tile, seq_len, cols, BLOCK: gl.constexpr, EVEN_N: gl.constexpr):
    """Raw scores of the tile, -inf on keys past the sequence end. Those rows of the 2D view belong to the next
    (batch, head) or lie past the tensor (TMA gives zeros); either way their values meet a zero probability."""
    if not EVEN_N:
        start = gl.load(idx_row + tile) * BLOCK
        s = gl.where(gl.expand_dims(start + cols < seq_len, 0), s, float("-inf"))
    return s


@gluon.jit
def _text_scores(s, TextMask, b, s_tmb, text_cols, text_len, HAS_TEXT_MASK: gl.constexpr):
    """Raw scores of a text tile, -inf past the text's end and on padding keys."""
    valid = text_cols < text_len
    if HAS_TEXT_MASK:
        valid = valid & (gl.load(TextMask + b * s_tmb + text_cols, mask=valid, other=0) != 0)
    return gl.where(gl.expand_dims(valid, 0), s, float("-inf"))


@gluon.jit
def _pooled_scores(s, PoolBias, dropped_row, pooled_cols, num_kv_blocks):
    """Raw scores of a tile of pooled columns plus their bias; -inf where the query block keeps the block (it was
    computed exactly) and past the last block."""
    valid = pooled_cols < num_kv_blocks
    valid = valid & (gl.load(dropped_row + pooled_cols, mask=valid, other=0) != 0)
    bias = gl.load(PoolBias + pooled_cols, mask=valid, other=0.0)
    return gl.where(gl.expand_dims(valid, 0), s + gl.expand_dims(bias, 0), float("-inf"))


@gluon.jit
def _producer(args, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, EVEN_N: gl.constexpr,
              BNHD: gl.constexpr, HAS_TEXT: gl.constexpr, HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr):
    """One warp. Per work item: the query block's two halves once both consumers have released the previous
    ones, then every kept key block's K and V into the ring of stages as soon as both consumers have released
    a stage. The ring runs on across work items, so the next item's loads overlap this item's last products
    and its output store."""
    (q_desc, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, q_smem, k_smem, v_smem, ready, empty, q_ready,
     q_empty, turn, Out, Lse, KvIdx, KvCnt, TextMask, PoolBias, Dropped, s_ob, s_oh, s_on, s_ib, s_ih, s_iq, s_cb,
     s_ch, s_tmb, s_db, s_dh, s_dq, num_heads, seq_len, text_len, num_kv_blocks, num_q_blocks, total,
     qk_scale_log2) = args
    HALF: gl.constexpr = BLOCK // 2
    text_tiles = gl.cdiv(text_len, BLOCK) if HAS_TEXT else 0
    pooled_tiles = gl.cdiv(num_kv_blocks, BLOCK) if POOLED else 0
    tile = 0
    done = 0
    for item in range(gl.program_id(0), total, gl.num_programs(0)):
        q_block, b, h, row0, col0 = _work_item(item, num_q_blocks, num_heads, seq_len, HEAD_DIM, BNHD)
        # A fresh mbarrier counts as having completed phase 1: the first waits on q_empty and empty pass.
        mbarrier.wait(q_empty, (done & 1) ^ 1)
        mbarrier.expect(q_ready, 2 * q_desc.block_type.nbytes)
        tma_load(q_desc, [row0 + q_block * BLOCK, col0], q_ready, q_smem.index(0))
        tma_load(q_desc, [row0 + q_block * BLOCK + HALF, col0], q_ready, q_smem.index(1))
        count = gl.load(KvCnt + b * s_cb + h * s_ch + q_block)
        idx_row = KvIdx + b * s_ib + h * s_ih + q_block * s_iq
        for j in range(count + text_tiles + pooled_tiles):
            stage = tile % STAGES
            mbarrier.wait(empty.index(stage), ((tile // STAGES) & 1) ^ 1)
            bar = ready.index(stage)
            mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
            if POOLED and j >= count + text_tiles:  # the pooled columns, last; (B * H * nK, D) views
                pooled_row = (b * num_heads + h) * num_kv_blocks + (j - count - text_tiles) * BLOCK
                tma_load(pk_desc, [pooled_row, 0], bar, k_smem.index(stage))
                tma_load(pv_desc, [pooled_row, 0], bar, v_smem.index(stage))
            elif HAS_TEXT and j >= count:  # the text keys, after the visual ones; (B * H * L, D) views
                text_row = (b * num_heads + h) * text_len + (j - count) * BLOCK
                tma_load(tk_desc, [text_row, 0], bar, k_smem.index(stage))
                tma_load(tv_desc, [text_row, 0], bar, v_smem.index(stage))
            else:
                start = gl.load(idx_row + j) * BLOCK
                tma_load(k_desc, [row0 + start, col0], bar, k_smem.index(stage))
                tma_load(v_desc, [row0 + start, col0], bar, v_smem.index(stage))
            tile += 1
        done += 1


@gluon.jit
def _consumer(args, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, EVEN_N: gl.constexpr,
              BNHD: gl.constexpr, HAS_TEXT: gl.constexpr, HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr,
              HALF_INDEX: gl.constexpr):
    """One warpgroup, 64 query rows (half HALF_INDEX of each query block). Per key tile j it issues
    S_j = Q K_j^T and O += P_{j-1} V_{j-1} in its turn, hands the turn to the other warpgroup, and runs the
    softmax of S_j while the tensor cores work on its own P V and on the other warpgroup's products."""
    (q_desc, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, q_smem, k_smem, v_smem, ready, empty, q_ready,
     q_empty, turn, Out, Lse, KvIdx, KvCnt, TextMask, PoolBias, Dropped, s_ob, s_oh, s_on, s_ib, s_ih, s_iq, s_cb,
     s_ch, s_tmb, s_db, s_dh, s_dq, num_heads, seq_len, text_len, num_kv_blocks, num_q_blocks, total,
     qk_scale_log2) = args
    HALF: gl.constexpr = BLOCK // 2
    dtype: gl.constexpr = k_smem.dtype
    text_tiles = gl.cdiv(text_len, BLOCK) if HAS_TEXT else 0
    pooled_tiles = gl.cdiv(num_kv_blocks, BLOCK) if POOLED else 0
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    s_rows: gl.constexpr = gl.SliceLayout(1, s_layout)
    o_rows: gl.constexpr = gl.SliceLayout(1, o_layout)
    my_turn = turn.index(HALF_INDEX)
    their_turn = turn.index(1 - HALF_INDEX)
    q = q_smem.index(HALF_INDEX)
    cols = gl.arange(0, BLOCK, layout=gl.SliceLayout(0, s_layout))
    s_zero = gl.zeros([HALF, BLOCK], gl.float32, layout=s_layout)

    tile = 0
    done = 0
    for item in range(gl.program_id(0), total, gl.num_programs(0)):
        q_block, b, h, row0, col0 = _work_item(item, num_q_blocks, num_heads, seq_len, HEAD_DIM, BNHD)
        count = gl.load(KvCnt + b * s_cb + h * s_ch + q_block)
        idx_row = KvIdx + b * s_ib + h * s_ih + q_block * s_iq
        m_i = gl.full([HALF], float("-inf"), gl.float32, layout=s_rows)
        l_i = gl.zeros([HALF], gl.float32, layout=s_rows)
        acc = gl.zeros([HALF, HEAD_DIM], gl.float32, layout=o_layout)
        mbarrier.wait(q_ready, done & 1)
        tiles = count + text_tiles + pooled_tiles
        if tiles > 0:
            p_prev = gl.zeros([HALF, BLOCK], dtype, layout=p_layout)
            for j in range(tiles):
                stage = tile % STAGES
                prev_stage = (tile + STAGES - 1) % STAGES
                if j == 0:
                    # No P V yet: multiply the zero P by this tile's V (loaded, so finite), not by a stage that
                    # may hold another item's data or uninitialised shared memory (NaN patterns).
                    prev_stage = stage
                mbarrier.wait(ready.index(stage), (tile // STAGES) & 1)
                # Both consumers take the same turns in the same order; warpgroup 0 goes first.
                mbarrier.wait(my_turn, (tile & 1) ^ (1 - HALF_INDEX))
                s = warpgroup_mma(q, k_smem.index(stage).permute((1, 0)), s_zero, use_acc=False, is_async=True)
                acc = warpgroup_mma(p_prev, v_smem.index(prev_stage), acc, is_async=True)
                mbarrier.arrive(their_turn, count=1)
                # wgmma groups retire in order: with one left outstanding (P V), the scores are ready.
                s = warpgroup_mma_wait(num_outstanding=1, deps=(s, ))
                if j == tiles - 1:
                    # The item's last Q K^T is done: release this half of Q now, so that the producer loads the
                    # next item's while this warpgroup finishes the last P V, the softmax and the store.
                    mbarrier.arrive(q_empty, count=1)
                if POOLED and j >= count + text_tiles:
                    s = _pooled_scores(s, PoolBias, Dropped + b * s_db + h * s_dh + q_block * s_dq,
                                       (j - count - text_tiles) * BLOCK + cols, num_kv_blocks)
                elif HAS_TEXT and j >= count:
                    s = _text_scores(s, TextMask, b, s_tmb, (j - count) * BLOCK + cols, text_len, HAS_TEXT_MASK)
                else:
                    s = _masked_scores(s, idx_row, j, seq_len, cols, BLOCK, EVEN_N)
                m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale_log2)
                if HAS_TEXT or POOLED:
                    # A row may have seen no finite score yet (an empty row whose text keys so far are padding,
                    # or whose pooled tile holds no dropped block): subtract 0 there instead of -inf, so that no
                    # -inf - -inf appears. Every visual tile holds a finite score in every row, so without text
                    # or pooled columns this is not needed.
                    m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
                else:
                    m_use = m_new
                p = gl.exp2(s * qk_scale_log2 - gl.expand_dims(m_use, 1))
                alpha = gl.exp2(m_i - m_use)
                l_i = l_i * alpha + gl.sum(p, 1)
                m_i = m_new
                p_prev = gl.convert_layout(p.to(dtype), p_layout)
                acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
                acc = acc * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
                if j > 0:  # the previous tile's K and V have been read by both of this warpgroup's products
                    mbarrier.arrive(empty.index(prev_stage), count=1)
                tile += 1
            last = (tile + STAGES - 1) % STAGES
            acc = warpgroup_mma(p_prev, v_smem.index(last), acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
            mbarrier.arrive(empty.index(last), count=1)
        else:
            mbarrier.arrive(q_empty, count=1)  # an empty row never reads Q

        empty_row = l_i == 0.0
        lse = gl.where(empty_row, float("-inf"), (m_i + gl.log2(gl.where(empty_row, 1.0, l_i))) / 1.4426950408889634)
        out = acc / gl.expand_dims(gl.convert_layout(gl.where(empty_row, 1.0, l_i), o_rows), 1)
        rows = q_block * BLOCK + HALF_INDEX * HALF + gl.arange(0, HALF, layout=o_rows)
        dims = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
        o_ptrs = Out + b.to(gl.int64) * s_ob + h.to(gl.int64) * s_oh + gl.expand_dims(rows, 1).to(gl.int64) * s_on \
            + gl.expand_dims(dims, 0)
        gl.store(o_ptrs, out.to(dtype), mask=gl.expand_dims(rows < seq_len, 1))
        lse_rows = q_block * BLOCK + HALF_INDEX * HALF + gl.arange(0, HALF, layout=s_rows)
        gl.store(Lse + (b * num_heads + h).to(gl.int64) * seq_len + lse_rows, lse, mask=lse_rows < seq_len)
        done += 1


@gluon.jit
def _consumer_first_half(args, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
                         EVEN_N: gl.constexpr, BNHD: gl.constexpr, HAS_TEXT: gl.constexpr,
                         HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr):
    _consumer(args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, 0)


@gluon.jit
def _consumer_second_half(args, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
                          EVEN_N: gl.constexpr, BNHD: gl.constexpr, HAS_TEXT: gl.constexpr,
                          HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr):
    _consumer(args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, 1)


@gluon.jit
def block_sparse_forward_hopper_kernel(
    q_desc, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, Out, Lse, KvIdx, KvCnt, TextMask, PoolBias, Dropped,
    s_ob, s_oh, s_on, s_ib, s_ih, s_iq, s_cb, s_ch, s_tmb, s_db, s_dh, s_dq,
    num_heads, seq_len, text_len, num_kv_blocks, num_q_blocks, total, qk_scale_log2,
    BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, EVEN_N: gl.constexpr, BNHD: gl.constexpr,
    HAS_TEXT: gl.constexpr, HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr, num_warps: gl.constexpr,
):
    """A persistent grid (one program per SM) over the (batch * head, query block) work items, each program in
    three partitions (FlashAttention-3's layout): two consumer warpgroups of 64 query rows each that take turns
    on the tensor cores, and one producer warp that fills the ring of K/V stages with TMA. Text keys
    (text_len > 0; tk_desc / tv_desc over (B * H * L, D)) are walked after each row's kept blocks, with an
    optional (B, L) uint8 padding mask. With POOLED, `rectified`'s pooled columns come last (pooled.py): every
    key block's mean key and value (pk_desc / pv_desc over (B * H * nK, D)), with the logit bias PoolBias (raw
    score units) and only where the query block's (B|1, H|1, nQ, nK) uint8 `Dropped` row says it drops them."""
    HALF: gl.constexpr = BLOCK // 2
    dtype: gl.constexpr = k_desc.dtype
    q_smem = gl.allocate_shared_memory(dtype, [2, HALF, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK, HEAD_DIM], v_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    q_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)  # both consumers release a stage
    mbarrier.init(turn.index(0), count=1)
    mbarrier.init(turn.index(1), count=1)
    mbarrier.init(q_ready, count=1)
    mbarrier.init(q_empty, count=2)

    args = (q_desc, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, q_smem, k_smem, v_smem, ready, empty,
            q_ready, q_empty, turn, Out, Lse, KvIdx, KvCnt, TextMask, PoolBias, Dropped, s_ob, s_oh, s_on, s_ib, s_ih,
            s_iq, s_cb, s_ch, s_tmb, s_db, s_dh, s_dq, num_heads, seq_len, text_len, num_kv_blocks, num_q_blocks,
            total, qk_scale_log2)
    gl.warp_specialize([
        (_consumer_first_half, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED)),
        (_consumer_second_half, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED)),
        (_producer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED)),
    ], [4, 1], [240, 24])
