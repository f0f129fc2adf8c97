"""Triton block-sparse attention kernels: forward, and backward as a dQ pass and a dK/dV pass.

Layout and conventions shared by the three kernels:
- one program per (query block or key block, batch * head); the index table is read one slot at a time,
  so the loop length is the row's own count and an empty row simply skips the loop;
- scores are kept in log2 units (the softmax scale is pre-multiplied by log2(e)) so that `exp2` is used;
  the stored LSE is natural-log, as the reference returns it;
- the visual sequence may end inside the last block (EVEN_N is False): keys past the end get a score of
  -inf, queries past the end are never stored;
- text keys ("dense columns") are walked after the table, in tiles of the block size, for every query
  block; a (B, L) padding mask may switch some of them off;
- the optional element mask (B|1, H|1, N, N) is only read for (query block, key block) pairs whose
  `block_full` flag is 0, so whole blocks cost nothing extra.

Tensors the wrappers allocate (out, lse, gradients, feature maps) are contiguous (B, H, N, D) / (B, H, N);
q, k, v and text k/v come with their own strides so that (B, N, H, D) views need no copy.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

LOG2E = 1.4426950408889634


def interpreting() -> bool:
    """True when Triton runs its CPU interpreter (TRITON_INTERPRET=1): tests use one small config."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _configs(sub_tiles: tuple[int, ...], warps_stages: tuple[tuple[int, int], ...]) -> list[triton.Config]:
    if interpreting():
        # One config skips the autotuner (and its pruning): 32 divides every supported block size.
        return [triton.Config({"SUB": 32}, num_warps=4, num_stages=1)]
    return [
        triton.Config({"SUB": sub}, num_warps=warps, num_stages=stages)
        for sub in sub_tiles
        for warps, stages in warps_stages
    ]


def _prune_sub_tiles(configs, named_args, **kwargs):
    """A sub-tile may not be larger than the block it splits."""
    block = kwargs["BLOCK"]
    kept = [c for c in configs if c.kwargs["SUB"] <= block]
    return kept or [triton.Config({"SUB": block}, num_warps=4, num_stages=2)]


