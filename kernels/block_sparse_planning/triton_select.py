"""Triton block selection: one program per score row turns block probabilities into the plan.

The program sorts its row in registers (at most MAX_KEY_BLOCKS key blocks) and decides how many blocks the row
keeps: the fixed count, or, with the cumulative-mass rule, the larger of that count and the fewest top blocks
whose probabilities sum to the target (a scan over the sorted row). It reads the count-th largest probability
as the threshold and keeps every block above it plus the lowest-numbered blocks equal to it, as many as the
count still allows, which is what the reference's stable ranking keeps. In the same pass it adds the diagonal
when asked and writes everything the planner returns: the block mask, the index table (kept ids ascending,
-1 padded, by the same compaction as `block_index_table`, fused here so that the row is read once), the count
and the kept mass. That replaces PyTorch's multi-pass radix top-k (or whole sort, for the mass rule), a
scatter, the index-table kernel and a reduction (at Wan 480p with 64-token blocks they were half of the
planner's time).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Rows longer than this keep PyTorch's top-k (or sort, for the mass rule). Measured as whole-planner CUDA
# graphs on the H100 (sessions 10 and 11): 512-wide rows (Wan 480p at 64-token blocks) plan faster here than with
# the top-k (0.14 ms per call); at Wan 720p, 591-wide rows (128-token blocks) took 0.72 against 0.60 ms with the
# top-k (0.73 against 0.75 ms with the mass rule), and 1,182-wide rows (64-token blocks, a 2,048-wide sort)
# 3.5 against 1.2-2.0 ms.
MAX_KEY_BLOCKS = 512


@triton.jit
def _select_top_blocks_kernel(Probs, Mask, Idx, Cnt, Mass, num_q_blocks, num_k_blocks, keep, keep_mass,
                              MASS_RULE: tl.constexpr, DIAGONAL: tl.constexpr, BLOCK_K: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # over B * H * nQ
    offs = tl.arange(0, BLOCK_K)
    inside = offs < num_k_blocks
    base = row * num_k_blocks
    probs = tl.load(Probs + base + offs, mask=inside, other=-1.0)  # probabilities are >= 0: padding sorts last
    ranked = tl.sort(probs, 0, descending=True)
    if MASS_RULE:
        # Ranks whose exclusive running mass is still below the target are needed. Padding (-1) ranks
        # after every real block, so the running mass of real ranks never includes it, and it is not counted.
        mass_before = tl.cumsum(ranked, 0) - ranked
        needed = tl.sum(((mass_before < keep_mass) & inside).to(tl.int32), 0)
        keep = tl.maximum(keep, needed)
    threshold = tl.max(tl.where(offs == keep - 1, ranked, -1.0), 0)
    above = probs > threshold
    ties = (probs == threshold) & inside
    tie_rank = tl.cumsum(ties.to(tl.int32), 0)  # 1-based, in block order
    kept = above | (ties & (tie_rank <= keep - tl.sum(above.to(tl.int32), 0)))
    if DIAGONAL:
        kept = kept | (offs == row % num_q_blocks)
    kept = kept & inside
    count = tl.sum(kept.to(tl.int32), 0)
    slot = tl.cumsum(kept.to(tl.int32), 0) - 1
    tl.store(Idx + base + slot, offs.to(tl.int32), mask=kept)
    tl.store(Idx + base + offs, tl.full([BLOCK_K], -1, tl.int32), mask=inside & (offs >= count))
    tl.store(Mask + base + offs, kept.to(tl.int8), mask=inside)
    tl.store(Cnt + row, count)
    tl.store(Mass + row, tl.sum(tl.where(kept, probs, 0.0), 0))


def select_top_blocks_triton(probs: torch.Tensor, keep: int, include_diagonal: bool,
                             keep_mass: float | None = None):
    """probs (B, H, nQ, nK) float32 -> (block_mask bool, kv_indices int32, kv_counts int32 (B, H, nQ),
    kept_mass float32 (B, H, nQ)) keeping `keep` blocks per row (0 <= keep <= nK), or more where the
    fewest top blocks reaching `keep_mass` of the row's probability are more, plus the diagonal."""
    b, h, n_q, n_k = probs.shape
    if n_k > MAX_KEY_BLOCKS:
        raise ValueError(f"select_top_blocks_triton: at most {MAX_KEY_BLOCKS} key blocks per row, got {n_k}")
    probs = probs.contiguous()
    mask = torch.empty(probs.shape, dtype=torch.int8, device=probs.device)
    kv_indices = torch.empty(probs.shape, dtype=torch.int32, device=probs.device)
    kv_counts = torch.empty((b, h, n_q), dtype=torch.int32, device=probs.device)
    kept_mass = torch.empty((b, h, n_q), dtype=torch.float32, device=probs.device)
    block_k = triton.next_power_of_2(n_k)
    _select_top_blocks_kernel[(b * h * n_q,)](
        probs, mask, kv_indices, kv_counts, kept_mass, n_q, n_k, keep, 0.0 if keep_mass is None else keep_mass,
        MASS_RULE=keep_mass is not None, DIAGONAL=include_diagonal, BLOCK_K=block_k, num_warps=4,
    )
    return mask.view(torch.bool), kv_indices, kv_counts, kept_mass
