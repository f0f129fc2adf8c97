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
- pooled columns (HAS_POOLED; pooled.py) are walked last, SUB block means at a time: query block i sees
  block j's mean key, with the logit bias log n_j (passed pre-divided by the softmax scale, i.e. in raw
  score units), only where its (B|1, H|1, nQ, nK) uint8 `Dropped` row says i drops j;
- the optional element mask is only evaluated for (query block, key block) pairs whose `block_full` flag
  is 0, so whole blocks cost nothing extra. The constexpr EMASK_KIND says which kind (EMASK_NONE = 0:
  none; EMASK_DENSE = 1: a (B|1, H|1, N, N) uint8 mask is read; EMASK_WINDOW = 2: a local
  window is computed from (N, 3) int32 token coordinates, allowed = |dt| <= win_t and dy^2 + dx^2 < win_r2).

Tensors the wrappers allocate (lse, gradients, feature maps) are contiguous (B, H, N, D) / (B, H, N); the
forward's output takes q's layout (see `triton_ops.output_like`). q, k, v and text k/v come with their own
strides so that (B, N, H, D) views need no copy.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
# Values of the kernels' EMASK_KIND constexpr.
EMASK_NONE, EMASK_DENSE, EMASK_WINDOW = 0, 1, 2


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


# The forward's candidates on Hopper. Every knob is a config entry so that a sweep can force any one of them
# (`triton_ops.launch_forward(..., config=...)`); the autotuner tries those that survive `_prune_forward`.
# Measured by compiling for sm_90 with Triton 3.6 (no GPU needed; see benchmarks/bench_kernel_variants.py
# --compile-check): shared memory is the query tile plus num_stages copies of a whole key block's K and V
# (both sub-tiles of a block are loaded in one loop iteration), so at block 128 / head_dim 128 stage 4 never
# fits; 4 warps on 128 query rows spill (the fp32 accumulator alone is 128 registers per thread); and
# WARP_SPEC (tl.range(..., warp_specialize=True)) fails in Triton 3.6's Hopper pass with 4 warps and leaves
# the 8-warp kernel unchanged, so it is a sweep option only, never autotuned.
FORWARD_SPACE = {"SUB": (64, 128), "num_warps": (4, 8), "num_stages": (2, 3, 4), "USE_TMA": (False, True),
                 "WARP_SPEC": (False, True)}
# What the interpreter runs (and the fallback when pruning leaves nothing): plain pointer loads.
FORWARD_INTERPRETER_CONFIG = {"SUB": 32, "num_warps": 4, "num_stages": 1, "USE_TMA": False, "WARP_SPEC": False}
SMEM_LIMIT_BYTES = 232448  # opt-in shared memory per block on H100 / H200 (227 KB)
MAX_LIVE_FP32_REGS = 160  # accumulator + one score tile per thread; above this ptxas spilled (sm_90, 3.6)


def forward_config(SUB: int, num_warps: int, num_stages: int, USE_TMA: bool = False,
                   WARP_SPEC: bool = False) -> triton.Config:
    return triton.Config({"SUB": SUB, "USE_TMA": USE_TMA, "WARP_SPEC": WARP_SPEC}, num_warps=num_warps,
                         num_stages=num_stages)


def forward_config_dict(config: triton.Config) -> dict:
    return dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)


def all_forward_configs() -> list[triton.Config]:
    """The whole candidate space (48 configs), before any pruning."""
    return [
        forward_config(sub, warps, stages, tma, ws)
        for sub in FORWARD_SPACE["SUB"]
        for warps in FORWARD_SPACE["num_warps"]
        for stages in FORWARD_SPACE["num_stages"]
        for tma in FORWARD_SPACE["USE_TMA"]
        for ws in FORWARD_SPACE["WARP_SPEC"]
    ]


def forward_smem_estimate(block: int, block_d: int, num_stages: int, elem_bytes: int = 2,
                          has_emask: bool = False) -> int:
    """Shared memory of one program: the query tile and `num_stages` buffers of a key block's K and V
    (matches what Triton 3.6 allocates for sm_90 to within 0.1%); the element mask's uint8 tiles are
    pipelined too (bounded by one block x block tile per stage). has_emask means the dense (N, N) mask
    (EMASK_DENSE); the coordinate window (EMASK_WINDOW) loads 3 int32 per row and column and adds no tiles
    (sm_90 compile, Triton 3.9: same shared memory as no mask)."""
    mask = num_stages * block * block if has_emask else 0
    return block * block_d * elem_bytes + num_stages * 2 * block * block_d * elem_bytes + mask


