"""Block-sparse attention over visual tokens, with always-kept text columns.

`block_sparse_attention` is the entry point every method calls. On CUDA tensors in bf16/fp16 it runs the
Triton kernels (forward + backward through an autograd Function); elsewhere it runs the plain-PyTorch
reference in `naive.py`. `backend="triton"` forces the kernels (on CPU tensors that needs
TRITON_INTERPRET=1, which the tests use), `backend="reference"` forces the reference.
On an H100 (compute capability 9.0) "auto" runs the forward of the calls at 64- and 128-token blocks without an
element mask (text columns and pooled columns are fine) with the Gluon kernel of gluon_hopper.py, laid out like
FlashAttention-3. At 128-token blocks it runs at 0.88-1.03 of cuDNN's dense rate where the Triton kernel runs
at 0.69-0.84; at 64-token blocks, bound by L2 bandwidth, 0.76-0.83 against 0.64-0.77 (BENCHMARKS.md, session
13). Its output and LSE feed the Triton backward. `backend="gluon"` forces it. Where NVIDIA's cuDNN frontend
is installed (`swiftdit[hopper]`), "auto" runs the forward-only calls it can take at 64-token blocks on a
Hopper GPU with its kernel instead, measured faster there than the Triton kernel (cudnn_frontend.py says why
and what it lacks); `backend="cudnn-frontend"` forces it.
"""

from __future__ import annotations

import math

import torch

from ..autograd import needs_autograd
from ..block_index_table import block_mask_to_index_table
from . import cudnn_frontend
from .cudnn_frontend import cudnn_frontend_block_sparse_attention, cudnn_frontend_takes
from .gluon_hopper import gluon_forward_takes
from .naive import (
    block_sparse_attention_reference,
    index_table_to_block_mask,
)
from .pooled import PooledColumns, mean_pool_torch, pooled_columns
from .window import (
    LocalWindowMask,
    classify_blocks,
    window_block_counts,
    window_dense_mask,
)

BACKENDS = ("auto", "triton", "gluon", "reference", "cudnn-frontend")
TRITON_BLOCK_SIZES = (32, 64, 128)
TRITON_MAX_HEAD_DIM = 256
TRITON_DTYPES = (torch.bfloat16, torch.float16)


def check_block_sparse_inputs(q, k, v, kv_indices, kv_counts, block_size, text_k, text_v, text_key_mask, element_mask):
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share one (B, H, N, D) shape; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    b, h, n, d = q.shape
    if not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    n_blocks = math.ceil(n / block_size)
    if kv_indices.dim() != 4 or kv_indices.shape[0] not in (1, b) or kv_indices.shape[1] not in (1, h) \
            or kv_indices.shape[2] != n_blocks:
        raise ValueError(f"kv_indices must be (B|1, H|1, {n_blocks}, maxK) for {n} tokens in blocks of "
                         f"{block_size}; got {tuple(kv_indices.shape)}")
    if kv_indices.dtype not in (torch.int32, torch.int64) or kv_counts.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"kv_indices and kv_counts must be int32 or int64; got {kv_indices.dtype}, {kv_counts.dtype}")
    if kv_counts.shape != kv_indices.shape[:3]:
        raise ValueError(f"kv_counts must have shape {tuple(kv_indices.shape[:3])}, got {tuple(kv_counts.shape)}")
    if (text_k is None) != (text_v is None):
        raise ValueError("text_k and text_v must be given together")
    if text_k is not None and (text_k.dim() != 4 or text_k.shape[:2] != (b, h) or text_k.shape[3] != d
                               or text_v.shape != text_k.shape):
        raise ValueError(f"text_k and text_v must be (B, H, L, D) = ({b}, {h}, L, {d}); got "
                         f"{tuple(text_k.shape)}, {tuple(text_v.shape)}")
    if text_key_mask is not None:
        if text_k is None:
            raise ValueError("text_key_mask needs text_k and text_v")
        if text_key_mask.dtype != torch.bool or text_key_mask.shape != (b, text_k.shape[2]):
            raise ValueError(f"text_key_mask must be bool ({b}, {text_k.shape[2]}); got {text_key_mask.dtype} "
                             f"{tuple(text_key_mask.shape)}")
    if isinstance(element_mask, LocalWindowMask):
        n_blocks = math.ceil(n / block_size)
        if element_mask.num_tokens != n:
            raise ValueError(f"LocalWindowMask has coordinates for {element_mask.num_tokens} tokens, expected {n}")
        full = element_mask.block_full
        if full is not None and (full.dim() != 4 or full.shape[0] not in (1, b) or full.shape[1] not in (1, h)
                                 or full.shape[2:] != (n_blocks, n_blocks)):
            raise ValueError(f"LocalWindowMask.block_full must be (B|1, H|1, {n_blocks}, {n_blocks}); got "
                             f"{tuple(full.shape)}")
    elif element_mask is not None and (element_mask.dtype != torch.bool or element_mask.dim() != 4
                                     or element_mask.shape[0] not in (1, b) or element_mask.shape[1] not in (1, h)
                                     or element_mask.shape[2:] != (n, n)):
        raise ValueError(f"element_mask must be bool (B|1, H|1, {n}, {n}); got {element_mask.dtype} "
                         f"{tuple(element_mask.shape)}")


