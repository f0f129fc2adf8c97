"""The Gluon kernel of the Hopper forward (gluon_hopper.py says what it does and when it runs). Imported only
through gluon_hopper.load_kernel(), so a Triton without Gluon's Hopper API never reaches these imports."""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

# Triton 3.6 (the H100's) names the TMA load async_copy_global_to_shared; later versions call it async_load.
tma_load = tma.async_load if hasattr(tma, "async_load") else tma.async_copy_global_to_shared
tma_store = tma.async_store if hasattr(tma, "async_store") else tma.async_copy_shared_to_global

# Each consumer warpgroup owns 64 query rows, and a program works on 128 at once. With 128-token blocks that is
# one query block, split between the two consumers (one lane); with 64-token blocks it is two query blocks,
# each with its own key list, so each consumer runs its own lane of work items with its own producer and ring.
CONSUMER_ROWS = gl.constexpr(64)
PROGRAM_ROWS = gl.constexpr(128)
LN2 = gl.constexpr(0.6931471805599453)  # the LSE in natural-log units from the scores' log2 units


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
def _unit_item(unit, whole_items, split):
    """Work unit -> (its work item, `piece`: -1 for a whole item, else the unit's slot in the partial results).
    Units below whole_items are whole items; the rest are the last items of the grid's last wave, each cut into
    `split` pieces of its tiles, so that the wave spreads over every program (split_merge.py merges them)."""
    piece = unit - whole_items
    item = gl.where(piece < 0, unit, whole_items + piece // split)
    return item, gl.where(piece < 0, -1, piece)


@gluon.jit
def _piece_tiles(piece, split, tiles):
    """The range [j_lo, j_hi) of an item's `tiles` (kept blocks, then text and pooled columns) a unit walks."""
    part = piece % split
    j_lo = gl.where(piece < 0, 0, tiles * part // split)
    j_hi = gl.where(piece < 0, tiles, tiles * (part + 1) // split)
    return j_lo, j_hi


@gluon.jit
def _publish_claim(claim, unit, count):
    """The producer's half of the hand-over of a work unit to its lane's consumers: (unit, its item's count of
    kept blocks) into the lane's claim slot of shared memory. The producer's next arrival on the lane's q_ready
    barrier publishes it: an mbarrier arrival releases the arriving thread's writes, and every thread of the
    producer warp writes the same pair, the arriving one among them (checked in the PTX of Triton 3.6)."""
    pair = gl.arange(0, 2, layout=gl.BlockedLayout([2], [32], [1], [0]))
    claim.store(gl.where(pair == 0, unit, count))


@gluon.jit
def _read_claim(claim):
    """The consumers' half: (unit, count) from the lane's claim slot, after the wait on q_ready."""
    layout: gl.constexpr = gl.BlockedLayout([2], [32], [4], [0])
    pair = gl.arange(0, 2, layout=layout)
    values = claim.load(layout)
    return gl.sum(gl.where(pair == 0, values, 0), 0), gl.sum(gl.where(pair == 1, values, 0), 0)


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
def _wait_for_tile(ready, my_turn, tile, LANE: gl.constexpr, STAGES: gl.constexpr, CONSUMER: gl.constexpr,
                   TAKE_TURNS: gl.constexpr):
    """The ring stage of the consumer's tile number `tile`, once its K and V have landed and, where the consumers
    take turns, once it is this one's turn (both take the same turns in the same order; warpgroup 0 first)."""
    stage = LANE * STAGES + tile % STAGES
    mbarrier.wait(ready.index(stage), (tile // STAGES) & 1)
    if TAKE_TURNS:
        mbarrier.wait(my_turn, (tile & 1) ^ (1 - CONSUMER))
    return stage


@gluon.jit
def _tile_probabilities(s, j, m_i, l_i, count, text_tiles, cols, idx_row, seq_len, TextMask, b, s_tmb, text_len,
                        PoolBias, dropped_row, num_kv_blocks, qk_scale_log2, dtype: gl.constexpr,
                        p_layout: gl.constexpr, BLOCK: gl.constexpr, EVEN_N: gl.constexpr, HAS_TEXT: gl.constexpr,
                        HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr):
    """The online-softmax step of the item's tile j (kept blocks, then text tiles, then pooled columns) from its
    raw scores s: (P in the input dtype as the P V operand, the rescale alpha of the accumulator, new m, new l)."""
    if POOLED and j >= count + text_tiles:
        s = _pooled_scores(s, PoolBias, dropped_row, (j - count - text_tiles) * BLOCK + cols, num_kv_blocks)
    elif HAS_TEXT and j >= count:
        s = _text_scores(s, TextMask, b, s_tmb, (j - count) * BLOCK + cols, text_len, HAS_TEXT_MASK)
    else:
        s = _masked_scores(s, idx_row, j, seq_len, cols, BLOCK, EVEN_N)
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale_log2)
    if HAS_TEXT or POOLED:
        # A row may have seen no finite score yet (an empty row whose text keys so far are padding, or whose
        # pooled tile holds no dropped block): subtract 0 there instead of -inf, so that no -inf - -inf appears.
        # Every visual tile holds a finite score in every row, so without text or pooled columns this is not
        # needed.
        m_use = gl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_use = m_new
    p = gl.exp2(s * qk_scale_log2 - gl.expand_dims(m_use, 1))
    alpha = gl.exp2(m_i - m_use)
    l_i = l_i * alpha + gl.sum(p, 1)
    return gl.convert_layout(p.to(dtype), p_layout), alpha, m_new, l_i


@gluon.jit
def _producer(args, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, EVEN_N: gl.constexpr,
              BNHD: gl.constexpr, HAS_TEXT: gl.constexpr, HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr,
              OUT_TMA: gl.constexpr, LANE: gl.constexpr):
    """One warp per lane. Its first work unit is fixed by the program id; every later one it claims from the
    kernel's counter when it has issued the loads of the one before, and hands it to the lane's consumers
    (_publish_claim). Per unit: the query block (in 64-row parts, one per consumer of the lane) once the lane's
    consumers have released the previous one, then every kept key block's K and V into the lane's ring of stages
    as soon as its consumers have released a stage. The ring runs on across work units, so the next unit's loads
    overlap this one's last products and its output store. At the end it hands over `units`, which stops them."""
    (q_desc, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, o_desc, q_smem, k_smem, v_smem, ready, empty,
     q_ready, q_empty, turn, k_read, claims, Out, Lse, KvIdx, KvCnt, TextMask, PoolBias, Dropped, s_ob, s_oh, s_on,
     s_ib, s_ih, s_iq, s_cb, s_ch, s_tmb, s_db, s_dh, s_dq, num_heads, seq_len, text_len, num_kv_blocks,
     num_q_blocks, units, whole_items, split, Counter, PartOut, PartLse, qk_scale_log2) = args
    LANES: gl.constexpr = PROGRAM_ROWS // BLOCK
    PARTS: gl.constexpr = BLOCK // CONSUMER_ROWS  # consumers per lane
    text_tiles = gl.cdiv(text_len, BLOCK) if HAS_TEXT else 0
    pooled_tiles = gl.cdiv(num_kv_blocks, BLOCK) if POOLED else 0
    lane_q_ready = q_ready.index(LANE)
    lane_q_empty = q_empty.index(LANE)
    claim = claims.slice(2 * LANE, 2)
    first_claimed = gl.num_programs(0) * LANES  # the counter numbers the units after the first wave
    tile = 0
    done = 0
    unit = gl.program_id(0) * LANES + LANE
    while unit < units:
        item, piece = _unit_item(unit, whole_items, split)
        q_block, b, h, row0, col0 = _work_item(item, num_q_blocks, num_heads, seq_len, HEAD_DIM, BNHD)
        count = gl.load(KvCnt + b * s_cb + h * s_ch + q_block)
        j_lo, j_hi = _piece_tiles(piece, split, count + text_tiles + pooled_tiles)
        # A fresh mbarrier counts as having completed phase 1: the first waits on q_empty and empty pass.
        mbarrier.wait(lane_q_empty, (done & 1) ^ 1)
        _publish_claim(claim, unit, count)
        mbarrier.expect(lane_q_ready, PARTS * q_desc.block_type.nbytes)
        for part in gl.static_range(PARTS):
            tma_load(q_desc, [row0 + q_block * BLOCK + part * CONSUMER_ROWS, col0], lane_q_ready,
                     q_smem.index(LANE * PARTS + part))
        idx_row = KvIdx + b * s_ib + h * s_ih + q_block * s_iq
        for j in range(j_lo, j_hi):
            stage = LANE * STAGES + tile % STAGES
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
        # Claiming the next unit only now, when this one's loads are issued, lets the programs whose units run
        # short take more of them. A fixed stride of units per program measured 1.25-1.53x slower on rows of
        # different lengths, and the same on rows of equal length (BENCHMARKS.md, session 13).
        unit = gl.atomic_add(Counter, 1, sem="relaxed") + first_claimed
    mbarrier.wait(lane_q_empty, (done & 1) ^ 1)
    _publish_claim(claim, units, 0)
    mbarrier.arrive(lane_q_ready, count=1)


@gluon.jit
def _consumer(args, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, EVEN_N: gl.constexpr,
              BNHD: gl.constexpr, HAS_TEXT: gl.constexpr, HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr,
              OUT_TMA: gl.constexpr, CONSUMER: gl.constexpr):
    """One warpgroup, 64 query rows: part CONSUMER % PARTS of each query block of lane CONSUMER // PARTS. Per key
    tile j it issues S_j = Q K_j^T and O += P_{j-1} V_{j-1}, and runs the softmax of S_j while the tensor cores
    work on its own P V and on the other warpgroup's products. Where both consumers share a lane (128-token
    blocks) they take the same tiles, so they take turns on the tensor cores, each handing the turn over after
    issuing (FA3's ping-pong). Consumers of separate lanes walk key lists of different lengths and do not: turns
    between them, the shorter lane passing its turns at the end, measured 1.3-2.6% slower at Wan 480p and 1%
    faster at Wan 720p (BENCHMARKS.md, session 12)."""
    (q_desc, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, o_desc, q_smem, k_smem, v_smem, ready, empty,
     q_ready, q_empty, turn, k_read, claims, Out, Lse, KvIdx, KvCnt, TextMask, PoolBias, Dropped, s_ob, s_oh, s_on,
     s_ib, s_ih, s_iq, s_cb, s_ch, s_tmb, s_db, s_dh, s_dq, num_heads, seq_len, text_len, num_kv_blocks,
     num_q_blocks, units, whole_items, split, Counter, PartOut, PartLse, qk_scale_log2) = args
    PARTS: gl.constexpr = BLOCK // CONSUMER_ROWS  # consumers per lane
    LANE: gl.constexpr = CONSUMER // PARTS
    PART: gl.constexpr = CONSUMER % PARTS
    TAKE_TURNS: gl.constexpr = PARTS == 2
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
    my_turn = turn.index(CONSUMER)
    their_turn = turn.index(1 - CONSUMER)
    lane_q_ready = q_ready.index(LANE)
    lane_q_empty = q_empty.index(LANE)
    q = q_smem.index(CONSUMER)
    cols = gl.arange(0, BLOCK, layout=gl.SliceLayout(0, s_layout))
    s_zero = gl.zeros([CONSUMER_ROWS, BLOCK], gl.float32, layout=s_layout)

    claim = claims.slice(2 * LANE, 2)
    tile = 0
    done = 0
    items_with_tiles = 0  # the phases of k_read
    mbarrier.wait(lane_q_ready, 0)
    unit, count = _read_claim(claim)
    while unit < units:  # the producer hands over `units` when the work is done
        item, piece = _unit_item(unit, whole_items, split)
        q_block, b, h, row0, col0 = _work_item(item, num_q_blocks, num_heads, seq_len, HEAD_DIM, BNHD)
        j_lo, j_hi = _piece_tiles(piece, split, count + text_tiles + pooled_tiles)
        idx_row = KvIdx + b * s_ib + h * s_ih + q_block * s_iq
        m_i = gl.full([CONSUMER_ROWS], float("-inf"), gl.float32, layout=s_rows)
        l_i = gl.zeros([CONSUMER_ROWS], gl.float32, layout=s_rows)
        acc = gl.zeros([CONSUMER_ROWS, HEAD_DIM], gl.float32, layout=o_layout)
        last = LANE * STAGES  # the stage of the item's last tile, once it has tiles
        if j_hi > j_lo:
            p_prev = gl.zeros([CONSUMER_ROWS, BLOCK], dtype, layout=p_layout)
            for j in range(j_lo, j_hi):
                prev_stage = LANE * STAGES + (tile + STAGES - 1) % STAGES
                stage = _wait_for_tile(ready, my_turn, tile, LANE, STAGES, CONSUMER, TAKE_TURNS)
                if j == j_lo:
                    # No P V yet: multiply the zero P by this tile's V (loaded, so finite), not by a stage that
                    # may hold another item's data or uninitialised shared memory (NaN patterns). Issuing this
                    # Q K^T alone instead measured, at 128-token blocks, 1-1.5% slower at Wan 480p 10-20% and
                    # 1-2% faster at 100% and at Wan 720p; at 64, 3.5-4% faster at Wan 480p but 28% slower at
                    # HunyuanVideo 720p (BENCHMARKS.md, session 12).
                    prev_stage = stage
                s = warpgroup_mma(q, k_smem.index(stage).permute((1, 0)), s_zero, use_acc=False, is_async=True)
                acc = warpgroup_mma(p_prev, v_smem.index(prev_stage), acc, is_async=True)
                if TAKE_TURNS:
                    mbarrier.arrive(their_turn, count=1)
                # wgmma groups retire in order: with one left outstanding (P V), the scores are ready.
                s = warpgroup_mma_wait(num_outstanding=1, deps=(s, ))
                if j == j_hi - 1:
                    # The item's last Q K^T is done: release this part of Q now, so that the producer loads the
                    # next item's while this warpgroup finishes the last P V, the softmax and the store.
                    mbarrier.arrive(lane_q_empty, count=1)
                    if OUT_TMA and TAKE_TURNS:
                        mbarrier.arrive(k_read.index(0), count=1)  # nor will this one read the last K tile
                p_prev, alpha, m_i, l_i = _tile_probabilities(
                    s, j, m_i, l_i, count, text_tiles, cols, idx_row, seq_len, TextMask, b, s_tmb, text_len,
                    PoolBias, Dropped + b * s_db + h * s_dh + q_block * s_dq, num_kv_blocks, qk_scale_log2, dtype,
                    p_layout, BLOCK, EVEN_N, HAS_TEXT, HAS_TEXT_MASK, POOLED)
                acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
                acc = acc * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)
                if j > j_lo:  # the previous tile's K and V have been read by both of this warpgroup's products
                    mbarrier.arrive(empty.index(prev_stage), count=1)
                tile += 1
            last = LANE * STAGES + (tile + STAGES - 1) % STAGES
            acc = warpgroup_mma(p_prev, v_smem.index(last), acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
            items_with_tiles += 1
        else:
            mbarrier.arrive(lane_q_empty, count=1)  # an empty row never reads Q

        empty_row = l_i == 0.0
        l_safe = gl.where(empty_row, 1.0, l_i)
        lse = gl.where(empty_row, float("-inf"), (m_i + gl.log2(l_safe)) * LN2)
        # One reciprocal per row and a multiply per element: a division per element compiles to 64 IEEE divisions
        # per thread, which ran in the item's tail while the tensor cores waited.
        out = acc * gl.expand_dims(gl.convert_layout(1.0 / l_safe, o_rows), 1)
        block_rows = PART * CONSUMER_ROWS + gl.arange(0, CONSUMER_ROWS, layout=o_rows)
        dims = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
        lse_block_rows = PART * CONSUMER_ROWS + gl.arange(0, CONSUMER_ROWS, layout=s_rows)
        if piece >= 0:  # a piece of a split item: its own normalised output and LSE, in float32 for the merge
            part_ptrs = PartOut + piece.to(gl.int64) * BLOCK * HEAD_DIM + gl.expand_dims(block_rows, 1) * HEAD_DIM \
                + gl.expand_dims(dims, 0)
            gl.store(part_ptrs, out)
            gl.store(PartLse + piece.to(gl.int64) * BLOCK + lse_block_rows, lse)
        else:
            rows = q_block * BLOCK + block_rows
            if OUT_TMA and j_hi > j_lo and (q_block + 1) * BLOCK <= seq_len:
                # The output tile goes through shared memory and one TMA store instead of 32 four-byte stores per
                # thread: its rows of the item's last K tile, which no product reads any more (both consumers
                # of a shared lane have passed their last Q K^T: k_read) and which the producer refills only
                # once this consumer releases the stage below. A ragged last block keeps the masked stores (its
                # rows past the end belong to the next (batch, head) in the 2D view).
                if TAKE_TURNS:
                    mbarrier.wait(k_read.index(0), (items_with_tiles - 1) & 1)
                o_tile = k_smem.index(last).slice(PART * CONSUMER_ROWS, CONSUMER_ROWS)
                o_tile.store(out.to(dtype))
                fence_async_shared()
                tma_store(o_desc, [row0 + q_block * BLOCK + PART * CONSUMER_ROWS, col0], o_tile)
                tma.store_wait(0)
            else:
                o_ptrs = Out + b.to(gl.int64) * s_ob + h.to(gl.int64) * s_oh + gl.expand_dims(rows, 1).to(gl.int64) \
                    * s_on + gl.expand_dims(dims, 0)
                gl.store(o_ptrs, out.to(dtype), mask=gl.expand_dims(rows < seq_len, 1))
            lse_rows = q_block * BLOCK + lse_block_rows
            gl.store(Lse + (b * num_heads + h).to(gl.int64) * seq_len + lse_rows, lse, mask=lse_rows < seq_len)
        if j_hi > j_lo:  # the last tile's K and V have been read (and the K stage has served the output store)
            mbarrier.arrive(empty.index(last), count=1)
        done += 1
        mbarrier.wait(lane_q_ready, done & 1)
        unit, count = _read_claim(claim)


@gluon.jit
def block_sparse_forward_hopper_kernel(
    q_desc, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, o_desc, Out, Lse, KvIdx, KvCnt, TextMask, PoolBias,
    Dropped, s_ob, s_oh, s_on, s_ib, s_ih, s_iq, s_cb, s_ch, s_tmb, s_db, s_dh, s_dq,
    num_heads, seq_len, text_len, num_kv_blocks, num_q_blocks, units, whole_items, split, Counter, PartOut,
    PartLse, qk_scale_log2, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, EVEN_N: gl.constexpr,
    BNHD: gl.constexpr, HAS_TEXT: gl.constexpr, HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr,
    OUT_TMA: gl.constexpr, num_warps: gl.constexpr,
):
    """A persistent grid (one program per SM) over the (batch * head, query block) work items (the last wave's
    cut into pieces: _unit_item; their float32 outputs and LSEs go to PartOut (pieces, BLOCK, HEAD_DIM) and
    PartLse (pieces, BLOCK) for split_merge.py). Programs take work units as they free up: the first by program
    id, the rest from the int32 Counter, which is zero at launch. Each program in
    partitions laid out like FlashAttention-3: two consumer warpgroups of 64 query rows each, and per lane one
    producer warp that fills the lane's ring of K/V stages with TMA. 128-token blocks: one lane, whose two
    consumers share each query block and take turns on the tensor cores. 64-token blocks: two lanes of work
    items, one consumer each (CONSUMER_ROWS, PROGRAM_ROWS). Text keys
    (text_len > 0; tk_desc / tv_desc over (B * H * L, D)) are walked after each row's kept blocks, with an
    optional (B, L) uint8 padding mask. With POOLED, `rectified`'s pooled columns come last (pooled.py): every
    key block's mean key and value (pk_desc / pv_desc over (B * H * nK, D)), with the logit bias PoolBias (raw
    score units) and only where the query block's (B|1, H|1, nQ, nK) uint8 `Dropped` row says it drops them."""
    LANES: gl.constexpr = PROGRAM_ROWS // BLOCK
    PARTS: gl.constexpr = BLOCK // CONSUMER_ROWS  # consumers per lane
    dtype: gl.constexpr = k_desc.dtype
    q_smem = gl.allocate_shared_memory(dtype, [2, CONSUMER_ROWS, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [LANES * STAGES, BLOCK, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [LANES * STAGES, BLOCK, HEAD_DIM], v_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [LANES * STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [LANES * STAGES, 1], mbarrier.MBarrierLayout())
    turn = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_read = gl.allocate_shared_memory(gl.int64, [1, 1], mbarrier.MBarrierLayout())
    q_ready = gl.allocate_shared_memory(gl.int64, [LANES, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [LANES, 1], mbarrier.MBarrierLayout())
    # Per lane: the work unit its producer claimed and the item's count of kept blocks (_publish_claim).
    claims = gl.allocate_shared_memory(gl.int32, [2 * LANES], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    for i in gl.static_range(LANES * STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=PARTS)  # every consumer of the lane releases a stage
    mbarrier.init(turn.index(0), count=1)
    mbarrier.init(turn.index(1), count=1)
    mbarrier.init(k_read.index(0), count=2)  # both consumers of a shared lane: see _consumer's output store
    for lane in gl.static_range(LANES):
        mbarrier.init(q_ready.index(lane), count=1)
        mbarrier.init(q_empty.index(lane), count=PARTS)

    args = (q_desc, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, o_desc, q_smem, k_smem, v_smem, ready,
            empty, q_ready, q_empty, turn, k_read, claims, Out, Lse, KvIdx, KvCnt, TextMask, PoolBias, Dropped, s_ob,
            s_oh, s_on, s_ib, s_ih, s_iq, s_cb, s_ch, s_tmb, s_db, s_dh, s_dq, num_heads, seq_len, text_len,
            num_kv_blocks, num_q_blocks, units, whole_items, split, Counter, PartOut, PartLse, qk_scale_log2)
    if LANES == 1:
        gl.warp_specialize([
            (_consumer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, 0)),
            (_consumer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, 1)),
            (_producer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, 0)),
        ], [4, 1], [240, 24])
    else:
        gl.warp_specialize([
            (_consumer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, 0)),
            (_consumer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, 1)),
            (_producer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, 0)),
            (_producer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, 1)),
        ], [4, 1, 1], [240, 24, 24])
