"""Launchers for the Triton block-sparse kernels and the autograd Function around them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from ..block_index_table import block_mask_to_index_table
from .gluon_hopper import launch_forward_hopper
from .naive import index_table_to_block_mask
from .triton_attention import (
    EMASK_DENSE,
    EMASK_NONE,
    EMASK_WINDOW,
    LOG2E,
    block_sparse_dkdv_kernel,
    block_sparse_dq_kernel,
    block_sparse_forward_kernel,
    forward_config,
    forward_config_allowed,
    interpreting,
)
from .pooled import PooledColumns, block_token_counts, mean_pool_blocks, pooled_columns
from .window import LocalWindowMask


@dataclass
class TextKeys:
    """Always-attended text keys/values (B, H, L, D) and an optional (B, L) uint8 padding mask (0 = pad)."""

    k: torch.Tensor
    v: torch.Tensor
    key_mask: torch.Tensor | None


@dataclass
class ElementMask:
    """Element mask (B|1, H|1, N, N) as uint8 plus per-block 'fully kept' flags (B|1, H|1, nQ, nK)."""

    mask: torch.Tensor
    block_full: torch.Tensor

    @classmethod
    def from_bool(cls, mask: torch.Tensor, block_size: int) -> ElementMask:
        n = mask.shape[-1]
        n_blocks = triton.cdiv(n, block_size)
        pad = n_blocks * block_size - n
        # Padding counts as kept: positions past the sequence end are masked by the kernel anyway.
        padded = torch.nn.functional.pad(mask.to(torch.uint8), (0, pad, 0, pad), value=1)
        blocks = padded.view(*mask.shape[:-2], n_blocks, block_size, n_blocks, block_size)
        block_full = blocks.amin(dim=(-3, -1)).contiguous()
        return cls(mask.to(torch.uint8).contiguous(), block_full)


def _element_mask_args(element_mask: ElementMask | LocalWindowMask | None, placeholder: torch.Tensor,
                       block_size: int):
    """Kernel arguments of an element mask: (mask, block_full, coords, win_r2, win_t, EMASK_KIND kind)."""
    if element_mask is None:
        em = placeholder.new_empty((1, 1, 1, 1))
        return em, em, em, 0, 0, EMASK_NONE
    if isinstance(element_mask, LocalWindowMask):
        window = element_mask.with_block_full(block_size)
        em = placeholder.new_empty((1, 1, 1, 1))
        device = placeholder.device
        return (em, window.block_full.to(device, torch.uint8).contiguous(), window.coords.to(device).contiguous(),
                window.radius ** 2, window.temporal_radius, EMASK_WINDOW)
    return element_mask.mask, element_mask.block_full, placeholder, 0, 0, EMASK_DENSE


@dataclass
class KernelPooledColumns:
    """Pooled columns as the kernels read them: block-mean keys/values (B, H, nK, D) in q's dtype, the logit
    bias log n_j / scale (nK,) float32 (raw score units, after the sign of the scale was folded into q), and
    the (B|1, H|1, nQ, nK) uint8 'dropped' flags."""

    k: torch.Tensor
    v: torch.Tensor
    bias: torch.Tensor
    dropped: torch.Tensor

    @classmethod
    def from_columns(cls, pooled: PooledColumns, dtype: torch.dtype, scale: float) -> KernelPooledColumns:
        """`scale` is the softmax scale the kernel multiplies raw scores by (non-zero)."""
        return cls(pooled.k.to(dtype).contiguous(), pooled.v.to(dtype).contiguous(),
                   (pooled.log_weight / scale).float().contiguous(), pooled.dropped.to(torch.uint8).contiguous())


def _pooled_args(pooled: KernelPooledColumns | None, placeholder: torch.Tensor) -> tuple:
    """Kernel arguments of the pooled columns: (PoolK, PoolV, PoolBias, Dropped), their nine strides, nK."""
    if pooled is None:
        empty = placeholder.new_empty((1, 1, 1, 1))
        return (empty, empty, placeholder, empty), (0,) * 9, 0
    return ((pooled.k, pooled.v, pooled.bias, pooled.dropped),
            (*_bhn_strides(pooled.k), *_bhn_strides(pooled.v), *_broadcast_strides(pooled.dropped, 3)),
            pooled.k.shape[2])


def _bhn_strides(x: torch.Tensor) -> tuple[int, int, int]:
    """(batch, head, token) strides of a (B, H, N, D) tensor whose last dim is contiguous."""
    return x.stride(0), x.stride(1), x.stride(2)


def _broadcast_strides(x: torch.Tensor, dims: int) -> tuple[int, ...]:
    """Strides of the first `dims` dims, 0 where the dim has size 1 so that it broadcasts in the kernel."""
    return tuple(x.stride(i) if x.shape[i] > 1 else 0 for i in range(dims))


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _head_block(head_dim: int) -> int:
    # tl.dot needs every dim >= 16; smaller or odd head dims are padded with masked lanes.
    return max(16, triton.next_power_of_2(head_dim))


def tma_layout_ok(*tensors: torch.Tensor) -> bool:
    """Whether (B, H, N, D) tensors can be read through TMA descriptors: power-of-two head dim of at least
    16 bytes that needs no padding (D == BLOCK_D), last dim contiguous, base and every stride that is used
    16-byte aligned. Says nothing about the device."""
    for x in tensors:
        size = x.element_size()
        d = x.shape[-1]
        if x.stride(-1) != 1 or d != _head_block(d) or d * size < 16 or x.data_ptr() % 16:
            return False
        if any(x.shape[i] > 1 and (x.stride(i) * size) % 16 for i in range(3)):
            return False
    return True


def _device_has_tma(x: torch.Tensor) -> bool:
    return x.is_cuda and not interpreting() and torch.cuda.get_device_capability(x.device)[0] >= 9


_ALLOCATOR_SET = False


def _ensure_tma_allocator() -> None:
    """Device-side tensor descriptors live in a global scratch buffer that Triton asks the allocator for at
    launch; this one takes it from PyTorch's caching allocator (stream-ordered, CUDA-graph safe)."""
    global _ALLOCATOR_SET
    if not _ALLOCATOR_SET:
        def alloc(size: int, alignment: int, stream):
            return torch.empty(size, dtype=torch.int8, device="cuda")

        triton.set_allocator(alloc)
        _ALLOCATOR_SET = True


