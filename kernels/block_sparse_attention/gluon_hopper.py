"""Block-sparse attention forward for Hopper in Gluon (Triton's explicit-layout dialect), laid out like
FlashAttention-3: producer warps and two consumer warpgroups.

Why a second forward: the Triton kernel (triton_attention.py) reaches 0.68-0.86 of cuDNN's dense rate. Its
`tl.dot` compiles to async wgmma, but Triton waits on every Q K^T at once and runs both warpgroups in the same
phase, so the tensor cores idle while the softmax runs (BENCHMARKS.md, session 11). Gluon exposes warp
specialization, the async wgmma and its waits, and mbarriers, so this kernel has
- a persistent grid, one program per SM, over the (batch * head, query block) work items. A program takes its
  first item by its id and claims each next one from a global counter when it has issued the loads of the one
  before, so programs whose items run short take more of them. With a fixed stride of items per program, rows
  of different lengths (as the planners' mass rules give) left SMs idle: 1.25-1.5x slower at Wan 480p
  (BENCHMARKS.md, session 13);
- two consumer warpgroups of 64 query rows each, so a program works on 128 query rows at once;
- 128-token blocks: one lane of work items per program. Its producer warp loads each item's Q and every kept key
  block's K and V through TMA into a ring of STAGES shared-memory stages, reusing a stage once both consumers
  release it. The two consumers share each query block: per key tile j, in its turn, a consumer issues
  S_j = Q K_j^T and O += P_{j-1} V_{j-1} and hands the turn over; it then waits for S_j alone and runs the
  softmax while the tensor cores work on its P V and on the other warpgroup's products (FA3's ping-pong and
  intra-warpgroup overlap);
- 64-token blocks: two lanes of work items per program, each with its own producer warp, ring and consumer,
  since neighbouring query blocks have key lists of their own. Each consumer overlaps its softmax with its own
  P V and with the other lane's products. Here every 64 query rows read their own 64-token K and V tiles, twice
  the L2 traffic per product of the 128-token case, and Nsight Compute puts the kernel at 81% of L2
  throughput at Wan 480p (benchmarks/results/kernels-h100/session12-gluon64/ncu);
- the ring runs on across work items, so the next item's loads overlap this one's last products and its store.
- 64-token blocks with `pairs` (launch_forward_hopper; every row of the index table ascending): one lane whose
  work items are pairs of neighbouring query blocks, one per consumer. The producer merges the two key lists
  and loads each block once, with a code per tile (in shared memory beside its stage) saying whose list holds
  it; both consumers wait for every tile, each computes the tiles its block keeps and skips the others, and
  they take no turns, so either runs ahead through tiles only its block keeps.
  Where neighbouring blocks keep many of the same blocks, as the methods' patterns do, that cuts the L2
  traffic the two-lane walk is bound by; on rows that share nothing it loads as much. Written in session 14
  without a GPU: compiled for sm_90 and checked by ptxas, not yet run. No method routes through it.

Scope ("auto" takes it where `gluon_forward_takes` says so):
- the kept visual blocks and, optionally, text keys with their padding mask and then `rectified`'s pooled
  columns of the dropped blocks walked after them; no element mask;
- 64- or 128-token blocks, head_dim 64 or 128, bf16/fp16;
- compute capability 9.0;
- q, k and v all contiguous (B, H, N, D), or all (B, N, H, D) seen as (B, H, N, D) (what diffusers' processors
  pass);
- a Triton with Gluon's Hopper API (3.6 was measured).

Every other call stays on the Triton kernel, which also runs the backward from this kernel's output and LSE.
Same conventions as the Triton forward: scores in log2 units, natural-log LSE, empty rows give zeros and -inf.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton

from .split_merge import merge_pieces
from .triton_attention import LOG2E, interpreting

GLUON_BLOCKS = (64, 128)
GLUON_HEAD_DIMS = (64, 128)
GLUON_DTYPES = (torch.bfloat16, torch.float16)
# Q (2 x 64 rows, 32 KB at head_dim 128) + 3 stages of K and V: 128-token tiles in one ring, or 64-token tiles in
# one ring per lane; 224 KB of the 227 KB either way.
GLUON_STAGES = 3
# With pairs of 64-token query blocks (launch_forward_hopper's `pairs`) one ring of 64-token tiles serves both
# consumers: 6 stages fill the same 224 KB.
PAIR_STAGES = 6
CONSUMER_ROWS = 64  # the kernel's CONSUMER_ROWS: query rows per consumer warpgroup, and per Q tile
PROGRAM_ROWS = 128  # the kernel's PROGRAM_ROWS: 128 // block = lanes of work items per program
GLUON_PAIR_BLOCKS = (CONSUMER_ROWS,)  # the block size whose query blocks can be paired: one per consumer
MAX_PIECES = 4  # into how many pieces at most an item of a part-filled last wave is cut (plan_units)
CUT_BLOCKS = (128,)  # the block sizes whose last waves are cut by default: see launch_forward_hopper


@functools.lru_cache(maxsize=1)
def load_kernel():
    """The kernel module, or None where this Triton has no Gluon Hopper API (the Triton kernel then serves)."""
    try:
        from . import gluon_hopper_kernel
    except ImportError:
        return None
    return gluon_hopper_kernel


class TmaView(NamedTuple):
    """A (B, H, N, D) tensor as the 2D tensor its TMA descriptor covers: (B * H * N, D) for a contiguous one,
    (B * N, H * D) for a (B, N, H, D) one (bnhd); a (batch, head)'s rows then start at a fixed row and column."""

    matrix: torch.Tensor
    bnhd: bool