def forward_config_allowed(config: triton.Config, block: int, block_d: int, tma_ok: bool,
                           tune: bool = False, has_emask: bool = False) -> str | None:
    """None if `config` can run on these arguments, else why not (the sweep records the reason). `tune`:
    also reject what the autotuner should not try (warp specialization)."""
    kw = config.kwargs
    if kw["SUB"] > block:
        return f"SUB {kw['SUB']} > block {block}"
    if kw["USE_TMA"] and not tma_ok:
        return "layout or device does not allow TMA (needs head_dim == BLOCK_D, 16-byte aligned strides, sm_90+)"
    if tune and kw["WARP_SPEC"]:
        return "warp specialization is a sweep option only"
    smem = forward_smem_estimate(block, block_d, config.num_stages, has_emask=has_emask)
    if smem > SMEM_LIMIT_BYTES:
        return f"shared memory {smem // 1024} KB > {SMEM_LIMIT_BYTES // 1024} KB"
    live = (block * block_d + block * kw["SUB"]) // (32 * config.num_warps)
    if live > MAX_LIVE_FP32_REGS:
        return f"accumulator + scores need {live} fp32 registers per thread (spills)"
    return None


def default_forward_configs() -> list[triton.Config]:
    if interpreting():
        return [forward_config(**FORWARD_INTERPRETER_CONFIG)]
    return [c for c in all_forward_configs() if not c.kwargs["WARP_SPEC"]]


def _prune_forward(configs, named_args, **kwargs):
    """Drop candidates that cannot run here or would spill: sub-tile larger than the block, TMA where the
    layout forbids it, shared memory beyond the H100's limit. At block 128 / head_dim 128 this leaves 8
    configs (8 warps; SUB 64/128; 2/3 stages; TMA on/off)."""
    block, block_d, tma_ok = kwargs["BLOCK"], kwargs["BLOCK_D"], kwargs["TMA_OK"]
    kept = [c for c in configs
            if forward_config_allowed(c, block, block_d, tma_ok, tune=True,
                                      has_emask=kwargs["EMASK_KIND"] == EMASK_DENSE) is None]
    return kept or [_fallback_forward_config(block, block_d)]


def _fallback_forward_config(block: int, block_d: int) -> triton.Config:
    """For shapes outside the tuned space (block 32, head_dim 256): pointer loads, the deepest pipeline
    that fits (1 = none), 8 warps once the accumulator would need 128 registers per thread on 4."""
    stages = next((s for s in (3, 2) if forward_smem_estimate(block, block_d, s) <= SMEM_LIMIT_BYTES), 1)
    warps = 8 if block * block_d // 128 >= 128 else 4
    return forward_config(min(block, 64), warps, stages)


@triton.jit
def _softmax_update(qk, m_i, l_i, acc, v, qk_scale_log2, GUARD: tl.constexpr):
    """One FlashAttention update from raw scores `qk` (-inf where masked), as in Triton's fused-attention
    tutorial: the row max is taken on raw scores and the scale folds into one FMA per score; P V accumulates
    into `acc` inside the MMA. qk_scale_log2 must be > 0 (the wrapper makes it so).

    GUARD: a row may be -inf across the whole tile (keys past the end, element mask, text padding) while it
    has seen no finite score yet; then m stays -inf and 0 is subtracted instead (no inf - inf). Tiles that
    always hold a finite score in every row skip it."""
    m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale_log2)
    if GUARD:
        m_use = tl.where(m_ij == float("-inf"), 0.0, m_ij)
    else:
        m_use = m_ij
    p = tl.math.exp2(qk * qk_scale_log2 - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc)
    return m_ij, l_i, acc


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
def _window_keep(Coords, offs_m, offs_n, seq_len, win_r2, win_t):
    """(rows, cols) bool: the local window between query tokens `offs_m` and key tokens `offs_n`, from their
    (t, y, x) int32 coordinates (Coords is (N, 3) contiguous); False past the sequence end."""
    m_ok = offs_m < seq_len
    n_ok = offs_n < seq_len
    tq = tl.load(Coords + offs_m * 3, mask=m_ok, other=0)
    yq = tl.load(Coords + offs_m * 3 + 1, mask=m_ok, other=0)
    xq = tl.load(Coords + offs_m * 3 + 2, mask=m_ok, other=0)
    tk = tl.load(Coords + offs_n * 3, mask=n_ok, other=0)
    yk = tl.load(Coords + offs_n * 3 + 1, mask=n_ok, other=0)
    xk = tl.load(Coords + offs_n * 3 + 2, mask=n_ok, other=0)
    dt = tq[:, None] - tk[None, :]
    dy = yq[:, None] - yk[None, :]
    dx = xq[:, None] - xk[None, :]
    keep = (dt <= win_t) & (dt >= -win_t) & (dy * dy + dx * dx < win_r2)
    return keep & m_ok[:, None] & n_ok[None, :]