def uses_triton(q: torch.Tensor, block_size: int, backend: str) -> bool:
    """Whether `backend` resolves to the Triton kernels for these inputs (ValueError if it cannot)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("reference", "cudnn-frontend"):
        return False
    if backend == "gluon":  # the Gluon forward runs beside the Triton kernels, which do everything else
        return True
    supported = block_size in TRITON_BLOCK_SIZES and q.shape[-1] <= TRITON_MAX_HEAD_DIM
    if backend == "auto":
        return q.is_cuda and q.dtype in TRITON_DTYPES and supported
    if not supported:
        raise ValueError(f"backend='triton' needs block_size in {TRITON_BLOCK_SIZES} and head_dim <= "
                         f"{TRITON_MAX_HEAD_DIM}; got block_size={block_size}, head_dim={q.shape[-1]}")
    return True


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_indices: torch.Tensor,
    kv_counts: torch.Tensor,
    block_size: int,
    *,
    text_k: torch.Tensor | None = None,
    text_v: torch.Tensor | None = None,
    text_key_mask: torch.Tensor | None = None,
    element_mask: torch.Tensor | LocalWindowMask | None = None,
    scale: float | None = None,
    backend: str = "auto",
    return_lse: bool = True,
    estimate_dropped: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Block-sparse attention; same arguments and results as `block_sparse_attention_reference`.

    Returns out (B, H, N, D) in q's dtype and lse (B, H, N) float32; rows with no key give zeros and -inf.
    Both outputs are differentiable (q, k, v, text_k, text_v) on either backend. With return_lse=False the
    LSE may be None: the reference then computes the output with PyTorch's fused SDPA and the token mask.
    element_mask is a bool (B|1, H|1, N, N) tensor or a `LocalWindowMask` (coordinates; no (N, N) tensor on the
    Triton path, the reference materialises it).
    estimate_dropped: every query also attends one pooled column per key block its query block drops (the
    block's mean key with a logit bias of log n_j, and its mean value; pooled.py), in the same softmax. The
    LSE then covers the estimate too. Needs a positive scale.
    """
    check_block_sparse_inputs(q, k, v, kv_indices, kv_counts, block_size, text_k, text_v, text_key_mask, element_mask)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if estimate_dropped and not scale > 0:
        raise ValueError(f"estimate_dropped=True needs a positive scale (the pooled columns' bias is log n_j / "
                         f"scale), got scale={scale!r}")
    if backend in ("auto", "cudnn-frontend"):
        takes = cudnn_frontend_takes(q, block_size, has_text=text_k is not None,
                                     has_element_mask=element_mask is not None, estimate_dropped=estimate_dropped,
                                     needs_grad=needs_autograd(q, k, v, text_k, text_v))
        if backend == "cudnn-frontend" and not takes:
            raise ValueError(
                "backend='cudnn-frontend' needs the cuDNN frontend installed (swiftdit[hopper]), a Hopper GPU, "
                "bf16/fp16 q/k/v with head_dim in (64, 96, 128), block_size 64, and no text columns, element mask, "
                "estimate_dropped or gradients")
        if takes:
            return cudnn_frontend_block_sparse_attention(q, k, v, kv_indices, kv_counts, block_size, scale)
    if not uses_triton(q, block_size, backend):
        return block_sparse_attention_reference(
            q, k, v, kv_indices, kv_counts, block_size, text_k=text_k, text_v=text_v,
            text_key_mask=text_key_mask, element_mask=element_mask, scale=scale, return_lse=return_lse,
            estimate_dropped=estimate_dropped,
        )
    from .triton_ops import BlockSparseAttentionFunction

    use_gluon = backend in ("auto", "gluon") and gluon_forward_takes(
        q, k, v, block_size, text_k=text_k, has_element_mask=element_mask is not None)
    if backend == "gluon" and not use_gluon:
        raise ValueError(
            "backend='gluon' needs an H100-class GPU (compute capability 9.0), a Triton with Gluon's Hopper API, "
            "bf16/fp16 q/k/v with head_dim 64 or 128, all contiguous (B, H, N, D) or all (B, N, H, D) views, "
            "16-byte aligned, block_size 64 or 128, and no element mask")
    key_mask = text_key_mask.to(torch.uint8).contiguous() if text_key_mask is not None else None
    return BlockSparseAttentionFunction.apply(
        q, k, v, text_k, text_v, kv_indices, kv_counts, key_mask, element_mask, block_size, scale, estimate_dropped,
        use_gluon,
    )


__all__ = [
    "cudnn_frontend",
    "LocalWindowMask",
    "PooledColumns",
    "mean_pool_torch",
    "pooled_columns",
    "classify_blocks",
    "window_block_counts",
    "window_dense_mask",
    "block_sparse_attention",
    "block_sparse_attention_reference",
    "block_mask_to_index_table",
    "check_block_sparse_inputs",
    "index_table_to_block_mask",
    "uses_triton",
]