def tma_view(x: torch.Tensor) -> TmaView | None:
    """The 2D view of x the kernel reads through TMA, or None for other layouts (the Triton kernel takes them)."""
    b, h, n, d = x.shape
    if x.is_contiguous():
        return TmaView(x.view(b * h * n, d), False)
    if x.transpose(1, 2).is_contiguous():
        return TmaView(x.transpose(1, 2).view(b * n, h * d), True)
    return None


def _same_tma_layout(q, k, v) -> bool:
    views = [tma_view(x) for x in (q, k, v)]
    return all(view is not None for view in views) and len({view.bnhd for view in views}) == 1


def gluon_forward_takes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, *,
                        text_k: torch.Tensor | None, has_element_mask: bool) -> bool:
    """Whether this kernel can run the forward of these inputs (see the module docstring for the scope; text keys
    and the pooled columns of dropped blocks are within it)."""
    if has_element_mask or interpreting():
        return False
    if not (q.is_cuda and block_size in GLUON_BLOCKS and q.shape[-1] in GLUON_HEAD_DIMS and q.dtype in GLUON_DTYPES
            and k.dtype == q.dtype and v.dtype == q.dtype and (text_k is None or text_k.dtype == q.dtype)):
        return False
    if torch.cuda.get_device_capability(q.device) != (9, 0) or load_kernel() is None:
        return False
    from .triton_ops import tma_layout_ok

    return tma_layout_ok(q, k, v) and _same_tma_layout(q, k, v)


class WorkUnits(NamedTuple):
    """The kernel's work: items [0, whole_items) whole, then each remaining item in `split` pieces of its key
    tiles; `units` in all."""

    whole_items: int
    split: int
    units: int