@triton.jit
def _element_mask_scores(s, ElemMask, BlockFullRow, Coords, k_block, offs_m, offs_n, seq_len, s_em_q, win_r2, win_t,
                         EMASK_KIND: tl.constexpr):
    """Set scores outside the element mask to -inf, evaluating the mask only for partially kept blocks.

    EMASK_KIND 1: ElemMask points at this (batch, head)'s (N, N) uint8 mask. EMASK_KIND 2: the local window
    of `_window_keep` (radius^2 = win_r2, temporal radius win_t). BlockFullRow points at this query block's
    flags.
    """
    full = tl.load(BlockFullRow + k_block)
    if full == 0:
        if EMASK_KIND == 2:
            keep = _window_keep(Coords, offs_m, offs_n, seq_len, win_r2, win_t)
        else:
            inside = (offs_m[:, None] < seq_len) & (offs_n[None, :] < seq_len)
            keep = tl.load(ElemMask + offs_m[:, None].to(tl.int64) * s_em_q + offs_n[None, :], mask=inside,
                           other=0) != 0
        s = tl.where(keep, s, float("-inf"))
    return s


@triton.jit
def _visual_tile(q, k_base, v_base, s_kn, s_vn, em_base, full_row, coords, s_emq, win_r2, win_t, k_block, offs_m,
                 offs_n, offs_d, seq_len, qk_scale_log2, HEAD_DIM: tl.constexpr, EVEN_N: tl.constexpr, EVEN_D: tl.constexpr,
                 EMASK_KIND: tl.constexpr):
    """Scores (log2 units) of the query tile against visual keys `offs_n`, with the keys and values."""
    k = _load_key_rows(k_base, offs_n, s_kn, offs_d, seq_len, HEAD_DIM, EVEN_N, EVEN_D)
    v = _load_key_rows(v_base, offs_n, s_vn, offs_d, seq_len, HEAD_DIM, EVEN_N, EVEN_D)
    s = tl.dot(q, tl.trans(k)) * qk_scale_log2
    if not EVEN_N:
        # An additive -inf on keys past the end fuses with the scale into one FMA.
        s += tl.where(offs_n < seq_len, 0.0, float("-inf"))[None, :]
    if EMASK_KIND:
        s = _element_mask_scores(s, em_base, full_row, coords, k_block, offs_m, offs_n, seq_len, s_emq, win_r2, win_t,
                                 EMASK_KIND)
    return s, k, v


@triton.jit
def _load_text_keys(tk_base, tv_base, s_tkn, s_tvn, text_mask_row, offs_t, offs_d, d_ok, text_len,
                    HAS_TEXT_MASK: tl.constexpr):
    """Text keys and values `offs_t` (zeros past the end and on padding) and which of them count."""
    t_ok = offs_t < text_len
    if HAS_TEXT_MASK:
        t_ok = t_ok & (tl.load(text_mask_row + offs_t, mask=offs_t < text_len, other=0) != 0)
    k = tl.load(tk_base + offs_t[:, None] * s_tkn + offs_d[None, :], mask=t_ok[:, None] & d_ok[None, :], other=0.0)
    v = tl.load(tv_base + offs_t[:, None] * s_tvn + offs_d[None, :], mask=t_ok[:, None] & d_ok[None, :], other=0.0)
    return k, v, t_ok


@triton.jit
def _text_tile(q, tk_base, tv_base, s_tkn, s_tvn, text_mask_row, offs_t, offs_d, d_ok, text_len, qk_scale_log2,
               HAS_TEXT_MASK: tl.constexpr):
    """Scores (log2 units) of the query tile against text keys `offs_t` (-inf past the end and on padding)."""
    k, v, t_ok = _load_text_keys(tk_base, tv_base, s_tkn, s_tvn, text_mask_row, offs_t, offs_d, d_ok, text_len,
                                 HAS_TEXT_MASK)
    s = tl.dot(q, tl.trans(k)) * qk_scale_log2
    return tl.where(t_ok[None, :], s, float("-inf")), k, v