@triton.jit
def _online_softmax_step(s, m_i, l_i, acc, v):
    """One FlashAttention update with scores `s` (log2 units) that may be -inf everywhere in a row."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # A row that has seen no finite score yet keeps m = -inf; subtracting 0 instead avoids inf - inf.
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_use)
    p = tl.math.exp2(s - m_use[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit
def _load_key_rows(base, offs_n, row_stride, offs_d, seq_len, HEAD_DIM: tl.constexpr, EVEN_N: tl.constexpr,
                   EVEN_D: tl.constexpr):
    """A (rows, BLOCK_D) key/value tile. Rows past the end are clamped onto the last row instead of masked
    (their scores are -inf, so their values never count), which keeps the loads unpredicated."""
    if not EVEN_N:
        offs_n = tl.minimum(offs_n, seq_len - 1)
    ptrs = base + offs_n[:, None] * row_stride + offs_d[None, :]
    if EVEN_D:
        return tl.load(ptrs)
    return tl.load(ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)


@triton.jit
def _element_mask_scores(s, ElemMask, BlockFullRow, k_block, offs_m, offs_n, seq_len, s_em_q):
    """Set scores outside the element mask to -inf, reading the mask only for partially kept blocks.

    ElemMask points at this (batch, head)'s (N, N) mask, BlockFullRow at this query block's flags.
    """
    full = tl.load(BlockFullRow + k_block)
    if full == 0:
        inside = (offs_m[:, None] < seq_len) & (offs_n[None, :] < seq_len)
        keep = tl.load(ElemMask + offs_m[:, None].to(tl.int64) * s_em_q + offs_n[None, :], mask=inside, other=0)
        s = tl.where(keep != 0, s, float("-inf"))
    return s


@triton.jit
def _visual_tile(q, k_base, v_base, s_kn, s_vn, em_base, full_row, s_emq, k_block, offs_m, offs_n, offs_d, seq_len,
                 qk_scale_log2, HEAD_DIM: tl.constexpr, EVEN_N: tl.constexpr, EVEN_D: tl.constexpr,
                 HAS_EMASK: tl.constexpr):
    """Scores (log2 units) of the query tile against visual keys `offs_n`, with the keys and values."""
    k = _load_key_rows(k_base, offs_n, s_kn, offs_d, seq_len, HEAD_DIM, EVEN_N, EVEN_D)
    v = _load_key_rows(v_base, offs_n, s_vn, offs_d, seq_len, HEAD_DIM, EVEN_N, EVEN_D)
    s = tl.dot(q, tl.trans(k)) * qk_scale_log2
    if not EVEN_N:
        # An additive -inf on keys past the end fuses with the scale into one FMA.
        s += tl.where(offs_n < seq_len, 0.0, float("-inf"))[None, :]
    if HAS_EMASK:
        s = _element_mask_scores(s, em_base, full_row, k_block, offs_m, offs_n, seq_len, s_emq)
    return s, k, v


@triton.jit
def _text_tile(q, tk_base, tv_base, s_tkn, s_tvn, text_mask_row, offs_t, offs_d, d_ok, text_len, qk_scale_log2,
               HAS_TEXT_MASK: tl.constexpr):
    """Scores of the query tile against text keys `offs_t` (-inf past the end and on padding)."""
    t_ok = offs_t < text_len
    if HAS_TEXT_MASK:
        t_ok = t_ok & (tl.load(text_mask_row + offs_t, mask=offs_t < text_len, other=0) != 0)
    k = tl.load(tk_base + offs_t[:, None] * s_tkn + offs_d[None, :], mask=t_ok[:, None] & d_ok[None, :], other=0.0)
    v = tl.load(tv_base + offs_t[:, None] * s_tvn + offs_d[None, :], mask=t_ok[:, None] & d_ok[None, :], other=0.0)
    s = tl.dot(q, tl.trans(k)) * qk_scale_log2
    return tl.where(t_ok[None, :], s, float("-inf")), k, v


@triton.jit
def _dq_step(s, k, v, do, lse, delta, dq):
    """dQ += dS K for one key tile, dS = P * (dO V^T - delta) with P recomputed from the saved LSE."""
    p = tl.math.exp2(s - lse[:, None])
    ds = p * (tl.dot(do, tl.trans(v)) - delta[:, None])
    return dq + tl.dot(ds.to(k.dtype), k)


@triton.autotune(
    configs=_configs((64, 128), ((8, 2), (8, 3), (4, 2))),
    key=["BLOCK", "HEAD_DIM", "HAS_TEXT", "HAS_EMASK"],
    prune_configs_by={"early_config_prune": _prune_sub_tiles},
)
@triton.jit
def block_sparse_forward_kernel(
    Q, K, V, Out, Lse, KvIdx, KvCnt,
    TextK, TextV, TextMask, ElemMask, BlockFull,
    s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn,
    s_ib, s_ih, s_iq, s_cb, s_ch,
    s_tkb, s_tkh, s_tkn, s_tvb, s_tvh, s_tvn, s_tmb,
    s_emb, s_emh, s_emq, s_fb, s_fh, s_fq,
    num_heads, seq_len, text_len, qk_scale_log2,
    BLOCK: tl.constexpr, SUB: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    EVEN_N: tl.constexpr, HAS_TEXT: tl.constexpr, HAS_TEXT_MASK: tl.constexpr,
    HAS_EMASK: tl.constexpr,
):
    q_block = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_m = q_block * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row_ok = offs_m < seq_len
    q = tl.load(Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qn + offs_d[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    m_i = tl.full([BLOCK], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK], tl.float32)
    acc = tl.zeros([BLOCK, BLOCK_D], tl.float32)

    k_base = K + b * s_kb + h * s_kh
    v_base = V + b * s_vb + h * s_vh
    count = tl.load(KvCnt + b * s_cb + h * s_ch + q_block)
    idx_row = KvIdx + b * s_ib + h * s_ih + q_block * s_iq
    em_base = ElemMask + b * s_emb + h * s_emh
    full_row = BlockFull + b * s_fb + h * s_fh + q_block * s_fq
    bhn = (b * num_heads + h) * seq_len

    for slot in range(count):
        k_block = tl.load(idx_row + slot)
        for sub in tl.static_range(BLOCK // SUB):
            offs_n = k_block * BLOCK + sub * SUB + tl.arange(0, SUB)
            s, k, v = _visual_tile(q, k_base, v_base, s_kn, s_vn, em_base, full_row, s_emq, k_block, offs_m,
                                   offs_n, offs_d, seq_len, qk_scale_log2, HEAD_DIM, EVEN_N, BLOCK_D == HEAD_DIM,
                                   HAS_EMASK)
            m_i, l_i, acc = _online_softmax_step(s, m_i, l_i, acc, v)

    if HAS_TEXT:
        tk_base = TextK + b * s_tkb + h * s_tkh
        tv_base = TextV + b * s_tvb + h * s_tvh
        for start in range(0, text_len, SUB):
            s, k, v = _text_tile(q, tk_base, tv_base, s_tkn, s_tvn, TextMask + b * s_tmb, start + tl.arange(0, SUB),
                                 offs_d, d_ok, text_len, qk_scale_log2, HAS_TEXT_MASK)
            m_i, l_i, acc = _online_softmax_step(s, m_i, l_i, acc, v)

    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(tl.where(empty, 1.0, l_i))) / 1.4426950408889634)
    o_ptrs = Out + (bhn + offs_m[:, None]) * HEAD_DIM + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    tl.store(Lse + bhn + offs_m, lse, mask=row_ok)


@triton.autotune(
    configs=_configs((32, 64), ((8, 2), (4, 2), (8, 3))),
    key=["BLOCK", "HEAD_DIM", "HAS_TEXT", "HAS_EMASK"],
    prune_configs_by={"early_config_prune": _prune_sub_tiles},
)
@triton.jit
def block_sparse_dq_kernel(
    Q, K, V, DO, Lse, Delta, DQ, KvIdx, KvCnt,
    TextK, TextV, TextMask, ElemMask, BlockFull,
    s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn,
    s_ib, s_ih, s_iq, s_cb, s_ch,
    s_tkb, s_tkh, s_tkn, s_tvb, s_tvh, s_tvn, s_tmb,
    s_emb, s_emh, s_emq, s_fb, s_fh, s_fq,
    num_heads, seq_len, text_len, qk_scale_log2, scale,
    BLOCK: tl.constexpr, SUB: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    EVEN_N: tl.constexpr, HAS_TEXT: tl.constexpr, HAS_TEXT_MASK: tl.constexpr,
    HAS_EMASK: tl.constexpr,
):
    """dQ for one query block: walks the same key blocks as the forward (SUB keys at a time)."""
    q_block = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_m = q_block * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row_ok = offs_m < seq_len
    tile_ok = row_ok[:, None] & d_ok[None, :]
    bhn = (b * num_heads + h) * seq_len
    q = tl.load(Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qn + offs_d[None, :], mask=tile_ok, other=0.0)
    do = tl.load(DO + (bhn + offs_m[:, None]) * HEAD_DIM + offs_d[None, :], mask=tile_ok, other=0.0)
    # Empty rows (LSE -inf) and rows past the end get LSE +inf so that every probability is exactly 0.
    lse = tl.load(Lse + bhn + offs_m, mask=row_ok, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse) * 1.4426950408889634
    delta = tl.load(Delta + bhn + offs_m, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK, BLOCK_D], tl.float32)

    k_base = K + b * s_kb + h * s_kh
    v_base = V + b * s_vb + h * s_vh
    count = tl.load(KvCnt + b * s_cb + h * s_ch + q_block)
    idx_row = KvIdx + b * s_ib + h * s_ih + q_block * s_iq
    em_base = ElemMask + b * s_emb + h * s_emh
    full_row = BlockFull + b * s_fb + h * s_fh + q_block * s_fq

    for slot in range(count):
        k_block = tl.load(idx_row + slot)
        for sub in tl.static_range(BLOCK // SUB):
            offs_n = k_block * BLOCK + sub * SUB + tl.arange(0, SUB)
            s, k, v = _visual_tile(q, k_base, v_base, s_kn, s_vn, em_base, full_row, s_emq, k_block, offs_m,
                                   offs_n, offs_d, seq_len, qk_scale_log2, HEAD_DIM, EVEN_N, BLOCK_D == HEAD_DIM,
                                   HAS_EMASK)
            dq = _dq_step(s, k, v, do, lse, delta, dq)

    if HAS_TEXT:
        tk_base = TextK + b * s_tkb + h * s_tkh
        tv_base = TextV + b * s_tvb + h * s_tvh
        for start in range(0, text_len, SUB):
            s, k, v = _text_tile(q, tk_base, tv_base, s_tkn, s_tvn, TextMask + b * s_tmb, start + tl.arange(0, SUB),
                                 offs_d, d_ok, text_len, qk_scale_log2, HAS_TEXT_MASK)
            dq = _dq_step(s, k, v, do, lse, delta, dq)

    tl.store(DQ + (bhn + offs_m[:, None]) * HEAD_DIM + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=tile_ok)


@triton.autotune(
    configs=_configs((32, 64), ((8, 2), (4, 2), (8, 3))),
    key=["BLOCK", "HEAD_DIM", "HAS_EMASK", "HAS_KEY_MASK"],
    prune_configs_by={"early_config_prune": _prune_sub_tiles},
)
@triton.jit
def block_sparse_dkdv_kernel(
    Q, K, V, DO, Lse, Delta, DK, DV, QIdx, QCnt, KeyMask, ElemMask, BlockFull,
    s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn,
    s_ib, s_ih, s_ik, s_cb, s_ch, s_ck, s_kmb,
    s_emb, s_emh, s_emq, s_fb, s_fh, s_fq,
    num_heads, seq_len, key_len, qk_scale_log2, scale,
    BLOCK: tl.constexpr, SUB: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr, HAS_EMASK: tl.constexpr,
):
    """dK, dV for one key block (visual, or a tile of text keys) over the query blocks that attend to it.

    QIdx/QCnt is the transposed index table: query blocks per key block. For text keys it is "every
    query block", passed with zero strides. SUB query rows are processed at a time.
    """
    k_block = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_n = k_block * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    key_ok = offs_n < key_len
    if HAS_KEY_MASK:
        key_ok = key_ok & (tl.load(KeyMask + b * s_kmb + offs_n, mask=offs_n < key_len, other=0) != 0)
    key_bias = tl.where(key_ok, 0.0, float("-inf"))
    tile_ok = (offs_n[:, None] < key_len) & d_ok[None, :]
    k = tl.load(K + b * s_kb + h * s_kh + offs_n[:, None] * s_kn + offs_d[None, :], mask=tile_ok, other=0.0)
    v = tl.load(V + b * s_vb + h * s_vh + offs_n[:, None] * s_vn + offs_d[None, :], mask=tile_ok, other=0.0)
    dk = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK, BLOCK_D], tl.float32)
    bh_q = (b * num_heads + h) * seq_len
    bh_k = (b * num_heads + h) * key_len

    count = tl.load(QCnt + b * s_cb + h * s_ch + k_block * s_ck)
    idx_row = QIdx + b * s_ib + h * s_ih + k_block * s_ik
    em_base = ElemMask + b * s_emb + h * s_emh
    for slot in range(count):
        q_block = tl.load(idx_row + slot)
        for sub in tl.static_range(BLOCK // SUB):
            offs_m = q_block * BLOCK + sub * SUB + tl.arange(0, SUB)
            row_ok = offs_m < seq_len
            q_tile_ok = row_ok[:, None] & d_ok[None, :]
            q = tl.load(Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qn + offs_d[None, :], mask=q_tile_ok,
                        other=0.0)
            do = tl.load(DO + (bh_q + offs_m[:, None]) * HEAD_DIM + offs_d[None, :], mask=q_tile_ok, other=0.0)
            lse = tl.load(Lse + bh_q + offs_m, mask=row_ok, other=float("inf"))
            lse = tl.where(lse == float("-inf"), float("inf"), lse) * 1.4426950408889634
            delta = tl.load(Delta + bh_q + offs_m, mask=row_ok, other=0.0)
            s = tl.dot(q, tl.trans(k)) * qk_scale_log2 + key_bias[None, :]
            if HAS_EMASK:
                full_row = BlockFull + b * s_fb + h * s_fh + q_block * s_fq
                s = _element_mask_scores(s, em_base, full_row, k_block, offs_m, offs_n, seq_len, s_emq)
            p = tl.math.exp2(s - lse[:, None])
            dv += tl.dot(tl.trans(p.to(do.dtype)), do)
            dp = tl.dot(do, tl.trans(v))
            ds = p * (dp - delta[:, None])
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q)

    out_offs = (bh_k + offs_n[:, None]) * HEAD_DIM + offs_d[None, :]
    tl.store(DK + out_offs, (dk * scale).to(DK.dtype.element_ty), mask=tile_ok)
    tl.store(DV + out_offs, dv.to(DV.dtype.element_ty), mask=tile_ok)
