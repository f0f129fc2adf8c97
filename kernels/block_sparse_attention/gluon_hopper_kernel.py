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
# each with its own key list, so each consumer runs its own lane of work items with its own producer and ring,
# or (PAIRS) the two consumers share one lane whose items are pairs of neighbouring query blocks.
CONSUMER_ROWS = gl.constexpr(64)
PROGRAM_ROWS = gl.constexpr(128)
LN2 = gl.constexpr(0.6931471805599453)  # the LSE in natural-log units from the scores' log2 units
KIND_VISUAL = gl.constexpr(0)  # what a key tile holds (_tile_kind)
KIND_TEXT = gl.constexpr(1)
KIND_POOLED = gl.constexpr(2)
# PAIRS: the code of a key tile (_walk_merged_lists): which of the pair's query blocks take it, its kind and
# whether it is the item's last.
CODE_A = gl.constexpr(1)  # the first query block's list holds it (bit CONSUMER of the code: consumer 0's)
CODE_B = gl.constexpr(2)
CODE_LAST = gl.constexpr(4)
CODE_KIND_SHIFT = gl.constexpr(8)  # kind * CODE_KIND_SHIFT
NO_BLOCK = gl.constexpr(1 << 30)  # past every key list: beyond any block id


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
def _publish_pair(slot, first, second):
    """The producer's half of a hand-over of two ints to the consumers through a slot of shared memory: a work
    unit and its item's count of tiles (the claim slots), or a key tile's block and code (the tile codes of
    PAIRS). The producer's next arrival on the barrier the consumers wait on (q_ready, or the stage's ready)
    publishes it: an mbarrier arrival releases the arriving thread's writes, and every thread of the producer
    warp writes the same pair, the arriving one among them (checked in the PTX of Triton 3.6)."""
    pair = gl.arange(0, 2, layout=gl.BlockedLayout([2], [32], [1], [0]))
    slot.store(gl.where(pair == 0, first, second))


@gluon.jit
def _read_pair(slot):
    """The consumers' half: the two ints of the slot, after the wait on the barrier that published them."""
    layout: gl.constexpr = gl.BlockedLayout([2], [32], [4], [0])
    pair = gl.arange(0, 2, layout=layout)
    values = slot.load(layout)
    return gl.sum(gl.where(pair == 0, values, 0), 0), gl.sum(gl.where(pair == 1, values, 0), 0)


@gluon.jit
def _masked_scores(s, key_block, seq_len, cols, BLOCK: gl.constexpr, EVEN_N: gl.constexpr):
    """Raw scores of the tile of key block `key_block`, -inf on keys past the sequence end. Those rows of the 2D
    view belong to the next (batch, head) or lie past the tensor (TMA gives zeros); either way their values meet
    a zero probability."""
    if not EVEN_N:
        s = gl.where(gl.expand_dims(key_block * BLOCK + cols < seq_len, 0), s, float("-inf"))
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
def _tile_kind(j, count, text_tiles, idx_row, HAS_TEXT: gl.constexpr, POOLED: gl.constexpr,
               NEED_BLOCK: gl.constexpr):
    """What an item's tile j is, from its place in the walk (kept blocks, then text tiles, then pooled columns):
    (KIND_VISUAL, its key block), (KIND_TEXT, its text tile) or (KIND_POOLED, its tile of pooled columns). The
    key block is read from the index table only where NEED_BLOCK says the caller needs it (the producer, and
    the consumers' scores of a ragged last block)."""
    kind = j * 0 + KIND_VISUAL
    position = j * 0
    if POOLED and j >= count + text_tiles:
        kind = j * 0 + KIND_POOLED
        position = j - count - text_tiles
    elif HAS_TEXT and j >= count:
        kind = j * 0 + KIND_TEXT
        position = j - count
    elif NEED_BLOCK:
        position = gl.load(idx_row + j)
    return kind, position


@gluon.jit
def _tile_probabilities(s, kind, position, m_i, l_i, cols, seq_len, TextMask, b, s_tmb, text_len, PoolBias,
                        dropped_row, num_kv_blocks, qk_scale_log2, BLOCK: gl.constexpr, EVEN_N: gl.constexpr,
                        HAS_TEXT: gl.constexpr, HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr):
    """The online-softmax step of a tile (_tile_kind) from its raw scores s: (P in float32, the rescale alpha of
    the accumulator, new m, new l). The caller converts P to the P V operand (_pv_operand)."""
    if POOLED and kind == KIND_POOLED:
        s = _pooled_scores(s, PoolBias, dropped_row, position * BLOCK + cols, num_kv_blocks)
    elif HAS_TEXT and kind == KIND_TEXT:
        s = _text_scores(s, TextMask, b, s_tmb, position * BLOCK + cols, text_len, HAS_TEXT_MASK)
    else:
        s = _masked_scores(s, position, seq_len, cols, BLOCK, EVEN_N)
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
    return p, alpha, m_new, l_i