@triton.jit
def _pooled_tile(q, PoolK, PoolV, PoolBias, Dropped, b, h, q_block, s_pkb, s_pkh, s_pkn, s_pvb, s_pvh, s_pvn, s_db,
                 s_dh, s_dq, p_start, offs_d, d_ok, num_kv_blocks, SUB: tl.constexpr):
    """Raw scores of query block `q_block`'s tile against the SUB pooled columns from `p_start` (block means,
    plus their log n_j / scale bias; -inf for blocks this query block keeps and past the last block), with
    the means' keys and values."""
    offs_p = p_start + tl.arange(0, SUB)
    p_ok = offs_p < num_kv_blocks
    dropped = tl.load(Dropped + b * s_db + h * s_dh + q_block * s_dq + offs_p, mask=p_ok, other=0)
    p_ok = p_ok & (dropped != 0)
    tile_ok = p_ok[:, None] & d_ok[None, :]
    k = tl.load(PoolK + b * s_pkb + h * s_pkh + offs_p[:, None] * s_pkn + offs_d[None, :], mask=tile_ok, other=0.0)
    v = tl.load(PoolV + b * s_pvb + h * s_pvh + offs_p[:, None] * s_pvn + offs_d[None, :], mask=tile_ok, other=0.0)
    bias = tl.load(PoolBias + offs_p, mask=p_ok, other=0.0)
    s = tl.dot(q, tl.trans(k)) + bias[None, :]
    return tl.where(p_ok[None, :], s, float("-inf")), k, v


@triton.jit
def _dq_step(s, k, v, do, lse, delta, dq):
    """dQ += dS K for one key tile, dS = P * (dO V^T - delta) with P recomputed from the saved LSE."""
    p = tl.math.exp2(s - lse[:, None])
    ds = p * (tl.dot(do, tl.trans(v)) - delta[:, None])
    return dq + tl.dot(ds.to(k.dtype), k)