def launch_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_counts: torch.Tensor,
    block_size: int,
    scale: float,
    text: TextKeys | None,
    element_mask: ElementMask | LocalWindowMask | None,
    config: dict | None = None,
    pooled: KernelPooledColumns | None = None,
    use_gluon: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns out (B, H, N, D) in q's dtype and lse (B, H, N) float32.

    `config` (keys SUB, num_warps, num_stages and optionally USE_TMA, WARP_SPEC) bypasses the autotuner and
    runs that one variant (benchmarks/bench_kernel_variants.py sweeps them); ValueError if it cannot run on
    these inputs. Without it the autotuner picks among the candidates `triton_attention` lists. `pooled`: the
    pooled columns of the dropped blocks (pooled.py) in the kernels' form, attended after the kept blocks and
    the text (its bias assumes `scale` > 0, which `block_sparse_attention` checks). `use_gluon`: run the Hopper
    kernel of gluon_hopper.py instead (the caller has checked `gluon_forward_takes`)."""
    b, h, n, d = q.shape
    q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    # The kernel takes the row max on unscaled scores, which needs a positive scale: fold a sign into q.
    if scale < 0:
        q, scale = -q, -scale
    elif scale == 0:
        q, scale = torch.zeros_like(q), 1.0
    kv_indices = kv_indices.to(torch.int32).contiguous()
    kv_counts = kv_counts.to(torch.int32).contiguous()
    n_blocks = triton.cdiv(n, block_size)
    out = output_like(q)
    lse = torch.empty((b, h, n), dtype=torch.float32, device=q.device)
    if use_gluon:
        launch_forward_hopper(q, k, v, out, lse, kv_indices, kv_counts, block_size, scale,
                              *((text.k, text.v, text.key_mask) if text is not None else (None, None, None)),
                              pooled=pooled)
        return out, lse
    placeholder = lse  # any tensor: pointers of disabled branches are never dereferenced
    pool_tensors, pool_strides, num_kv_blocks = _pooled_args(pooled, placeholder)
    text_k = _last_dim_contiguous(text.k) if text is not None else placeholder.new_empty((1, 1, 1, 1))
    text_v = _last_dim_contiguous(text.v) if text is not None else text_k
    text_mask = text.key_mask if text is not None and text.key_mask is not None else placeholder
    em, full, coords, win_r2, win_t, emask_kind = _element_mask_args(element_mask, placeholder, block_size)
    grid = (n_blocks, b * h)
    block_d = _head_block(d)
    tma_ok = tma_layout_ok(k, v) and (_device_has_tma(q) or (interpreting() and config is not None))
    kernel = block_sparse_forward_kernel
    options = {}
    if config is not None:
        chosen = forward_config(**config)
        why_not = forward_config_allowed(chosen, block_size, block_d, tma_ok, has_emask=emask_kind == EMASK_DENSE)
        if why_not is not None:
            raise ValueError(f"forward config {config} cannot run here: {why_not}")
        kernel = block_sparse_forward_kernel.fn  # the jitted kernel under the autotuner
        options = dict(chosen.kwargs, num_warps=chosen.num_warps, num_stages=chosen.num_stages)
    if tma_ok and not interpreting():
        _ensure_tma_allocator()
    kernel[grid](
        q, k, v, out, lse, kv_indices, kv_counts,
        text_k, text_v, text_mask, em, full, coords, *pool_tensors,
        *_bhn_strides(q), *_bhn_strides(k), *_bhn_strides(v), *_bhn_strides(out),
        *_broadcast_strides(kv_indices, 3), *_broadcast_strides(kv_counts, 2),
        *_bhn_strides(text_k), *_bhn_strides(text_v), text_mask.stride(0) if text_mask.dim() == 2 else 0,
        *_broadcast_strides(em, 3), *_broadcast_strides(full, 3), *pool_strides,
        h, n, text.k.shape[2] if text is not None else 0, num_kv_blocks, scale * LOG2E, win_r2, win_t,
        BLOCK=block_size, HEAD_DIM=d, BLOCK_D=block_d, EVEN_N=n % block_size == 0,
        HAS_TEXT=text is not None, HAS_TEXT_MASK=text is not None and text.key_mask is not None,
        EMASK_KIND=emask_kind, TMA_OK=tma_ok, HAS_POOLED=pooled is not None, **options,
    )
    return out, lse


def output_like(q: torch.Tensor) -> torch.Tensor:
    """An empty (B, H, N, D) output laid out like q: a (B, N, H, D) tensor seen as (B, H, N, D) when q is one
    (diffusers' processors hand the backend such views and flatten the heads of the result, which is then
    free), contiguous (B, H, N, D) otherwise."""
    b, h, n, d = q.shape
    if h > 1 and n > 1 and q.stride(3) == 1 and q.stride(1) == d and q.stride(2) == h * d:
        return torch.empty((b, n, h, d), dtype=q.dtype, device=q.device).transpose(1, 2)
    return torch.empty((b, h, n, d), dtype=q.dtype, device=q.device)


def transpose_index_table(kv_indices: torch.Tensor, kv_counts: torch.Tensor, num_blocks: int):
    """Query blocks per key block, as the dK/dV pass walks them (same format, on the device, no sync)."""
    block_mask = index_table_to_block_mask(kv_indices, kv_counts, num_blocks)
    return block_mask_to_index_table(block_mask.transpose(-1, -2))


def launch_backward(
    q, k, v, out, lse, grad_out, grad_lse,
    kv_indices, kv_counts, block_size: int, scale: float,
    text: TextKeys | None, element_mask: ElementMask | LocalWindowMask | None,
    pooled: KernelPooledColumns | None = None,
):
    """Returns dq, dk, dv, d_text_k, d_text_v, d_pooled_k, d_pooled_v (the text gradients are None without
    text, the pooled ones (B, H, nK, D) float32 without pooled columns)."""
    b, h, n, d = q.shape
    q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
    grad_out = grad_out.contiguous()
    kv_indices = kv_indices.to(torch.int32).contiguous()
    kv_counts = kv_counts.to(torch.int32).contiguous()
    n_blocks = triton.cdiv(n, block_size)
    # delta_i = sum_d dO * O; a gradient on the LSE enters the score gradient as +p * dLSE.
    delta = (grad_out.float() * out.float()).sum(-1)
    if grad_lse is not None:
        delta = delta - torch.where(torch.isfinite(lse), grad_lse, torch.zeros_like(grad_lse))
    delta = delta.contiguous()
    dq = torch.empty((b, h, n, d), dtype=q.dtype, device=q.device)
    dk = torch.empty((b, h, n, d), dtype=k.dtype, device=q.device)
    dv = torch.empty((b, h, n, d), dtype=v.dtype, device=q.device)
    placeholder = lse
    text_k = _last_dim_contiguous(text.k) if text is not None else placeholder.new_empty((1, 1, 1, 1))
    text_v = _last_dim_contiguous(text.v) if text is not None else text_k
    text_mask = text.key_mask if text is not None and text.key_mask is not None else placeholder
    text_len = text.k.shape[2] if text is not None else 0
    em, full, coords, win_r2, win_t, emask_kind = _element_mask_args(element_mask, placeholder, block_size)
    common = {"BLOCK": block_size, "HEAD_DIM": d, "BLOCK_D": _head_block(d), "EMASK_KIND": emask_kind}
    pool_tensors, pool_strides, num_kv_blocks = _pooled_args(pooled, placeholder)

    block_sparse_dq_kernel[(n_blocks, b * h)](
        q, k, v, grad_out, lse, delta, dq, kv_indices, kv_counts,
        text_k, text_v, text_mask, em, full, coords, *pool_tensors,
        *_bhn_strides(q), *_bhn_strides(k), *_bhn_strides(v),
        *_broadcast_strides(kv_indices, 3), *_broadcast_strides(kv_counts, 2),
        *_bhn_strides(text_k), *_bhn_strides(text_v), text_mask.stride(0) if text_mask.dim() == 2 else 0,
        *_broadcast_strides(em, 3), *_broadcast_strides(full, 3), *pool_strides,
        h, n, text_len, num_kv_blocks, scale * LOG2E, scale, win_r2, win_t,
        EVEN_N=n % block_size == 0, HAS_TEXT=text is not None,
        HAS_TEXT_MASK=text is not None and text.key_mask is not None, HAS_POOLED=pooled is not None, **common,
    )

    # The dK/dV kernel's (PoolBias, Dropped) pointers and Dropped's three strides, for its non-pooled launches.
    unused_pool_args, unused_pool_strides = (placeholder, placeholder.new_empty((1, 1, 1, 1))), (0, 0, 0)
    q_indices, q_counts = transpose_index_table(kv_indices, kv_counts, n_blocks)
    block_sparse_dkdv_kernel[(n_blocks, b * h)](
        q, k, v, grad_out, lse, delta, dk, dv, q_indices, q_counts, placeholder, em, full, coords, *unused_pool_args,
        *_bhn_strides(q), *_bhn_strides(k), *_bhn_strides(v),
        *_broadcast_strides(q_indices, 3), *_broadcast_strides(q_counts, 3), 0,
        *_broadcast_strides(em, 3), *_broadcast_strides(full, 3), *unused_pool_strides,
        h, n, n, scale * LOG2E, scale, win_r2, win_t, HAS_KEY_MASK=False, POOLED=False, **common,
    )

    # Text keys and pooled columns are attended by every query block: a one-row table with zero strides.
    all_q_blocks = torch.arange(n_blocks, dtype=torch.int32, device=q.device)
    all_count = torch.full((1,), n_blocks, dtype=torch.int32, device=q.device)
    extra_columns = {"BLOCK": block_size, "HEAD_DIM": d, "BLOCK_D": _head_block(d), "EMASK_KIND": EMASK_NONE}
    d_text_k = d_text_v = None
    if text is not None:
        d_text_k = torch.empty((b, h, text_len, d), dtype=text.k.dtype, device=q.device)
        d_text_v = torch.empty((b, h, text_len, d), dtype=text.v.dtype, device=q.device)
        block_sparse_dkdv_kernel[(triton.cdiv(text_len, block_size), b * h)](
            q, text_k, text_v, grad_out, lse, delta, d_text_k, d_text_v, all_q_blocks, all_count, text_mask,
            em, full, coords, *unused_pool_args,
            *_bhn_strides(q), *_bhn_strides(text_k), *_bhn_strides(text_v),
            0, 0, 0, 0, 0, 0, text_mask.stride(0) if text_mask.dim() == 2 else 0,
            0, 0, 0, 0, 0, 0, *unused_pool_strides,
            h, n, text_len, scale * LOG2E, scale, 0, 0,
            HAS_KEY_MASK=text.key_mask is not None, POOLED=False, **extra_columns,
        )
    d_pooled_k = d_pooled_v = None
    if pooled is not None:
        d_pooled_k = torch.empty((b, h, num_kv_blocks, d), dtype=torch.float32, device=q.device)
        d_pooled_v = torch.empty_like(d_pooled_k)
        block_sparse_dkdv_kernel[(triton.cdiv(num_kv_blocks, block_size), b * h)](
            q, pooled.k, pooled.v, grad_out, lse, delta, d_pooled_k, d_pooled_v, all_q_blocks,
            all_count, placeholder, em, full, coords, pooled.bias, pooled.dropped,
            *_bhn_strides(q), *_bhn_strides(pooled.k), *_bhn_strides(pooled.v),
            0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, *_broadcast_strides(pooled.dropped, 3),
            h, n, num_kv_blocks, scale * LOG2E, scale, 0, 0,
            HAS_KEY_MASK=False, POOLED=True, **extra_columns,
        )
    return dq, dk, dv, d_text_k, d_text_v, d_pooled_k, d_pooled_v


def spread_block_gradient(d_means: torch.Tensor, block_size: int, num_tokens: int) -> torch.Tensor:
    """(B, H, nK, D) gradient on block means -> (B, H, N, D) gradient on the tokens (each gets d_mean / n_j)."""
    per_token = d_means / block_token_counts(num_tokens, block_size, d_means.device)[:, None]
    return per_token.repeat_interleave(block_size, dim=2)[:, :, :num_tokens]


class BlockSparseAttentionFunction(torch.autograd.Function):
    """out, lse = block-sparse attention; differentiable in q, k, v, text_k, text_v (and through the LSE)."""

    @staticmethod
    def forward(ctx, q, k, v, text_k, text_v, kv_indices, kv_counts, text_key_mask, element_mask, block_size, scale,
                estimate_dropped=False, use_gluon=False):
        text = TextKeys(text_k, text_v, text_key_mask) if text_k is not None else None
        if isinstance(element_mask, LocalWindowMask):
            emask = element_mask.with_block_full(block_size)
        else:
            emask = ElementMask.from_bool(element_mask, block_size) if element_mask is not None else None
        pooled = None
        if estimate_dropped:
            kept = index_table_to_block_mask(kv_indices, kv_counts, triton.cdiv(q.shape[2], block_size))
            columns = pooled_columns(k, v, kept, block_size, pool=mean_pool_blocks)
            pooled = KernelPooledColumns.from_columns(columns, q.dtype, scale)  # shared with the backward
        out, lse = launch_forward(q, k, v, kv_indices, kv_counts, block_size, scale, text, emask, pooled=pooled,
                                  use_gluon=use_gluon)
        ctx.save_for_backward(q, k, v, text_k, text_v, kv_indices, kv_counts, text_key_mask, out, lse)
        ctx.element_mask, ctx.pooled = emask, pooled
        ctx.block_size, ctx.scale = block_size, scale
        return out, lse

    @staticmethod
    def backward(ctx, grad_out, grad_lse):
        q, k, v, text_k, text_v, kv_indices, kv_counts, text_key_mask, out, lse = ctx.saved_tensors
        text = TextKeys(text_k, text_v, text_key_mask) if text_k is not None else None
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        dq, dk, dv, d_text_k, d_text_v, d_pooled_k, d_pooled_v = launch_backward(
            q, k, v, out, lse, grad_out, grad_lse, kv_indices, kv_counts, ctx.block_size, ctx.scale,
            text, ctx.element_mask, ctx.pooled,
        )
        if ctx.pooled is not None:
            # A block mean's gradient reaches each of its n_j tokens divided by n_j.
            dk = (dk.float() + spread_block_gradient(d_pooled_k, ctx.block_size, q.shape[2])).to(dk.dtype)
            dv = (dv.float() + spread_block_gradient(d_pooled_v, ctx.block_size, q.shape[2])).to(dv.dtype)
        return dq, dk, dv, d_text_k, d_text_v, None, None, None, None, None, None, None, None