@gluon.jit
def _load_tile(tile, kind, position, b, h, row0, col0, num_heads, text_len, num_kv_blocks, k_desc, v_desc, tk_desc,
               tv_desc, pk_desc, pv_desc, k_smem, v_smem, ready, empty, codes, code, LANE: gl.constexpr,
               BLOCK: gl.constexpr, STAGES: gl.constexpr, HAS_TEXT: gl.constexpr, POOLED: gl.constexpr,
               PAIRS: gl.constexpr):
    """Loads the lane's key tile number `tile` (_tile_kind: kind and position) into its ring stage once the
    consumers have released the stage; with PAIRS it first publishes the tile's (key block, code) to them."""
    stage = LANE * STAGES + tile % STAGES
    mbarrier.wait(empty.index(stage), ((tile // STAGES) & 1) ^ 1)
    if PAIRS:
        _publish_pair(codes.index(stage), position, code)
    bar = ready.index(stage)
    mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
    if POOLED and kind == KIND_POOLED:  # the pooled columns, last; (B * H * nK, D) views
        pooled_row = (b * num_heads + h) * num_kv_blocks + position * BLOCK
        tma_load(pk_desc, [pooled_row, 0], bar, k_smem.index(stage))
        tma_load(pv_desc, [pooled_row, 0], bar, v_smem.index(stage))
    elif HAS_TEXT and kind == KIND_TEXT:  # the text keys, after the visual ones; (B * H * L, D) views
        text_row = (b * num_heads + h) * text_len + position * BLOCK
        tma_load(tk_desc, [text_row, 0], bar, k_smem.index(stage))
        tma_load(tv_desc, [text_row, 0], bar, v_smem.index(stage))
    else:
        start = position * BLOCK
        tma_load(k_desc, [row0 + start, col0], bar, k_smem.index(stage))
        tma_load(v_desc, [row0 + start, col0], bar, v_smem.index(stage))


@gluon.jit
def _producer(args, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, EVEN_N: gl.constexpr,
              BNHD: gl.constexpr, HAS_TEXT: gl.constexpr, HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr,
              OUT_TMA: gl.constexpr, PAIRS: gl.constexpr, LANE: gl.constexpr):
    """One warp per lane. Its first work unit is fixed by the program id; every later one it claims from the
    kernel's counter when it has issued the loads of the one before, and hands it to the lane's consumers
    (_publish_pair). Per unit: the query rows (in 64-row parts, one per consumer of the lane) once the lane's
    consumers have released the previous ones, then the item's key tiles into the lane's ring of stages as soon
    as its consumers have released a stage. The ring runs on across work units, so the next unit's loads
    overlap this one's last products and its output store. At the end it hands over `units`, which stops them.
    Without PAIRS a unit's tiles are its query block's kept blocks, then text, then pooled columns, and the
    claim carries the count of kept blocks. With PAIRS (64-token blocks, ascending key lists) a unit is two
    neighbouring query blocks and its tiles are the merge of their key lists, each block once, with a code per
    tile saying whose list holds it (_walk_merged_lists); the claim carries the count of tiles."""
    (q_desc, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, o_desc, q_smem, k_smem, v_smem, ready, empty,
     q_ready, q_empty, turn, k_read, claims, codes, Out, Lse, KvIdx, KvCnt, TextMask, PoolBias, Dropped, s_ob, s_oh,
     s_on, s_ib, s_ih, s_iq, s_cb, s_ch, s_tmb, s_db, s_dh, s_dq, num_heads, seq_len, text_len, num_kv_blocks,
     num_q_blocks, units, whole_items, split, Counter, PartOut, PartLse, qk_scale_log2) = args
    LANES: gl.constexpr = 1 if PAIRS else PROGRAM_ROWS // BLOCK
    PARTS: gl.constexpr = 2 if PAIRS else BLOCK // CONSUMER_ROWS  # consumers per lane
    ITEM_BLOCKS: gl.constexpr = 2 if PAIRS else 1  # query blocks per work item
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
        q_item, b, h, row0, col0 = _work_item(item, gl.cdiv(num_q_blocks, ITEM_BLOCKS), num_heads, seq_len,
                                              HEAD_DIM, BNHD)
        q_block = q_item * ITEM_BLOCKS  # the item's first query block
        count_ptr = KvCnt + b * s_cb + h * s_ch + q_block
        idx_row = KvIdx + b * s_ib + h * s_ih + q_block * s_iq
        count = gl.load(count_ptr)
        if PAIRS:
            count_b = gl.load(count_ptr + 1, mask=q_block + 1 < num_q_blocks, other=0)
            handed = count + count_b + text_tiles + pooled_tiles  # > 0 exactly when the merge has tiles
        else:
            handed = count
        # A fresh mbarrier counts as having completed phase 1: the first waits on q_empty and empty pass.
        mbarrier.wait(lane_q_empty, (done & 1) ^ 1)
        _publish_pair(claim, unit, handed)
        mbarrier.expect(lane_q_ready, PARTS * q_desc.block_type.nbytes)
        for part in gl.static_range(PARTS):
            tma_load(q_desc, [row0 + q_block * BLOCK + part * CONSUMER_ROWS, col0], lane_q_ready,
                     q_smem.index(LANE * PARTS + part))
        if PAIRS:
            tile = _walk_merged_lists(tile, idx_row, idx_row + s_iq, count, count_b, text_tiles, pooled_tiles, b, h,
                                      row0, col0, num_heads, text_len, num_kv_blocks, k_desc, v_desc, tk_desc,
                                      tv_desc, pk_desc, pv_desc, k_smem, v_smem, ready, empty, codes, BLOCK,
                                      STAGES, HAS_TEXT, POOLED)
        else:
            j_lo, j_hi = _piece_tiles(piece, split, count + text_tiles + pooled_tiles)
            for j in range(j_lo, j_hi):
                kind, position = _tile_kind(j, count, text_tiles, idx_row, HAS_TEXT, POOLED, True)
                _load_tile(tile, kind, position, b, h, row0, col0, num_heads, text_len, num_kv_blocks, k_desc,
                           v_desc, tk_desc, tv_desc, pk_desc, pv_desc, k_smem, v_smem, ready, empty, codes, 0, LANE,
                           BLOCK, STAGES, HAS_TEXT, POOLED, False)
                tile += 1
        done += 1
        # Claiming the next unit only now, when this one's loads are issued, lets the programs whose units run
        # short take more of them. A fixed stride of units per program measured 1.25-1.53x slower on rows of
        # different lengths, and the same on rows of equal length (BENCHMARKS.md, session 13).
        unit = gl.atomic_add(Counter, 1, sem="relaxed") + first_claimed
    mbarrier.wait(lane_q_empty, (done & 1) ^ 1)
    _publish_pair(claim, units, 0)
    mbarrier.arrive(lane_q_ready, count=1)


@gluon.jit
def _walk_merged_lists(tile, row_a, row_b, count_a, count_b, text_tiles, pooled_tiles, b, h, row0, col0, num_heads,
                       text_len, num_kv_blocks, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, k_smem, v_smem,
                       ready, empty, codes, BLOCK: gl.constexpr, STAGES: gl.constexpr, HAS_TEXT: gl.constexpr,
                       POOLED: gl.constexpr):
    """PAIRS: loads the tiles of a pair of query blocks A and B (64-token blocks) from tile number `tile` on and
    returns the number after them. The kept blocks are the merge of the two ascending key lists, a block in both
    loaded once; then the text and pooled tiles, which both take. Each tile's code: CODE_A / CODE_B for whose
    list holds it, its kind (shifted by CODE_KIND_SHIFT) and CODE_LAST on the item's last tile."""
    extra_tiles = text_tiles + pooled_tiles
    next_a = gl.load(row_a, mask=count_a > 0, other=NO_BLOCK)
    next_b = gl.load(row_b, mask=count_b > 0, other=NO_BLOCK)
    taken_a = 0
    taken_b = 0
    while (next_a < NO_BLOCK) | (next_b < NO_BLOCK):
        key_block = gl.minimum(next_a, next_b)
        in_a = next_a == key_block
        in_b = next_b == key_block
        taken_a += in_a.to(gl.int32)
        taken_b += in_b.to(gl.int32)
        next_a = gl.where(in_a, gl.load(row_a + taken_a, mask=in_a & (taken_a < count_a), other=NO_BLOCK), next_a)
        next_b = gl.where(in_b, gl.load(row_b + taken_b, mask=in_b & (taken_b < count_b), other=NO_BLOCK), next_b)
        ends = (next_a == NO_BLOCK) & (next_b == NO_BLOCK) & (extra_tiles == 0)
        code = in_a.to(gl.int32) * CODE_A + in_b.to(gl.int32) * CODE_B + ends.to(gl.int32) * CODE_LAST
        _load_tile(tile, KIND_VISUAL, key_block, b, h, row0, col0, num_heads, text_len, num_kv_blocks, k_desc,
                   v_desc, tk_desc, tv_desc, pk_desc, pv_desc, k_smem, v_smem, ready, empty, codes, code, 0, BLOCK,
                   STAGES, HAS_TEXT, POOLED, True)
        tile += 1
    for x in range(extra_tiles):
        kind, position = _tile_kind(x, 0, text_tiles, row_a, HAS_TEXT, POOLED, False)
        code = CODE_A + CODE_B + kind * CODE_KIND_SHIFT + (x == extra_tiles - 1).to(gl.int32) * CODE_LAST
        _load_tile(tile, kind, position, b, h, row0, col0, num_heads, text_len, num_kv_blocks, k_desc, v_desc,
                   tk_desc, tv_desc, pk_desc, pv_desc, k_smem, v_smem, ready, empty, codes, code, 0, BLOCK, STAGES,
                   HAS_TEXT, POOLED, True)
        tile += 1
    return tile


@gluon.jit
def _consumer(args, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, EVEN_N: gl.constexpr,
              BNHD: gl.constexpr, HAS_TEXT: gl.constexpr, HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr,
              OUT_TMA: gl.constexpr, PAIRS: gl.constexpr, CONSUMER: gl.constexpr):
    """One warpgroup, 64 query rows: part CONSUMER % PARTS of each work item of lane CONSUMER // PARTS. Per key
    tile j it issues S_j = Q K_j^T and O += P_{j-1} V_{j-1}, and runs the softmax of S_j while the tensor cores
    work on its own P V and on the other warpgroup's products. Where both consumers share a lane (128-token
    blocks, or PAIRS) they walk the same tiles, so they take turns on the tensor cores, each handing the turn
    over after issuing (FA3's ping-pong). Consumers of separate lanes walk key lists of different lengths and do
    not: turns between them, the shorter lane passing its turns at the end, measured 1.3-2.6% slower at Wan 480p
    and 1% faster at Wan 720p (BENCHMARKS.md, session 12). With PAIRS each consumer owns one query block of the
    pair and computes only the tiles its block keeps (_walk_pair_tiles)."""
    (q_desc, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, o_desc, q_smem, k_smem, v_smem, ready, empty,
     q_ready, q_empty, turn, k_read, claims, codes, Out, Lse, KvIdx, KvCnt, TextMask, PoolBias, Dropped, s_ob, s_oh,
     s_on, s_ib, s_ih, s_iq, s_cb, s_ch, s_tmb, s_db, s_dh, s_dq, num_heads, seq_len, text_len, num_kv_blocks,
     num_q_blocks, units, whole_items, split, Counter, PartOut, PartLse, qk_scale_log2) = args
    PARTS: gl.constexpr = 2 if PAIRS else BLOCK // CONSUMER_ROWS  # consumers per lane
    LANE: gl.constexpr = CONSUMER // PARTS
    PART: gl.constexpr = CONSUMER % PARTS
    # Both consumers share the lane's ring (and, at its end, the output staging in the item's last stage); they
    # take turns on the tensor cores where they walk the same tiles with the same work (see _walk_pair_tiles for
    # why not with PAIRS).
    SHARED_LANE: gl.constexpr = PARTS == 2
    TAKE_TURNS: gl.constexpr = SHARED_LANE and not PAIRS
    # The first of this consumer's rows in its query block, and which query block of the item it is in.
    ROW_IN_BLOCK: gl.constexpr = 0 if PAIRS else PART * CONSUMER_ROWS
    BLOCK_IN_ITEM: gl.constexpr = PART if PAIRS else 0
    ITEM_BLOCKS: gl.constexpr = 2 if PAIRS else 1
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
    unit, count = _read_pair(claim)
    while unit < units:  # the producer hands over `units` when the work is done
        item, piece = _unit_item(unit, whole_items, split)
        q_item, b, h, row0, col0 = _work_item(item, gl.cdiv(num_q_blocks, ITEM_BLOCKS), num_heads, seq_len,
                                              HEAD_DIM, BNHD)
        q_block = q_item * ITEM_BLOCKS + BLOCK_IN_ITEM
        rows_exist = q_block < num_q_blocks  # PAIRS: the second block of an odd count's last pair does not
        dropped_row = Dropped + b * s_db + h * s_dh + q_block * s_dq
        m_i = gl.full([CONSUMER_ROWS], float("-inf"), gl.float32, layout=s_rows)
        l_i = gl.zeros([CONSUMER_ROWS], gl.float32, layout=s_rows)
        acc = gl.zeros([CONSUMER_ROWS, HEAD_DIM], gl.float32, layout=o_layout)
        last = LANE * STAGES  # the stage of the item's last tile, once it has tiles
        if PAIRS:
            walked = count > 0  # the claim carries the item's count of tiles
        else:
            j_lo, j_hi = _piece_tiles(piece, split, count + text_tiles + pooled_tiles)
            walked = j_hi > j_lo
        if walked:
            if PAIRS:
                tile, last, acc, m_i, l_i = _walk_pair_tiles(
                    tile, rows_exist, q, k_smem, v_smem, ready, empty, codes, my_turn, their_turn, lane_q_empty,
                    k_read, acc, m_i, l_i, s_zero, cols, seq_len, TextMask, b, s_tmb, text_len, PoolBias, dropped_row,
                    num_kv_blocks, qk_scale_log2, dtype, p_layout, o_rows, BLOCK, STAGES, EVEN_N, HAS_TEXT,
                    HAS_TEXT_MASK, POOLED, OUT_TMA, CONSUMER)
            else:
                tile, last, acc, m_i, l_i = _walk_item_tiles(
                    tile, j_lo, j_hi, count, text_tiles, KvIdx + b * s_ib + h * s_ih + q_block * s_iq, q, k_smem,
                    v_smem, ready, empty, my_turn, their_turn, lane_q_empty, k_read, acc, m_i, l_i, s_zero, cols,
                    seq_len, TextMask, b, s_tmb, text_len, PoolBias, dropped_row, num_kv_blocks, qk_scale_log2,
                    dtype, p_layout, o_rows, LANE, BLOCK, STAGES, EVEN_N, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA,
                    CONSUMER, TAKE_TURNS)
            items_with_tiles += 1
        else:
            mbarrier.arrive(lane_q_empty, count=1)  # an empty item never reads Q

        empty_row = l_i == 0.0
        l_safe = gl.where(empty_row, 1.0, l_i)
        lse = gl.where(empty_row, float("-inf"), (m_i + gl.log2(l_safe)) * LN2)
        # One reciprocal per row and a multiply per element: a division per element compiles to 64 IEEE divisions
        # per thread, which ran in the item's tail while the tensor cores waited.
        out = acc * gl.expand_dims(gl.convert_layout(1.0 / l_safe, o_rows), 1)
        block_rows = ROW_IN_BLOCK + gl.arange(0, CONSUMER_ROWS, layout=o_rows)
        dims = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
        lse_block_rows = ROW_IN_BLOCK + gl.arange(0, CONSUMER_ROWS, layout=s_rows)
        if piece >= 0:  # a piece of a split item: its own normalised output and LSE, in float32 for the merge
            part_ptrs = PartOut + piece.to(gl.int64) * BLOCK * HEAD_DIM + gl.expand_dims(block_rows, 1) * HEAD_DIM \
                + gl.expand_dims(dims, 0)
            gl.store(part_ptrs, out)
            gl.store(PartLse + piece.to(gl.int64) * BLOCK + lse_block_rows, lse)
        elif rows_exist:
            rows = q_block * BLOCK + block_rows
            if OUT_TMA and walked and (q_block + 1) * BLOCK <= seq_len:
                # The output tile goes through shared memory and one TMA store instead of 32 four-byte stores per
                # thread: rows of the item's last K (or, with PAIRS, consumer 1's: V) tile, which no product
                # reads any more (both consumers of a shared lane are past it: k_read) and which the producer
                # refills only once this consumer releases the stage below. A ragged last block keeps the
                # masked stores (its rows past the end belong to the next (batch, head) in the 2D view).
                if SHARED_LANE:
                    mbarrier.wait(k_read.index(0), (items_with_tiles - 1) & 1)
                if PAIRS and CONSUMER == 1:
                    o_tile = v_smem.index(last)
                elif PAIRS:
                    o_tile = k_smem.index(last)
                else:
                    o_tile = k_smem.index(last).slice(PART * CONSUMER_ROWS, CONSUMER_ROWS)
                o_tile.store(out.to(dtype))
                fence_async_shared()
                tma_store(o_desc, [row0 + q_block * BLOCK + ROW_IN_BLOCK, col0], o_tile)
                tma.store_wait(0)
            else:
                o_ptrs = Out + b.to(gl.int64) * s_ob + h.to(gl.int64) * s_oh + gl.expand_dims(rows, 1).to(gl.int64) \
                    * s_on + gl.expand_dims(dims, 0)
                gl.store(o_ptrs, out.to(dtype), mask=gl.expand_dims(rows < seq_len, 1))
            lse_rows = q_block * BLOCK + lse_block_rows
            gl.store(Lse + (b * num_heads + h).to(gl.int64) * seq_len + lse_rows, lse, mask=lse_rows < seq_len)
        if walked:  # the last tile's K and V have been read (and the stage has served the output store)
            mbarrier.arrive(empty.index(last), count=1)
        done += 1
        mbarrier.wait(lane_q_ready, done & 1)
        unit, count = _read_pair(claim)


@gluon.jit
def _issue_products(q, k_tile, p_prev, v_prev, acc, s_zero, their_turn, TAKE_TURNS: gl.constexpr):
    """Issues S = Q K^T and acc += P_prev V_prev, hands the turn over where the consumers take turns, and returns
    S once it is ready (wgmma groups retire in order: with one left outstanding, P V) with the pending acc."""
    s = warpgroup_mma(q, k_tile.permute((1, 0)), s_zero, use_acc=False, is_async=True)
    acc = warpgroup_mma(p_prev, v_prev, acc, is_async=True)
    if TAKE_TURNS:
        mbarrier.arrive(their_turn, count=1)
    s = warpgroup_mma_wait(num_outstanding=1, deps=(s, ))
    return s, acc


@gluon.jit
def _pv_operand(p, dtype: gl.constexpr, p_layout: gl.constexpr):
    """The probabilities as the register operand of the next P V: in the input dtype, in the wgmma's layout."""
    return gl.convert_layout(p.to(dtype), p_layout)


@gluon.jit
def _rescaled(acc, alpha, o_rows: gl.constexpr):
    """acc, once its pending P V has landed, times the softmax's rescale alpha per row."""
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    return acc * gl.expand_dims(gl.convert_layout(alpha, o_rows), 1)


@gluon.jit
def _walk_item_tiles(tile, j_lo, j_hi, count, text_tiles, idx_row, q, k_smem, v_smem, ready, empty, my_turn,
                     their_turn, q_empty, k_read, acc, m_i, l_i, s_zero, cols, seq_len, TextMask, b, s_tmb, text_len,
                     PoolBias, dropped_row, num_kv_blocks, qk_scale_log2, dtype: gl.constexpr,
                     p_layout: gl.constexpr, o_rows: gl.constexpr, LANE: gl.constexpr, BLOCK: gl.constexpr,
                     STAGES: gl.constexpr, EVEN_N: gl.constexpr, HAS_TEXT: gl.constexpr, HAS_TEXT_MASK: gl.constexpr,
                     POOLED: gl.constexpr, OUT_TMA: gl.constexpr, CONSUMER: gl.constexpr, TAKE_TURNS: gl.constexpr):
    """One consumer's walk over the tiles [j_lo, j_hi) of an item (at least one) from tile number `tile` on, the
    item's last P V included. Returns (the next tile number, the stage of the item's last tile, acc, m, l)."""
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
        s, acc = _issue_products(q, k_smem.index(stage), p_prev, v_smem.index(prev_stage), acc, s_zero,
                                 their_turn, TAKE_TURNS)
        if j == j_hi - 1:
            # The item's last Q K^T is done: release this part of Q now, so that the producer loads the
            # next item's while this warpgroup finishes the last P V, the softmax and the store.
            mbarrier.arrive(q_empty, count=1)
            if OUT_TMA and TAKE_TURNS:
                mbarrier.arrive(k_read.index(0), count=1)  # nor will this one read the last K tile
        kind, position = _tile_kind(j, count, text_tiles, idx_row, HAS_TEXT, POOLED, not EVEN_N)
        p, alpha, m_i, l_i = _tile_probabilities(
            s, kind, position, m_i, l_i, cols, seq_len, TextMask, b, s_tmb, text_len, PoolBias, dropped_row,
            num_kv_blocks, qk_scale_log2, BLOCK, EVEN_N, HAS_TEXT, HAS_TEXT_MASK, POOLED)
        p_prev = _pv_operand(p, dtype, p_layout)
        acc = _rescaled(acc, alpha, o_rows)
        if j > j_lo:  # the previous tile's K and V have been read by both of this warpgroup's products
            mbarrier.arrive(empty.index(prev_stage), count=1)
        tile += 1
    last = LANE * STAGES + (tile + STAGES - 1) % STAGES
    acc = warpgroup_mma(p_prev, v_smem.index(last), acc, is_async=True)
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    return tile, last, acc, m_i, l_i


@gluon.jit
def _walk_pair_tiles(tile, rows_exist, q, k_smem, v_smem, ready, empty, codes, my_turn, their_turn, q_empty, k_read,
                     acc, m_i, l_i, s_zero, cols, seq_len, TextMask, b, s_tmb, text_len, PoolBias,
                     dropped_row, num_kv_blocks, qk_scale_log2, dtype: gl.constexpr, p_layout: gl.constexpr,
                     o_rows: gl.constexpr, BLOCK: gl.constexpr, STAGES: gl.constexpr, EVEN_N: gl.constexpr,
                     HAS_TEXT: gl.constexpr, HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr,
                     OUT_TMA: gl.constexpr, CONSUMER: gl.constexpr):
    """PAIRS: one consumer's walk over a pair's merged tiles (_walk_merged_lists) from tile number `tile` on, the
    item's last P V included. Returns (the next tile number, the stage of the item's last tile, acc, m, l).
    Both consumers wait for every tile; a consumer computes the tiles its block keeps (its bit of the code) and
    releases the others at once, except the last, whose stage serves the output store. They take no turns on
    the tensor cores: where one block keeps a run of tiles the other does not, turns would hold that consumer
    to the other's pace through it, whereas without them it runs ahead (as far as the ring lets it) while the
    other skips to its next tile, and both keep the tensor cores busy. Between consumers of separate lanes at
    64-token blocks, turns measured within 1-3% of none (BENCHMARKS.md, session 12). Its products stay one
    tile behind as without PAIRS: P V of its previous kept tile goes with Q K^T of the next, and the stage of
    that tile stays held until then. A tile STAGES further on needs that stage back, so before waiting for it
    the consumer finishes the pending P V alone and releases the stage (else the producer and this consumer
    would wait on each other). benchmarks/results/kernels-h100/session14-pairs/protocol_model.py models this
    protocol."""
    p_prev = gl.zeros([CONSUMER_ROWS, BLOCK], dtype, layout=p_layout)
    pending = 0  # whether p_prev holds a P whose P V is still to issue, on stage pending_stage
    pending_tile = 0
    pending_stage = 0
    stage = 0
    at_end = 0
    while at_end == 0:
        if (pending != 0) & (tile == pending_tile + STAGES):
            acc = warpgroup_mma(p_prev, v_smem.index(pending_stage), acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
            mbarrier.arrive(empty.index(pending_stage), count=1)
            pending = 0
            p_prev = gl.zeros_like(p_prev)
        stage = _wait_for_tile(ready, my_turn, tile, 0, STAGES, CONSUMER, False)
        key_block, code = _read_pair(codes.index(stage))
        at_end = code & CODE_LAST
        if (((code >> CONSUMER) & 1) != 0) & rows_exist:
            # Without a pending P, the zero P meets this tile's V (loaded, so finite), as on an item's first tile.
            pv_stage = gl.where(pending != 0, pending_stage, stage)
            s, acc = _issue_products(q, k_smem.index(stage), p_prev, v_smem.index(pv_stage), acc, s_zero,
                                     their_turn, False)
            if at_end != 0:
                mbarrier.arrive(q_empty, count=1)  # the item's last Q K^T is done
            p, alpha, m_i, l_i = _tile_probabilities(
                s, code // CODE_KIND_SHIFT, key_block, m_i, l_i, cols, seq_len, TextMask, b, s_tmb, text_len,
                PoolBias, dropped_row, num_kv_blocks, qk_scale_log2, BLOCK, EVEN_N, HAS_TEXT, HAS_TEXT_MASK,
                POOLED)
            acc = _rescaled(acc, alpha, o_rows)
            # Only now, with the P V that read the previous P retired: a P defined while that P V may still run,
            # in a loop whose non-kept tiles carry P around the products, made ptxas serialize every wgmma of
            # the kernel (warning C7513 in its output, Triton 3.6's ptxas).
            p_prev = _pv_operand(p, dtype, p_layout)
            if pending != 0:
                mbarrier.arrive(empty.index(pending_stage), count=1)
            pending = 1
            pending_tile = tile
            pending_stage = stage
        else:
            if at_end != 0:
                mbarrier.arrive(q_empty, count=1)
            else:
                mbarrier.arrive(empty.index(stage), count=1)
        tile += 1
    if pending != 0:
        acc = warpgroup_mma(p_prev, v_smem.index(pending_stage), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        if pending_stage != stage:
            mbarrier.arrive(empty.index(pending_stage), count=1)
    if OUT_TMA:
        mbarrier.arrive(k_read.index(0), count=1)  # done with the last stage's K and V
    return tile, stage, acc, m_i, l_i


@gluon.jit
def block_sparse_forward_hopper_kernel(
    q_desc, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, o_desc, Out, Lse, KvIdx, KvCnt, TextMask, PoolBias,
    Dropped, s_ob, s_oh, s_on, s_ib, s_ih, s_iq, s_cb, s_ch, s_tmb, s_db, s_dh, s_dq,
    num_heads, seq_len, text_len, num_kv_blocks, num_q_blocks, units, whole_items, split, Counter, PartOut,
    PartLse, qk_scale_log2, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr, EVEN_N: gl.constexpr,
    BNHD: gl.constexpr, HAS_TEXT: gl.constexpr, HAS_TEXT_MASK: gl.constexpr, POOLED: gl.constexpr,
    OUT_TMA: gl.constexpr, PAIRS: gl.constexpr, num_warps: gl.constexpr,
):
    """A persistent grid (one program per SM) over the (batch * head, query block) work items (the last wave's
    cut into pieces: _unit_item; their float32 outputs and LSEs go to PartOut (pieces, BLOCK, HEAD_DIM) and
    PartLse (pieces, BLOCK) for split_merge.py). Programs take work units as they free up: the first by program
    id, the rest from the int32 Counter, which is zero at launch. Each program in
    partitions laid out like FlashAttention-3: two consumer warpgroups of 64 query rows each, and per lane one
    producer warp that fills the lane's ring of K/V stages with TMA. 128-token blocks: one lane, whose two
    consumers share each query block and take turns on the tensor cores. 64-token blocks: two lanes of work
    items, one consumer each (CONSUMER_ROWS, PROGRAM_ROWS); or, with PAIRS (the key lists ascending), one lane
    whose items are pairs of neighbouring query blocks, a consumer each, walking the merge of their key lists:
    a key block both keep is loaded once for both (_walk_merged_lists, _walk_pair_tiles). Text keys
    (text_len > 0; tk_desc / tv_desc over (B * H * L, D)) are walked after each row's kept blocks, with an
    optional (B, L) uint8 padding mask. With POOLED, `rectified`'s pooled columns come last (pooled.py): every
    key block's mean key and value (pk_desc / pv_desc over (B * H * nK, D)), with the logit bias PoolBias (raw
    score units) and only where the query block's (B|1, H|1, nQ, nK) uint8 `Dropped` row says it drops them."""
    gl.static_assert(not PAIRS or BLOCK == CONSUMER_ROWS, "PAIRS pairs 64-token query blocks")
    LANES: gl.constexpr = 1 if PAIRS else PROGRAM_ROWS // BLOCK
    PARTS: gl.constexpr = 2 if PAIRS else BLOCK // CONSUMER_ROWS  # consumers per lane
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
    # Per lane: the work unit its producer claimed and the item's count of kept blocks (_publish_pair).
    claims = gl.allocate_shared_memory(gl.int32, [2 * LANES], gl.SwizzledSharedLayout(1, 1, 1, [0]))
    # PAIRS: per stage, its tile's key block and code (_walk_merged_lists).
    codes = gl.allocate_shared_memory(gl.int32, [LANES * STAGES, 2], gl.SwizzledSharedLayout(1, 1, 1, [0]))
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
            empty, q_ready, q_empty, turn, k_read, claims, codes, Out, Lse, KvIdx, KvCnt, TextMask, PoolBias, Dropped,
            s_ob, s_oh, s_on, s_ib, s_ih, s_iq, s_cb, s_ch, s_tmb, s_db, s_dh, s_dq, num_heads, seq_len, text_len,
            num_kv_blocks, num_q_blocks, units, whole_items, split, Counter, PartOut, PartLse, qk_scale_log2)
    if LANES == 1:
        gl.warp_specialize([
            (_consumer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, PAIRS,
                         0)),
            (_consumer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, PAIRS,
                         1)),
            (_producer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, PAIRS,
                         0)),
        ], [4, 1], [240, 24])
    else:
        gl.warp_specialize([
            (_consumer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, PAIRS,
                         0)),
            (_consumer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, PAIRS,
                         1)),
            (_producer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, PAIRS,
                         0)),
            (_producer, (args, BLOCK, HEAD_DIM, STAGES, EVEN_N, BNHD, HAS_TEXT, HAS_TEXT_MASK, POOLED, OUT_TMA, PAIRS,
                         1)),
        ], [4, 1, 1], [240, 24, 24])