@triton.autotune(
    configs=default_forward_configs(),
    key=["BLOCK", "HEAD_DIM", "HAS_TEXT", "EMASK_KIND", "EVEN_N", "TMA_OK", "HAS_POOLED"],
    prune_configs_by={"early_config_prune": _prune_forward},
)
@triton.jit
def block_sparse_forward_kernel(
    Q, K, V, Out, Lse, KvIdx, KvCnt,
    TextK, TextV, TextMask, ElemMask, BlockFull, Coords, PoolK, PoolV, PoolBias, Dropped,
    s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_ob, s_oh, s_on,
    s_ib, s_ih, s_iq, s_cb, s_ch,
    s_tkb, s_tkh, s_tkn, s_tvb, s_tvh, s_tvn, s_tmb,
    s_emb, s_emh, s_emq, s_fb, s_fh, s_fq,
    s_pkb, s_pkh, s_pkn, s_pvb, s_pvh, s_pvn, s_db, s_dh, s_dq,
    num_heads, seq_len, text_len, num_kv_blocks, qk_scale_log2, win_r2, win_t,
    BLOCK: tl.constexpr, SUB: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    EVEN_N: tl.constexpr, HAS_TEXT: tl.constexpr, HAS_TEXT_MASK: tl.constexpr,
    EMASK_KIND: tl.constexpr, TMA_OK: tl.constexpr, USE_TMA: tl.constexpr, WARP_SPEC: tl.constexpr,
    HAS_POOLED: tl.constexpr,
):
    """Forward for one query block. USE_TMA loads K/V sub-tiles through device-side tensor descriptors (TMA
    on Hopper; rows past the end come back as zeros and are masked to -inf like in the pointer path);
    WARP_SPEC asks Triton to warp-specialize the key loop. TMA_OK: the wrapper checked the layout for TMA."""
    tl.static_assert(TMA_OK or not USE_TMA)
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
    if USE_TMA:
        k_desc = tl.make_tensor_descriptor(k_base, shape=[seq_len, HEAD_DIM], strides=[s_kn, 1],
                                           block_shape=[SUB, HEAD_DIM])
        v_desc = tl.make_tensor_descriptor(v_base, shape=[seq_len, HEAD_DIM], strides=[s_vn, 1],
                                           block_shape=[SUB, HEAD_DIM])
    count = tl.load(KvCnt + b * s_cb + h * s_ch + q_block)
    idx_row = KvIdx + b * s_ib + h * s_ih + q_block * s_iq
    em_base = ElemMask + b * s_emb + h * s_emh
    full_row = BlockFull + b * s_fb + h * s_fh + q_block * s_fq
    bhn = (b * num_heads + h) * seq_len

    for slot in tl.range(count, warp_specialize=WARP_SPEC):
        k_block = tl.load(idx_row + slot)
        for sub in tl.static_range(BLOCK // SUB):
            start = k_block * BLOCK + sub * SUB
            offs_n = start + tl.arange(0, SUB)
            if USE_TMA:
                k = k_desc.load([start, 0])
            else:
                k = _load_key_rows(k_base, offs_n, s_kn, offs_d, seq_len, HEAD_DIM, EVEN_N, BLOCK_D == HEAD_DIM)
            qk = tl.dot(q, tl.trans(k))
            if not EVEN_N:
                qk = tl.where((offs_n < seq_len)[None, :], qk, float("-inf"))
            if EMASK_KIND:
                qk = _element_mask_scores(qk, em_base, full_row, Coords, k_block, offs_m, offs_n, seq_len, s_emq,
                                          win_r2, win_t, EMASK_KIND)
            if USE_TMA:
                v = v_desc.load([start, 0])
            else:
                v = _load_key_rows(v_base, offs_n, s_vn, offs_d, seq_len, HEAD_DIM, EVEN_N, BLOCK_D == HEAD_DIM)
            # Only a ragged end (a sub-tile wholly past it) or the element mask can blank a whole row.
            m_i, l_i, acc = _softmax_update(qk, m_i, l_i, acc, v, qk_scale_log2, EMASK_KIND or not EVEN_N)

    if HAS_TEXT:
        tk_base = TextK + b * s_tkb + h * s_tkh
        tv_base = TextV + b * s_tvb + h * s_tvh
        for t_start in range(0, text_len, SUB):
            k, v, t_ok = _load_text_keys(tk_base, tv_base, s_tkn, s_tvn, TextMask + b * s_tmb,
                                         t_start + tl.arange(0, SUB), offs_d, d_ok, text_len, HAS_TEXT_MASK)
            qk = tl.where(t_ok[None, :], tl.dot(q, tl.trans(k)), float("-inf"))
            m_i, l_i, acc = _softmax_update(qk, m_i, l_i, acc, v, qk_scale_log2, True)

    if HAS_POOLED:
        for p_start in range(0, num_kv_blocks, SUB):
            qk, k, v = _pooled_tile(q, PoolK, PoolV, PoolBias, Dropped, b, h, q_block, s_pkb, s_pkh, s_pkn, s_pvb, s_pvh,
                                    s_pvn, s_db, s_dh, s_dq, p_start, offs_d, d_ok, num_kv_blocks, SUB)
            m_i, l_i, acc = _softmax_update(qk, m_i, l_i, acc, v, qk_scale_log2, True)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    # A reciprocal per row and a multiply per element, not an IEEE division per element (gluon_hopper_kernel.py).
    out = acc * (1.0 / l_safe)[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) / 1.4426950408889634)
    o_ptrs = Out + b * s_ob + h * s_oh + offs_m[:, None] * s_on + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    tl.store(Lse + bhn + offs_m, lse, mask=row_ok)


