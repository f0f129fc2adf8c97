"""Block-sparse attention forward for Hopper in Gluon (Triton's explicit-layout dialect), laid out like
FlashAttention-3: a producer warp and two consumer warpgroups that take turns on the tensor cores.

Why a second forward: the Triton kernel (triton_attention.py) reaches 0.72-0.85 of cuDNN's dense rate. Its
`tl.dot` compiles to async wgmma, but Triton waits on every Q K^T at once and runs both warpgroups in the same
phase, so the tensor cores idle while the softmax runs (BENCHMARKS.md, session 11). Gluon exposes warp
specialization, the async wgmma and its waits, and mbarriers, so this kernel has
- a producer warp that loads Q once and every kept key block's K and V through TMA into a ring of STAGES
  shared-memory stages (device-side descriptors: any (B, N, H, D) or (B, H, N, D) layout with a unit last
  stride), reusing a stage once both consumers release it;
- two consumer warpgroups, 64 query rows each. Per key tile j, in its turn, a consumer issues S_j = Q K_j^T and
  O += P_{j-1} V_{j-1} and hands the turn over; it then waits for S_j alone and runs the softmax while the
  tensor cores work on its P V and on the other warpgroup's products (FA3's ping-pong and intra-warpgroup
  overlap).

Scope ("auto" takes it where `gluon_forward_takes` says so): visual keys only (no text columns, element mask
or pooled columns), 128-token blocks, head_dim 64 or 128, bf16/fp16, compute capability 9.0, TMA-compatible
strides, and a Triton with Gluon's Hopper API (3.6 was measured). Every other call stays on the Triton kernel,
which also runs the backward from this kernel's output and LSE. Same conventions as the Triton forward:
scores in log2 units, natural-log LSE, empty rows give zeros and -inf.
"""

from __future__ import annotations

import functools

import torch
import triton

from .triton_attention import LOG2E, interpreting

GLUON_BLOCK = 128
GLUON_HEAD_DIMS = (64, 128)
GLUON_DTYPES = (torch.bfloat16, torch.float16)
GLUON_STAGES = 3  # Q (32 KB) + 3 x (K + V) tiles (64 KB each at head_dim 128) = 224 KB of the 227 KB


@functools.lru_cache(maxsize=1)
def load_kernel():
    """The kernel module, or None where this Triton has no Gluon Hopper API (the Triton kernel then serves)."""
    try:
        from . import gluon_hopper_kernel
    except ImportError:
        return None
    return gluon_hopper_kernel


def gluon_forward_takes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, *, has_text: bool,
                        has_element_mask: bool, estimate_dropped: bool) -> bool:
    """Whether this kernel can run the forward of these inputs (see the module docstring for the scope)."""
    if has_text or has_element_mask or estimate_dropped or interpreting():
        return False
    if not (q.is_cuda and block_size == GLUON_BLOCK and q.shape[-1] in GLUON_HEAD_DIMS and q.dtype in GLUON_DTYPES
            and k.dtype == q.dtype and v.dtype == q.dtype):
        return False
    if torch.cuda.get_device_capability(q.device) != (9, 0) or load_kernel() is None:
        return False
    from .triton_ops import tma_layout_ok

    return tma_layout_ok(q, k, v)


def launch_forward_hopper(q, k, v, out, lse, kv_indices, kv_counts, scale: float) -> None:
    """q, k, v (B, H, N, D) that `gluon_forward_takes`; out (B, H, N, D) of q's dtype, any strides with a unit last
    one; lse (B, H, N) contiguous float32; kv_indices / kv_counts int32 (B|1, H|1, nQ, ...) / (B|1, H|1, nQ);
    scale > 0. Device-side TMA descriptors need Triton's allocator set (triton_ops does it)."""
    kernel = load_kernel()
    gl = kernel.gl
    b, h, n, d = q.shape
    gl_dtype = gl.bfloat16 if q.dtype == torch.bfloat16 else gl.float16
    kv_layout = gl.NVMMASharedLayout.get_default_for([GLUON_BLOCK, d], gl_dtype)
    q_layout = gl.NVMMASharedLayout.get_default_for([GLUON_BLOCK // 2, d], gl_dtype)

    def strides(x, dims):  # 0 where a dim has size 1, so that it broadcasts
        return [x.stride(i) if x.shape[i] > 1 else 0 for i in range(dims)]

    kernel.block_sparse_forward_hopper_kernel[(triton.cdiv(n, GLUON_BLOCK), b * h)](
        q, k, v, out, lse, kv_indices, kv_counts,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1),
        v.stride(2), out.stride(0), out.stride(1), out.stride(2), *strides(kv_indices, 3), *strides(kv_counts, 2),
        h, n, scale * LOG2E,
        BLOCK=GLUON_BLOCK, HEAD_DIM=d, STAGES=GLUON_STAGES, EVEN_N=n % GLUON_BLOCK == 0, KV_LAYOUT=kv_layout,
        Q_LAYOUT=q_layout, num_warps=4, maxnreg=168,
    )


def compile_check(head_dim: int, even_n: bool) -> dict:
    """Compile the kernel for compute capability 9.0 with the installed Triton, no GPU needed (not under
    TRITON_INTERPRET=1): its wgmma count, whether the partitions got register budgets (setmaxnreg) and its
    shared memory in bytes. The CPU tests run it in a subprocess."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    kernel = load_kernel()
    if kernel is None:
        raise RuntimeError("this Triton has no Gluon Hopper API")
    gl = kernel.gl
    fn = kernel.block_sparse_forward_hopper_kernel
    constants = dict(BLOCK=GLUON_BLOCK, HEAD_DIM=head_dim, STAGES=GLUON_STAGES, EVEN_N=even_n, num_warps=4,
                     KV_LAYOUT=gl.NVMMASharedLayout.get_default_for([GLUON_BLOCK, head_dim], gl.bfloat16),
                     Q_LAYOUT=gl.NVMMASharedLayout.get_default_for([GLUON_BLOCK // 2, head_dim], gl.bfloat16))
    pointers = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "Out": "*bf16", "Lse": "*fp32", "KvIdx": "*i32",
                "KvCnt": "*i32"}
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constants:
            signature[name] = "constexpr"
        else:
            signature[name] = pointers.get(name, "fp32" if name == "qk_scale_log2" else "i32")
        if name in pointers or name.startswith(("s_q", "s_k", "s_v")):
            attrs[(i,)] = [["tt.divisibility", 16]]  # what the launcher's aligned tensors give
    target = GPUTarget("cuda", 90, 32)
    options = triton.compiler.make_backend(target).parse_options({"num_warps": 4, "maxnreg": 168})
    compiled = triton.compile(GluonASTSource(fn=fn, signature=signature, constexprs=constants, attrs=attrs),
                              target=target, options=options.__dict__)
    ptx = compiled.asm["ptx"]
    return {"wgmma": ptx.count("wgmma.mma_async"), "setmaxnreg": "setmaxnreg" in ptx,
            "shared_bytes": compiled.metadata.shared}
