"""Merging the pieces of split work items of the Gluon forward, in Triton, beside its plain-PyTorch reference.

The Gluon forward (gluon_hopper.py) runs a persistent grid, one program per SM. When the work items do not fill
the last wave (Wan 480p at 128-token blocks: 3,072 items on 132 SMs, a last wave of 36), most programs would idle
through it. The forward instead cuts each of those items into `split` pieces of its key tiles
(`gluon_hopper.plan_units`), so that the last wave spreads over all programs. Each piece leaves its own
normalised output and LSE in float32, and this kernel merges them into the item's rows of out and lse
(at 128-token blocks; gluon_hopper.launch_forward_hopper says why not at 64):

    lse = logsumexp_i lse_i,   out = sum_i exp(lse_i - lse) * out_i

Rows whose pieces are all empty (-inf) stay zeros and -inf, as the forward leaves an empty row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def merge_pieces_reference(part_out: torch.Tensor, part_lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """part_out (items, split, rows, D) and part_lse (items, split, rows), float32 -> out (items, rows, D) and
    lse (items, rows)."""
    lse = torch.logsumexp(part_lse, dim=1)
    finite = torch.isfinite(lse)
    weights = torch.exp(part_lse - torch.where(finite, lse, 0.0)[:, None])  # exp(-inf) = 0 for empty pieces
    return (weights[..., None] * part_out).sum(1), lse


@triton.jit
def merge_pieces_kernel(PartOut, PartLse, Out, Lse, whole_items, split, num_q_blocks, num_heads, seq_len,
                        s_ob, s_oh, s_on, BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """One program per split item (whole_items + program id, numbered as the forward numbers its items)."""
    t = tl.program_id(0)
    item = whole_items + t
    bh = item // num_q_blocks
    q_block = item % num_q_blocks
    b = bh // num_heads
    h = bh % num_heads
    rows = tl.arange(0, BLOCK)
    dims = tl.arange(0, HEAD_DIM)
    first = t * split
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    for i in range(split):
        m = tl.maximum(m, tl.load(PartLse + (first + i) * BLOCK + rows))
    m_use = tl.where(m == float("-inf"), 0.0, m)
    acc = tl.zeros([BLOCK, HEAD_DIM], tl.float32)
    total = tl.zeros([BLOCK], tl.float32)
    for i in range(split):
        weight = tl.exp(tl.load(PartLse + (first + i) * BLOCK + rows) - m_use)
        piece = tl.load(PartOut + (first + i).to(tl.int64) * BLOCK * HEAD_DIM + rows[:, None] * HEAD_DIM
                        + dims[None, :])
        acc += weight[:, None] * piece
        total += weight
    empty = total == 0.0
    out = acc * (1.0 / tl.where(empty, 1.0, total))[:, None]
    lse = tl.where(empty, float("-inf"), m_use + tl.log(tl.where(empty, 1.0, total)))
    token = q_block * BLOCK + rows
    o_ptrs = Out + b.to(tl.int64) * s_ob + h.to(tl.int64) * s_oh + token[:, None].to(tl.int64) * s_on + dims[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=token[:, None] < seq_len)
    tl.store(Lse + bh.to(tl.int64) * seq_len + token, lse, mask=token < seq_len)


def merge_pieces(part_out: torch.Tensor, part_lse: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                 whole_items: int, split: int, block_size: int) -> None:
    """Writes the merged pieces into out (B, H, N, D), any strides with a unit last one, and lse (B, H, N)
    contiguous float32. part_out (items * split, block_size, D) and part_lse (items * split, block_size),
    float32, piece i of split item t at t * split + i; split item t is work item whole_items + t, numbered
    (batch * head, query block) with query blocks fastest."""
    b, h, n, d = out.shape
    items = part_lse.shape[0] // split
    merge_pieces_kernel[(items,)](part_out, part_lse, out, lse, whole_items, split, triton.cdiv(n, block_size), h, n,
                                 out.stride(0), out.stride(1), out.stride(2), BLOCK=block_size, HEAD_DIM=d,
                                 num_warps=8)