@triton.autotune(
    configs=_configs((32, 64), ((8, 2), (4, 2), (8, 3))),
    key=["BLOCK", "HEAD_DIM", "HAS_TEXT", "EMASK_KIND", "HAS_POOLED"],
    prune_configs_by={"early_config_prune": _prune_sub_tiles},
)
@triton.jit
def block_sparse_dq_kernel(
    Q, K, V, DO, Lse, Delta, DQ, KvIdx, KvCnt,
    TextK, TextV, TextMask, ElemMask, BlockFull, Coords, PoolK, PoolV, PoolBias, Dropped,
    s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn,
    s_ib, s_ih, s_iq, s_cb, s_ch,
    s_tkb, s_tkh, s_tkn, s_tvb, s_tvh, s_tvn, s_tmb,
    s_emb, s_emh, s_emq, s_fb, s_fh, s_fq,
    s_pkb, s_pkh, s_pkn, s_pvb, s_pvh, s_pvn, s_db, s_dh, s_dq,
    num_heads, seq_len, text_len, num_kv_blocks, qk_scale_log2, scale, win_r2, win_t,
    BLOCK: tl.constexpr, SUB: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    EVEN_N: tl.constexpr, HAS_TEXT: tl.constexpr, HAS_TEXT_MASK: tl.constexpr,
    EMASK_KIND: tl.constexpr, HAS_POOLED: tl.constexpr,
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
            s, k, v = _visual_tile(q, k_base, v_base, s_kn, s_vn, em_base, full_row, Coords, s_emq, win_r2, win_t,
                                   k_block, offs_m, offs_n, offs_d, seq_len, qk_scale_log2, HEAD_DIM, EVEN_N, BLOCK_D == HEAD_DIM,
                                   EMASK_KIND)
            dq = _dq_step(s, k, v, do, lse, delta, dq)

    if HAS_TEXT:
        tk_base = TextK + b * s_tkb + h * s_tkh
        tv_base = TextV + b * s_tvb + h * s_tvh
        for start in range(0, text_len, SUB):
            s, k, v = _text_tile(q, tk_base, tv_base, s_tkn, s_tvn, TextMask + b * s_tmb, start + tl.arange(0, SUB),
                                 offs_d, d_ok, text_len, qk_scale_log2, HAS_TEXT_MASK)
            dq = _dq_step(s, k, v, do, lse, delta, dq)

    if HAS_POOLED:
        for p_start in range(0, num_kv_blocks, SUB):
            s, k, v = _pooled_tile(q, PoolK, PoolV, PoolBias, Dropped, b, h, q_block, s_pkb, s_pkh, s_pkn, s_pvb, s_pvh,
                                   s_pvn, s_db, s_dh, s_dq, p_start, offs_d, d_ok, num_kv_blocks, SUB)
            dq = _dq_step(s * qk_scale_log2, k, v, do, lse, delta, dq)

    tl.store(DQ + (bhn + offs_m[:, None]) * HEAD_DIM + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=tile_ok)


@triton.autotune(
    configs=_configs((32, 64), ((8, 2), (4, 2), (8, 3))),
    key=["BLOCK", "HEAD_DIM", "EMASK_KIND", "HAS_KEY_MASK", "POOLED"],
    prune_configs_by={"early_config_prune": _prune_sub_tiles},
)
@triton.jit
def block_sparse_dkdv_kernel(
    Q, K, V, DO, Lse, Delta, DK, DV, QIdx, QCnt, KeyMask, ElemMask, BlockFull, Coords, PoolBias, Dropped,
    s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn,
    s_ib, s_ih, s_ik, s_cb, s_ch, s_ck, s_kmb,
    s_emb, s_emh, s_emq, s_fb, s_fh, s_fq, s_db, s_dh, s_dq,
    num_heads, seq_len, key_len, qk_scale_log2, scale, win_r2, win_t,
    BLOCK: tl.constexpr, SUB: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_KEY_MASK: tl.constexpr, EMASK_KIND: tl.constexpr, POOLED: tl.constexpr,
):
    """dK, dV for one key block (visual, a tile of text keys, or a tile of pooled columns) over the query
    blocks that attend to it.

    QIdx/QCnt is the transposed index table: query blocks per key block. For text keys and pooled columns
    it is "every query block", passed with zero strides. POOLED: the keys are block means with a log n_j /
    scale bias (PoolBias), counted only for the query blocks whose `Dropped` row marks them. SUB query rows
    are processed at a time.
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
    if POOLED:
        key_bias = tl.load(PoolBias + offs_n, mask=key_ok, other=0.0) * qk_scale_log2
    else:
        key_bias = tl.zeros([BLOCK], tl.float32)
    key_bias = tl.where(key_ok, key_bias, float("-inf"))
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
            if POOLED:
                dropped = tl.load(Dropped + b * s_db + h * s_dh + q_block * s_dq + offs_n, mask=offs_n < key_len,
                                  other=0)
                s = tl.where((dropped != 0)[None, :], s, float("-inf"))
            if EMASK_KIND:
                full_row = BlockFull + b * s_fb + h * s_fh + q_block * s_fq
                s = _element_mask_scores(s, em_base, full_row, Coords, k_block, offs_m, offs_n, seq_len, s_emq, win_r2,
                                         win_t, EMASK_KIND)
            p = tl.math.exp2(s - lse[:, None])
            dv += tl.dot(tl.trans(p.to(do.dtype)), do)
            dp = tl.dot(do, tl.trans(v))
            ds = p * (dp - delta[:, None])
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q)

    out_offs = (bh_k + offs_n[:, None]) * HEAD_DIM + offs_d[None, :]
    tl.store(DK + out_offs, (dk * scale).to(DK.dtype.element_ty), mask=tile_ok)
    tl.store(DV + out_offs, dv.to(DV.dtype.element_ty), mask=tile_ok)