def plan_units(items: int, slots: int, max_pieces: int = MAX_PIECES) -> WorkUnits:
    """Cuts the items of a part-filled last wave into pieces, so that it spreads over the `slots` (programs x
    lanes) instead of leaving most of them idle: Wan 480p at 128-token blocks has 3,072 items on 132 programs,
    23 full waves and 36 items, which would cost the time of a 24th wave. Each of them in 3 pieces takes a third
    of it, for the cost of writing and merging the pieces (split_merge.py). Waves that are over half full stay
    as they are. Measured at Wan 480p (128-token blocks): 0.6-2.7% faster at densities of 20-100%, no change at
    10% (BENCHMARKS.md, session 12)."""
    tail = items % slots
    split = min(slots // tail, max_pieces) if tail else 1
    if split < 2:
        return WorkUnits(items, 1, items)
    return WorkUnits(items - tail, split, items - tail + tail * split)


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _shared_layouts(gl, dtype, head_dim: int, block_size: int):
    """NVMMA shared layouts of a consumer's query tile (64 rows) and of a key/value block."""
    gl_dtype = gl.bfloat16 if dtype == torch.bfloat16 else gl.float16
    return (gl.NVMMASharedLayout.get_default_for([CONSUMER_ROWS, head_dim], gl_dtype),
            gl.NVMMASharedLayout.get_default_for([block_size, head_dim], gl_dtype))


def launch_forward_hopper(q, k, v, out, lse, kv_indices, kv_counts, block_size: int, scale: float, text_k=None,
                          text_v=None, text_key_mask=None, pooled=None, max_pieces: int | None = None,
                          pairs: bool = False) -> None:
    """q, k, v (B, H, N, D) that `gluon_forward_takes`; out (B, H, N, D) of q's dtype, any strides with a unit last
    one; lse (B, H, N) contiguous float32; kv_indices / kv_counts int32 (B|1, H|1, nQ, ...) / (B|1, H|1, nQ);
    scale > 0; text_k / text_v (B, H, L, D) and text_key_mask (B, L) uint8 (0 = padding), optional; pooled: the
    pooled columns of the dropped blocks as triton_ops.KernelPooledColumns, optional. max_pieces: see
    plan_units (1: never cut items); by default MAX_PIECES at 128-token blocks and 1 at 64, where cutting
    measured 1-3% slower at Wan 480p (presumably because the kernel is bound by L2 there, so a part-filled last
    wave already runs its few lanes faster; not measured). pairs: walk pairs of neighbouring query blocks over
    the merge of their key lists (64-token blocks; every row of kv_indices must hold its ids ascending, as
    block_mask_to_index_table gives them, else the output is wrong): see the module docstring."""
    if pairs and block_size not in GLUON_PAIR_BLOCKS:
        raise ValueError(f"pairs=True needs block_size in {GLUON_PAIR_BLOCKS}, got {block_size}")
    kernel = load_kernel()
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from .triton_ops import tma_layout_ok

    b, h, n, d = q.shape
    q_layout, kv_layout = _shared_layouts(kernel.gl, q.dtype, d, block_size)
    views = [tma_view(x) for x in (q, k, v)]
    text_len = 0 if text_k is None else text_k.shape[2]
    # The text keys are few (256 in HunyuanVideo): a contiguous copy where they come as a slice of something
    # larger costs little and gives them a (B * H * L, D) view.
    texts = [x.contiguous().view(-1, d) for x in (text_k, text_v)] if text_len else [views[1].matrix] * 2
    # The pooled columns come contiguous (B, H, nK, D) from KernelPooledColumns.
    means = [x.view(-1, d) for x in (pooled.k, pooled.v)] if pooled is not None else [views[1].matrix] * 2
    # The output is stored through TMA where it has q's layout (what the callers allocate); else by the threads.
    out_view = tma_view(out)
    out_tma = out_view is not None and out_view.bnhd == views[0].bnhd and tma_layout_ok(out)
    stored = out_view.matrix if out_tma else views[0].matrix  # q's view: an unused placeholder
    q_desc, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, o_desc = (
        TensorDescriptor(matrix, list(matrix.shape), list(matrix.stride()), [rows, d], layout)
        for matrix, rows, layout in zip([view.matrix for view in views] + texts + means + [stored],
                                        (CONSUMER_ROWS,) + (block_size,) * 6 + (CONSUMER_ROWS,),
                                        (q_layout,) + (kv_layout,) * 6 + (q_layout,)))
    text_mask = text_key_mask.contiguous() if text_key_mask is not None else lse  # lse: an unread placeholder
    pool_bias, dropped = (pooled.bias, pooled.dropped) if pooled is not None else (lse, kv_counts)  # unread

    def strides(x, dims):  # 0 where a dim has size 1, so that it broadcasts
        return [x.stride(i) if x.shape[i] > 1 else 0 for i in range(dims)]

    n_q_blocks = triton.cdiv(n, block_size)
    lanes = 1 if pairs else PROGRAM_ROWS // block_size
    sm_count = _sm_count(q.device.index or 0)
    if max_pieces is None:
        max_pieces = MAX_PIECES if block_size in CUT_BLOCKS else 1
    if pairs:  # a pair's tiles are known only as its lists merge, so it is not cut into pieces
        pair_items = b * h * triton.cdiv(n_q_blocks, 2)
        work = WorkUnits(pair_items, 1, pair_items)
    else:
        work = plan_units(b * h * n_q_blocks, sm_count * lanes, max_pieces)
    grid = (min(triton.cdiv(work.units, lanes), sm_count),)
    pieces = work.units - work.whole_items
    part_out = torch.empty((pieces, block_size, d), dtype=torch.float32, device=q.device) if pieces else lse
    part_lse = torch.empty((pieces, block_size), dtype=torch.float32, device=q.device) if pieces else lse
    claimed = torch.zeros(1, dtype=torch.int32, device=q.device)  # the kernel's counter of claimed work units
    kernel.block_sparse_forward_hopper_kernel[grid](
        q_desc, k_desc, v_desc, tk_desc, tv_desc, pk_desc, pv_desc, o_desc, out, lse, kv_indices, kv_counts, text_mask,
        pool_bias, dropped,
        out.stride(0), out.stride(1), out.stride(2), *strides(kv_indices, 3), *strides(kv_counts, 2),
        text_mask.stride(0) if text_key_mask is not None else 0,
        *(strides(pooled.dropped, 3) if pooled is not None else (0, 0, 0)),
        h, n, text_len, pooled.k.shape[2] if pooled is not None else 0, n_q_blocks, work.units, work.whole_items,
        work.split, claimed, part_out, part_lse, scale * LOG2E,
        BLOCK=block_size, HEAD_DIM=d, STAGES=PAIR_STAGES if pairs else GLUON_STAGES, EVEN_N=n % block_size == 0,
        BNHD=views[0].bnhd, HAS_TEXT=text_len > 0, HAS_TEXT_MASK=text_key_mask is not None, POOLED=pooled is not None,
        OUT_TMA=out_tma, PAIRS=pairs, num_warps=4,
        maxnreg=168,
    )
    if pieces:
        merge_pieces(part_out, part_lse, out, lse, work.whole_items, work.split, block_size)


def compile_check(head_dim: int, even_n: bool, extras: bool = True, block_size: int = 128,
                  pairs: bool = False) -> dict:
    """Compile the kernel for compute capability 9.0 with the installed Triton, no GPU needed (not under
    TRITON_INTERPRET=1): its wgmma count, whether the partitions got register budgets (setmaxnreg), its shared
    memory in bytes, and what Triton's ptxas says of the PTX: whether it serialized the wgmma instructions
    (warning C7513: it waits on each product, so no softmax overlaps one) and its spill stores in bytes.
    extras: with the text and pooled-column paths compiled in; pairs: launch_forward_hopper's `pairs`. The CPU
    tests run it in a subprocess."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    from ..ptxas_report import ptxas_report

    kernel = load_kernel()
    if kernel is None:
        raise RuntimeError("this Triton has no Gluon Hopper API")
    fn = kernel.block_sparse_forward_hopper_kernel
    q_layout, kv_layout = _shared_layouts(kernel.gl, torch.bfloat16, head_dim, block_size)
    descriptors = {"q_desc": (CONSUMER_ROWS, q_layout), "o_desc": (CONSUMER_ROWS, q_layout)}
    descriptors.update({name: (block_size, kv_layout) for name in ("k_desc", "v_desc", "tk_desc", "tv_desc",
                                                                    "pk_desc", "pv_desc")})
    constants = dict(BLOCK=block_size, HEAD_DIM=head_dim, STAGES=PAIR_STAGES if pairs else GLUON_STAGES,
                     EVEN_N=even_n, BNHD=True, HAS_TEXT=extras, HAS_TEXT_MASK=extras, POOLED=extras, OUT_TMA=True,
                     PAIRS=pairs, num_warps=4)
    pointers = {"Out": "*bf16", "Lse": "*fp32", "KvIdx": "*i32", "KvCnt": "*i32", "TextMask": "*u8",
                "PoolBias": "*fp32", "Dropped": "*u8", "Counter": "*i32", "PartOut": "*fp32", "PartLse": "*fp32"}
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constants:
            signature[name] = "constexpr"
        elif name in descriptors:
            rows, layout = descriptors[name]
            signature[name] = f"tensordesc<bf16[{rows}, {head_dim}],{layout!r}>"
        else:
            signature[name] = pointers.get(name, "fp32" if name == "qk_scale_log2" else "i32")
        if name in pointers:
            attrs[(i,)] = [["tt.divisibility", 16]]
    target = GPUTarget("cuda", 90, 32)
    options = triton.compiler.make_backend(target).parse_options({"num_warps": 4, "maxnreg": 168})
    compiled = triton.compile(GluonASTSource(fn=fn, signature=signature, constexprs=constants, attrs=attrs),
                              target=target, options=options.__dict__)
    ptx = compiled.asm["ptx"]
    report = ptxas_report(ptx)
    return {"wgmma": ptx.count("wgmma.mma_async"), "setmaxnreg": "setmaxnreg" in ptx,
            "shared_bytes": compiled.metadata.shared, "wgmma_serialized": report.wgmma_serialized,
            "spill_bytes": report.spill_bytes}
