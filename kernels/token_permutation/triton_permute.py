"""Triton row gather: each program copies ROWS whole token rows (all heads of a token when the tensor is a
(B, N, H, D) buffer viewed as (B, H, N, D), as attention processors hand it over; one head's D values of a
token otherwise). PyTorch's advanced indexing computes an offset per element and ran at about 80 GB/s on
the H100 for Wan 720p q/k/v (0.57 ms per tensor); whole-row copies are bandwidth-bound.

The gather can also scale each (token, head) row and add a tensor in the same pass (Re-ttention's
r_i O_sparse + delta as the output goes back to raster order), where PyTorch took five float32 passes."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _gather_rows_kernel(X, Out, Index, Scale, Addend, s_xg, s_xn, s_og, s_on, s_sg, s_sn, s_sh, s_ag, s_an,
                        num_rows, row_len, head_dim,
                        ROWS: tl.constexpr, COLS: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_ADDEND: tl.constexpr):
    group = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    rows_ok = rows < num_rows
    source = tl.load(Index + rows, mask=rows_ok, other=0).to(tl.int64)
    rows = rows.to(tl.int64)
    for start in range(0, row_len, COLS):
        cols = start + tl.arange(0, COLS)
        ok = rows_ok[:, None] & (cols < row_len)[None, :]
        values = tl.load(X + group * s_xg + source[:, None] * s_xn + cols[None, :], mask=ok)
        if HAS_SCALE or HAS_ADDEND:
            result = values.to(tl.float32)
            if HAS_SCALE:  # one scale per (token, head): the head of column c is c // head_dim
                heads = cols // head_dim
                result *= tl.load(Scale + group * s_sg + rows[:, None] * s_sn + heads[None, :] * s_sh, mask=ok)
            if HAS_ADDEND:
                result += tl.load(Addend + group * s_ag + rows[:, None] * s_an + cols[None, :], mask=ok).to(tl.float32)
            values = result.to(Out.dtype.element_ty)
        tl.store(Out + group * s_og + rows[:, None] * s_on + cols[None, :], values, mask=ok)


def token_rows(x: torch.Tensor) -> tuple[torch.Tensor, bool] | None:
    """A (groups, N, row) view of a (B, H, N, D) tensor whose token rows are contiguous runs, and whether the
    heads are inside the row ((B, N, H, D) storage); None when neither layout holds (the caller copies).
    Groups and tokens may be further apart than dense storage puts them (a slice of a longer sequence)."""
    b, h, n, d = x.shape
    if x.stride(3) == 1 and x.stride(1) == d and x.stride(2) == h * d:
        return x.transpose(1, 2).reshape(b, n, h * d), True
    if x.stride(3) == 1 and x.stride(2) == d and x.stride(0) == h * x.stride(1):
        return x.reshape(b * h, n, d), False
    return None


def rows_in_layout(x: torch.Tensor, heads_in_row: bool) -> torch.Tensor:
    """The (groups, N, row) view of a (B, H, N, D) tensor in the given layout, copying x into it if needed."""
    rows = token_rows(x)
    if rows is None or rows[1] != heads_in_row:
        x = x.transpose(1, 2).contiguous().transpose(1, 2) if heads_in_row else x.contiguous()
        rows = token_rows(x)
    return rows[0]


def permute_tokens_triton(x: torch.Tensor, order: torch.Tensor, row_scale: torch.Tensor | None = None,
                          addend: torch.Tensor | None = None) -> torch.Tensor:
    """x[:, :, order] for a (B, H, N, D) tensor, in x's memory layout (a (B, N, H, D)-backed view stays one);
    with row_scale (B, H, N) and/or addend (B, H, N, D): row_scale * x[:, :, order] + addend, in float32,
    rounded once to x's dtype. Not differentiable (`permute_tokens` routes gradients)."""
    rows = token_rows(x)
    if rows is None:
        x = x.contiguous()
        rows = token_rows(x)
    source, heads_in_row = rows
    out = torch.empty_like(source)
    groups, n, row_len = source.shape
    b, h, _, d = x.shape
    # The scale's strides over (group, token, head within the row): all heads of a token share a row in the
    # (B, N, H, D) layout; in the contiguous one a group is one (batch, head).
    if row_scale is None:
        scale, scale_strides = source, (0, 0, 0)
    elif heads_in_row:
        scale = row_scale.float()
        scale_strides = (scale.stride(0), scale.stride(2), scale.stride(1))
    else:
        scale = row_scale.float().reshape(b * h, n)
        scale_strides = (scale.stride(0), scale.stride(1), 0)
    extra = source if addend is None else rows_in_layout(addend, heads_in_row)
    cols = min(1024, triton.next_power_of_2(row_len))
    block_rows = max(1, 4096 // cols)  # about 4K elements per program, whatever the row length
    grid = (triton.cdiv(n, block_rows), groups)
    _gather_rows_kernel[grid](source, out, order if order.is_contiguous() else order.contiguous(), scale, extra,
                              source.stride(0), source.stride(1), out.stride(0), out.stride(1), *scale_strides,
                              extra.stride(0), extra.stride(1), n, row_len, d, ROWS=block_rows, COLS=cols,
                              HAS_SCALE=row_scale is not None, HAS_ADDEND=addend is not None)
    if heads_in_row:
        return out.view(b, n, h, d).transpose(1, 2)
    return out.view(b, h, n, d)
