"""`rectified`: block-sparse attention whose dropped softmax mass is put back.

Plain sparse attention renormalises each row over the kept keys, so kept keys are over-weighted by
1 / (their share of the full softmax mass) and the dropped keys' contribution is lost. Two published fixes,
and a combination of the two:

rectify="pooled", pooled_estimate="block": Rectified SpaAttn as published (Liu et al., arXiv 2511.19835;
    BienLuky/Rectified-SpaAttn). With pooled block probabilities P_ij (query block i, key block j) and
    block-mean values v_bar_j:
    - IPAR: visual key blocks are weighted by their token count and text keys enter one by one, unpooled,
      P_ij = n_j exp(s_ij) / (sum_j' n_j' exp(s_ij') + sum_text exp(s_it)), s = q_bar . k * scale;
    - GAPR: for a dropped block the pooled estimate is trusted only where its gain |q_bar_i . k_bar_j|
      beats the pooling error |mean|q - q_bar_i| . k_bar_j| + |q_bar_i . mean|k - k_bar_j||; the
      untrusted set is G_i;
    - O_i = R_i O_sparse,i + sum_{j not in S_i or G_i} P_ij v_bar_j, where R_i = sum_{j in S_i or G_i} P_ij
      (+ the text mass) is the estimated full-attention share of what the kernel renormalised over.
rectify="pooled", pooled_estimate="token" (default): the same idea per query token with the exact kept
    mass: the kept blocks and the text exactly, the dropped blocks' mass estimated from the token's own
    query against pooled keys, n_j exp(q_t . k_bar_j * scale), the two parts mixed in proportion to their
    masses:
    O_t = (Z_kept O_sparse,t + sum_dropped n_j e^{q_t k_bar_j s} v_bar_j) / (Z_kept + sum_dropped n_j e^{...}).
    That is one softmax over the kept keys plus one pooled column per dropped block (mean key, logit bias
    log n_j, mean value), which the block-sparse kernel walks after the kept blocks in the same launch
    (`estimate_dropped`, kernels/block_sparse_attention/pooled.py): no second pass over the tokens.
    The block version's R_i is itself a pooled estimate, and pooling flattens the softmax (exp of the mean
    score is below the mean of exp), so on sharp heads it under-weights the kept part and can end up
    further from dense than plain sparse attention; the token version keeps the exact part exact and adds
    a (conservative, by the same inequality) estimate of the rest, so it is never pulled far from sparse.
rectify="history": Re-ttention (Chen et al., NeurIPS 2025; cccrrrccc/Re-ttention). At each refresh step
    (every `refresh_every` steps, when the runtime re-plans) the call computes every pair and caches per row
    the in-pattern share of softmax mass r_i = exp(lse_pattern - lse_full) and the residual
    delta = O_full - r_i O_sparse; the sparse steps in between return r_i O_sparse + delta.
    A refresh needs the full output and its LSE: on CUDA without masks cuDNN computes them (next to the
    pattern's own call: density 1 + d, at cuDNN's rate); elsewhere the pattern and its complement (the
    dropped blocks, no text) run as two kernel calls merged by their LSEs (density 1).
rectify="calibrated": the pooled estimate, corrected by its own error measured at the last refresh step.
    A refresh computes the exact output (as "history" does) and the pooled output, and caches per token
    their difference e = O_full - O_pooled; the sparse steps in between return O_pooled + e. Re-ttention
    assumes the dropped blocks' whole contribution (and the kept share) stays as it was at the refresh;
    this assumes only the pooled estimate's error does, while the estimate itself follows each step's
    Q, K, V. A refresh computes the full output as above and the pooled output (density 1 + d).

Differences from the released code, where its users found faults:
- the block selection is `sparse`'s plan with the authors' defaults (128-token blocks, Hilbert order,
  top 25% union cumulative mass 0.3, 3-D neighbours, first-frame sink), cacheable across steps; the
  correction itself is recomputed from each step's Q, K, V, so a reused pattern still gets a fresh
  estimate of what it drops.
- Re-ttention's code adds 0.04 to every cached ratio per sparse step, assuming attention concentrates
  inside the mask over denoising; here that drift is `ratio_drift`, 0 by default. Its per-module step
  counters had to be reset by hand between prompts (`clear_stepi`); here the history travels with the
  cached pattern of each (denoiser, layer, CFG branch), which the runtime drops at every pipeline call.
- a pattern with every block kept returns exactly the dense output in every mode.
- the history modes refuse rolling KV-cache calls (those run dense, with the reason recorded): their
  history lives in the cached pattern, and a KV-cache call gets a restricted copy of it every time.
- on the embedded model (BENCHMARKS.md) "history" and "calibrated" at 0.135 density, refreshed every 5
  steps, reach 32.8 and 32.5 dB against dense where the pooled estimate alone reaches 23.5 dB; their
  refreshes make the attention work 0.45-0.47 of dense.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from ..context import AttentionCall
from ..pattern import BlockPattern, block_sizes
from ..validation import check_choice, check_float
from swiftdit.kernels.block_sparse_attention.dense_lse import cudnn_attention_available, cudnn_attention_with_lse
from swiftdit.kernels.block_sparse_attention.pooled import mean_pool_blocks
from .base import VisualAttentionInputs, attend_with_pattern
from .blocking import Reorder, block_ids, reorder_tokens, restore_token_order
from .registry import register_method
from .sparse import SparseAttention, SparseConfig

Rectify = Literal["pooled", "history", "calibrated"]
# The modes that run dense at each refresh step and keep what they measured until the next one.
REFRESHING_MODES = ("history", "calibrated")
PooledEstimate = Literal["token", "block"]


@dataclass(frozen=True)
class RectifiedConfig(SparseConfig):
    """Options of `rectified`: those of `sparse` with Rectified SpaAttn's defaults, plus:

    block_size: default 128. density: default 0.25 (the authors' drop rate 0.75 for Wan). mass: default
        0.3. reorder: default "hilbert".
    rectify: "pooled" (Rectified SpaAttn, default), "history" (Re-ttention) or "calibrated" (the pooled
        estimate plus its error at the last refresh). "history" and "calibrated" compute every pair at each
        refresh step, so they need refresh_every >= 2 (Re-ttention used 5).
    pooled_estimate: with rectify="pooled" or "calibrated", "token" (exact kept mass per token, default) or
        "block" (Rectified SpaAttn's pooled R_i with IPAR and GAPR, as published).
    ratio_drift: added to Re-ttention's cached ratios per sparse step since the refresh (its code used
        0.04), in [0, 1]. Default 0.
    """

    block_size: int = 128
    density: float = 0.25
    mass: float = 0.3
    reorder: Reorder = "hilbert"
    rectify: Rectify = "pooled"
    pooled_estimate: PooledEstimate = "token"
    ratio_drift: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("RectifiedConfig", "rectify", self.rectify, ("pooled", *REFRESHING_MODES))
        check_choice("RectifiedConfig", "pooled_estimate", self.pooled_estimate, ("token", "block"))
        check_float("RectifiedConfig", "ratio_drift", self.ratio_drift, minimum=0.0, maximum=1.0)
        if self.rectify in REFRESHING_MODES and self.refresh_every < 2:
            raise ValueError(
                f"RectifiedConfig: option 'refresh_every' must be >= 2 with rectify={self.rectify!r} (every refresh "
                f"step computes every pair to measure the history), got {self.refresh_every!r}"
            )


def block_rectification(inputs: VisualAttentionInputs, pattern: BlockPattern, out_sparse: torch.Tensor) -> torch.Tensor:
    """Rectified SpaAttn's output R_i O_sparse + sum over trusted dropped blocks of P_ij v_bar_j."""
    order, block_size = pattern.token_order, pattern.block_size
    q, k, v = (reorder_tokens(x, order, inputs.token_order) for x in (inputs.q, inputs.k, inputs.v))
    n = q.shape[2]
    token_block = block_ids(n, block_size, q.device)
    q_bar, k_bar, v_bar = (mean_pool_blocks(x, block_size) for x in (q, k, v))
    raw_scores = q_bar @ k_bar.transpose(-1, -2)

    # IPAR: each pooled block stands for n_j tokens; text keys stay individual.
    log_sizes = block_sizes(n, block_size, q.device).float().log()
    visual_logits = raw_scores * inputs.scale + log_sizes
    text_log_mass = None
    if inputs.text_k is not None:
        text_logits = q_bar @ inputs.text_k.float().transpose(-1, -2) * inputs.scale
        if inputs.text_key_mask is not None:
            text_logits = text_logits.masked_fill(~inputs.text_key_mask[:, None, None, :], float("-inf"))
        text_log_mass = text_logits.logsumexp(-1)
        log_norm = torch.logaddexp(visual_logits.logsumexp(-1), text_log_mass)
    else:
        log_norm = visual_logits.logsumexp(-1)
    block_probs = (visual_logits - log_norm[..., None]).exp()

    # GAPR: the pooled estimate of block (i, j) is trusted only where its gain beats its pooling error.
    q_spread = mean_pool_blocks((q.float() - q_bar[:, :, token_block]).abs(), block_size)
    k_spread = mean_pool_blocks((k.float() - k_bar[:, :, token_block]).abs(), block_size)
    pooling_error = (q_spread @ k_bar.transpose(-1, -2)).abs() + (q_bar @ k_spread.transpose(-1, -2)).abs()
    untrusted = raw_scores.abs() <= pooling_error

    covered = pattern.block_mask | untrusted
    kept_share = (block_probs * covered).sum(-1)
    if text_log_mass is not None:
        kept_share = kept_share + (text_log_mass - log_norm).exp()
    recovered = (block_probs * ~covered) @ v_bar
    kept_share = restore_token_order(kept_share[:, :, token_block], pattern, inputs.token_order)
    recovered = restore_token_order(recovered[:, :, token_block], pattern, inputs.token_order)
    return (kept_share[..., None] * out_sparse.float() + recovered).to(out_sparse.dtype)


def dropped_blocks_of(pattern: BlockPattern) -> BlockPattern:
    """The pattern of the blocks `pattern` drops, in its token order (Re-ttention's refresh steps)."""
    if pattern.element_mask is not None:
        raise ValueError("dropped_blocks_of: a pattern with an element mask has no block complement")
    return BlockPattern(~pattern.block_mask, pattern.block_size, pattern.num_tokens, token_order=pattern.token_order)


def without_text(inputs: VisualAttentionInputs) -> VisualAttentionInputs:
    return dataclasses.replace(inputs, text_k=None, text_v=None, text_key_mask=None)


@register_method
class RectifiedAttention(SparseAttention):
    name = "rectified"
    Config = RectifiedConfig
    summary = ("Sparse attention with the dropped softmax mass restored: pooled estimate (Rectified SpaAttn), "
               "cached history (Re-ttention), or the pooled estimate calibrated at refresh steps.")
    paper = (
        "Rectified SpaAttn: Revisiting Attention Sparsity for Efficient Video Generation (Liu et al., 2025); "
        "Re-ttention: Ultra Sparse Visual Generation via Attention Statistical Reshape (Chen et al., NeurIPS 2025)"
    )

    def attend(self, inputs: VisualAttentionInputs, pattern: BlockPattern, call: AttentionCall) -> torch.Tensor:
        if self.config.rectify == "history":
            return self._attend_with_history(inputs, pattern)
        if self.config.rectify == "calibrated":
            return self._attend_calibrated(inputs, pattern)
        return self._pooled_output(inputs, pattern)

    def _pooled_output(self, inputs: VisualAttentionInputs, pattern: BlockPattern,
                       correction: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled estimate's output, plus `correction` (calibrated's cached error) where given: added in
        float32 as the output returns to raster order, rounded once."""
        if inputs.visual_mask is not None:
            # A model-imposed token mask (diffusion forcing) cannot be honoured by a pooled estimate.
            return attend_with_pattern(inputs, pattern, return_lse=False, output_addend=correction)[0]
        if self.config.pooled_estimate == "token":
            # The kernel walks each dropped block's pooled column after the kept blocks, in one softmax.
            return attend_with_pattern(inputs, pattern, return_lse=False, estimate_dropped=True,
                                       output_addend=correction)[0]
        out = block_rectification(inputs, pattern, attend_with_pattern(inputs, pattern, return_lse=False)[0])
        return out if correction is None else (out.float() + correction.float()).to(out.dtype)

    def supports_kv_cache_calls(self) -> bool:
        # The history lives in the cached pattern's extras; a KV-cache call's restricted copy would refresh
        # (compute every pair) at every call while recording only the pattern's density.
        return self.config.rectify == "pooled"

    def computed_density(self, pattern: BlockPattern, inputs: VisualAttentionInputs) -> torch.Tensor:
        density = pattern.density_per_head()
        if self.config.rectify == "pooled" or _has_history(pattern):
            return density
        # A refresh: every pair once (cuDNN, or the pattern and its complement), plus the pattern's pairs again
        # for the sparse output next to cuDNN's (history) or for the pooled output (calibrated).
        if self.config.rectify == "history" and not uses_cudnn_refresh(inputs):
            return torch.ones_like(density)
        return 1 + density

    def _attend_with_history(self, inputs: VisualAttentionInputs, pattern: BlockPattern) -> torch.Tensor:
        """Re-ttention. The history travels in the pattern's extras: the runtime re-plans at each refresh
        step (every `refresh_every` steps, per denoiser, layer and CFG branch) and drops its patterns at
        the end of every pipeline call, so the history is measured exactly when a pattern is new, reused
        while the pattern is, never leaks into the next call, and counts in the pattern cache's memory."""
        if _has_history(pattern):
            history = pattern.extras
            history["sparse_calls"] += 1
            ratio = history["kept_share"]
            if self.config.ratio_drift:
                ratio = (ratio + self.config.ratio_drift * history["sparse_calls"]).clamp(max=1.0)
            # r_i O_sparse + delta in the pass that restores the token order.
            return attend_with_pattern(inputs, pattern, return_lse=False, output_scale=ratio,
                                       output_addend=history["residual"])[0]
        out_sparse, lse_sparse = attend_with_pattern(inputs, pattern)
        out_full, lse_full = full_attention(inputs, pattern, (out_sparse, lse_sparse))
        # Rounding can put the kept part's LSE a hair above the full one.
        kept_share = (lse_sparse - lse_full).exp().clamp(max=1.0)
        residual = out_full - kept_share[..., None] * out_sparse.float()
        remember(pattern, kept_share=kept_share, residual=in_layout_of(out_sparse, residual), sparse_calls=0)
        return out_full.to(out_sparse.dtype)

    def _attend_calibrated(self, inputs: VisualAttentionInputs, pattern: BlockPattern) -> torch.Tensor:
        """The pooled output plus its error at the last refresh step (kept like Re-ttention's history)."""
        if _has_history(pattern):
            return self._pooled_output(inputs, pattern, correction=pattern.extras["estimate_error"])
        out_pooled = self._pooled_output(inputs, pattern)
        out_full, _ = full_attention(inputs, pattern)
        remember(pattern, estimate_error=in_layout_of(out_pooled, out_full - out_pooled.float()))
        return out_full.to(out_pooled.dtype)


def uses_cudnn_refresh(inputs: VisualAttentionInputs) -> bool:
    """cuDNN takes a refresh's full attention when no mask is involved (it runs unmasked)."""
    return cudnn_attention_available(inputs.q) and inputs.text_key_mask is None and inputs.visual_mask is None


def full_attention(inputs: VisualAttentionInputs, pattern: BlockPattern,
                   sparse: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact attention of every row (float32 output, LSE) at a refresh step: cuDNN where it applies, else the
    pattern's output (`sparse`, computed here if not given) merged by LSE with one kernel call over the blocks
    the pattern drops."""
    if uses_cudnn_refresh(inputs):
        k, v = inputs.k, inputs.v
        if inputs.text_k is not None:
            k, v = torch.cat([k, inputs.text_k], dim=2), torch.cat([v, inputs.text_v], dim=2)
        out_full, lse_full = cudnn_attention_with_lse(inputs.q, k, v, inputs.scale)
        return out_full.float(), lse_full
    out_sparse, lse_sparse = sparse if sparse is not None else attend_with_pattern(inputs, pattern)
    out_dropped, lse_dropped = attend_with_pattern(without_text(inputs), dropped_blocks_of(pattern))
    # A row that drops nothing has an empty complement (LSE -inf): its kept share is 1.
    lse_full = torch.logaddexp(lse_sparse, lse_dropped)
    kept_share = (lse_sparse - lse_full).exp()[..., None]
    return kept_share * out_sparse.float() + (1 - kept_share) * out_dropped.float(), lse_full


def in_layout_of(output: torch.Tensor, correction: torch.Tensor) -> torch.Tensor:
    """A cached correction in the output's dtype and memory layout (cuDNN's refresh output is laid out
    otherwise): the sparse steps add it while restoring the token order, which reads it row by row."""
    return torch.empty_like(output).copy_(correction)


def remember(pattern: BlockPattern, **history) -> None:
    pattern.extras = {**(pattern.extras or {}), **history}


def _has_history(pattern: BlockPattern) -> bool:
    """Whether a refresh has measured this pattern's history (Re-ttention's residual or the estimate's error)."""
    return pattern.extras is not None and not {"residual", "estimate_error"}.isdisjoint(pattern.extras)
