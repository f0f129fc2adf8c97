"""Kernel benchmark: cuDNN SDPA dense vs compiled FlexAttention vs swiftdit's Triton kernels, in one run.

For every shape and density the three run on the same q/k/v and the same block mask (random per head
and query block, `density` of the key blocks kept, always including the diagonal; with --masks varied the rows
keep different numbers of blocks, as the planners' mass rules give, `density` of them on average; with --masks
neighbours neighbouring query blocks share most of their blocks, as the methods' patterns do). Reported per row:
median ms, effective TFLOP/s on the kept work (4*D * kept query-key pairs / time) and that rate over
cuDNN's dense rate. Also measured: backward, the pattern planner and the fused SLA forward/backward at
Wan 480p, and the kernel with `rectified`'s pooled columns of the dropped blocks against it without them.
On an H100 the Gluon forward (`swiftdit_gluon`, what "auto" runs for these calls) is timed beside the Triton
kernel (`swiftdit_triton`), and at 64-token blocks its walk over pairs of query blocks too (`swiftdit_gluon_pairs`).
Where NVIDIA's cuDNN frontend is installed (swiftdit[hopper]),
its block-sparse kernel runs beside ours at 64-token blocks on the same table (`cudnn_frontend_bsa`).
Results go to <out>/kernels.csv and <out>/kernels.json; a table is printed last.

    python benchmarks/bench_kernels.py --out bench_out            # the full set (H100: ~5 min)
    python benchmarks/bench_kernels.py --out bench_out --quick    # Wan 480p only, fewer densities
    python benchmarks/bench_kernels.py --out bench_out --blocks 128 64 --skip backward planner sla pooled
    python benchmarks/bench_kernels.py --out bench_out --masks random varied --skip backward planner sla pooled
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from swiftdit.kernels.block_sparse_attention import block_mask_to_index_table, block_sparse_attention, cudnn_frontend
from swiftdit.kernels.block_sparse_attention.gluon_hopper import (
    GLUON_PAIR_BLOCKS,
    gluon_forward_takes,
    launch_forward_hopper,
)
from swiftdit.kernels.block_sparse_planning import plan_block_sparse
from swiftdit.kernels.sparse_linear_attention import sparse_linear_attention


@dataclass(frozen=True)
class Shape:
    name: str
    heads: int
    visual_tokens: int
    text_tokens: int
    head_dim: int = 128


SHAPES = {
    "wan480": Shape("Wan2.1-1.3B 480p x81f", 12, 32760, 0),
    "wan720": Shape("Wan2.1 720p x81f", 12, 75600, 0),
    "hunyuan720": Shape("HunyuanVideo 720p x129f", 24, 118800, 256),
}
DENSITIES = (0.05, 0.10, 0.20, 0.50, 1.00)


@dataclass
class Row:
    benchmark: str
    shape: str
    block: int
    density_target: float
    density_kept: float
    kernel: str
    ms: float
    tflops_kept: float
    ratio_to_cudnn_rate: float
    speedup_vs_cudnn: float
    note: str = ""
    masks: str = "random"


def bench_ms(fn, quick: bool) -> float:
    """Median device time in ms (CUDA events; warm-up and repetitions in ms, as do_bench takes them)."""
    return triton.testing.do_bench(fn, warmup=100 if quick else 250, rep=300 if quick else 1000,
                                   return_mode="median")


def graph_ms(fn, quick: bool) -> float:
    """Median device time of `fn` captured in a CUDA graph: its GPU cost without Python launch gaps."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()  # compile / autotune outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return bench_ms(graph.replay, quick)


def random_block_mask(heads: int, n_blocks: int, density: float, device, seed: int) -> torch.Tensor:
    """(1, H, nB, nB) bool: per (head, query block) exactly round(density * nB) key blocks, diagonal included."""
    generator = torch.Generator(device=device).manual_seed(seed)
    keep = max(1, round(density * n_blocks))
    scores = torch.rand(1, heads, n_blocks, n_blocks, generator=generator, device=device)
    scores.diagonal(dim1=-2, dim2=-1).fill_(2.0)
    top = scores.topk(keep, dim=-1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)


def varied_block_mask(heads: int, n_blocks: int, density: float, device, seed: int) -> torch.Tensor:
    """(1, H, nB, nB) bool: row r keeps round(2 u_r density nB) key blocks (at least 1, the diagonal first), u_r
    uniform in (0, 1): `density` of the blocks on average, from one block to twice the mean, so that work items
    differ in length as they do under the planners' cumulative-mass rule."""
    generator = torch.Generator(device=device).manual_seed(seed)
    scores = torch.rand(1, heads, n_blocks, n_blocks, generator=generator, device=device)
    scores.diagonal(dim1=-2, dim2=-1).fill_(2.0)
    keep = (2 * density * n_blocks * torch.rand(1, heads, n_blocks, 1, generator=generator, device=device)).round()
    rank = scores.argsort(-1, descending=True).argsort(-1)
    return rank < keep.clamp(1, n_blocks)


NEIGHBOUR_SHARE = 0.7  # of a query block's kept blocks that the block after it keeps too (neighbour masks)


def neighbour_block_mask(heads: int, n_blocks: int, density: float, device, seed: int) -> torch.Tensor:
    """(1, H, nB, nB) bool: as random_block_mask, but each odd query block keeps about NEIGHBOUR_SHARE of the
    blocks of the even block before it (and random others), so that a pair of neighbouring query blocks lists
    about 1 - NEIGHBOUR_SHARE / 2 = 0.65 as many distinct blocks as the two lists hold. The methods' patterns
    overlap so: on the embedded model's 30-step demo generation, `sparse` plans (64-token blocks, density 0.50)
    list 0.53 and `sla` plans (0.23) 0.68, where random rows of those densities would list 0.75 and 0.89."""
    generator = torch.Generator(device=device).manual_seed(seed)
    keep = max(1, round(density * n_blocks))
    scores = torch.rand(1, heads, n_blocks, n_blocks, generator=generator, device=device)
    scores.diagonal(dim1=-2, dim2=-1).fill_(3.0)
    even = scores[:, :, 0:n_blocks - 1:2].topk(keep, dim=-1).indices
    even_mask = torch.zeros_like(scores[:, :, 0:n_blocks - 1:2], dtype=torch.bool).scatter_(-1, even, True)
    shared = even_mask & (torch.rand(even_mask.shape, generator=generator, device=device) < NEIGHBOUR_SHARE)
    scores[:, :, 1::2] += 2.0 * shared[:, :, :scores[:, :, 1::2].shape[2]]
    top = scores.topk(keep, dim=-1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)


def pair_overlap(block_mask: torch.Tensor) -> float:
    """Distinct blocks a pair of neighbouring query blocks lists, over the sum of the two lists' lengths."""
    paired = block_mask.shape[2] // 2 * 2
    first, second = block_mask[:, :, 0:paired:2], block_mask[:, :, 1:paired:2]
    return ((first | second).sum() / (first.sum() + second.sum())).item()


MASKS = {"random": random_block_mask, "varied": varied_block_mask, "neighbours": neighbour_block_mask}


def kept_pairs(block_mask: torch.Tensor, n: int, block: int, text_tokens: int) -> float:
    """Query-key pairs computed: kept blocks by their real sizes (short last block) plus every text column."""
    sizes = torch.full((block_mask.shape[-1],), float(block), device=block_mask.device, dtype=torch.float64)
    sizes[-1] = n - (block_mask.shape[-1] - 1) * block
    visual = (block_mask.double() * sizes[:, None] * sizes[None, :]).sum().item()
    return visual + block_mask.shape[1] * n * text_tokens


def flex_block_mask(block_mask: torch.Tensor, n: int, block: int, text_tokens: int) -> BlockMask:
    """The same pattern for FlexAttention over keys [text | visual]: text fills whole leading blocks (256 =
    2 x 128), so visual block j is key block j + text_blocks and every block is passed as a full block."""
    text_blocks = text_tokens // block
    if text_blocks * block != text_tokens:
        raise ValueError(f"text_tokens ({text_tokens}) must be a multiple of the block ({block}) for Flex")
    heads, n_q = block_mask.shape[1], block_mask.shape[2]
    text_cols = torch.ones(1, heads, n_q, text_blocks, dtype=torch.bool, device=block_mask.device)
    indices, counts = block_mask_to_index_table(torch.cat([text_cols, block_mask], dim=-1))
    no_partial = torch.zeros_like(counts)
    return BlockMask.from_kv_blocks(no_partial, torch.zeros_like(indices), counts, indices, BLOCK_SIZE=block,
                                    seq_lengths=(n, n + text_tokens))


def gluon_pairs_forward(q, k, v, kv_indices, kv_counts, block: int, text_k, text_v):
    """The Gluon forward over pairs of neighbouring query blocks (launch_forward_hopper's `pairs`; the tables
    of block_mask_to_index_table list each row ascending), with the output and LSE allocated per call as
    block_sparse_attention does."""
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    launch_forward_hopper(q, k, v, out, lse, kv_indices, kv_counts, block, 1 / math.sqrt(q.shape[-1]), text_k,
                          text_v, pairs=True)
    return out, lse


def attention_rows(shape_key: str, densities, block: int, quick: bool, with_flex: bool, device,
                   masks: str = "random") -> list[Row]:
    shape = SHAPES[shape_key]
    h, n, t, d = shape.heads, shape.visual_tokens, shape.text_tokens, shape.head_dim
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, h, n, d, device=device, dtype=torch.bfloat16) for _ in range(3))
    text_k, text_v = ((torch.randn(1, h, t, d, device=device, dtype=torch.bfloat16) for _ in range(2)) if t else
                      (None, None))
    # cuDNN runs the whole joint sequence (text tokens as ordinary tokens), as the dense model does.
    joint = [torch.cat([x, tx], 2) if t else x for x, tx in ((q, text_k), (k, text_k), (v, text_v))]
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        dense_ms = bench_ms(lambda: F.scaled_dot_product_attention(*joint), quick)
    dense_flops = 4.0 * h * (n + t) ** 2 * d
    dense_rate = dense_flops / dense_ms / 1e9
    rows = [Row("forward", shape_key, block, 1.0, 1.0, "cudnn_sdpa_dense", dense_ms, dense_rate, 1.0, 1.0)]
    flex = torch.compile(flex_attention, dynamic=False) if with_flex else None
    n_blocks = math.ceil(n / block)
    for density in densities:
        mask = MASKS[masks](h, n_blocks, density, device, seed=int(density * 1000))
        kv_indices, kv_counts = block_mask_to_index_table(mask)
        flops = 4.0 * d * kept_pairs(mask, n, block, t)
        kept_density = flops / dense_flops

        def ours():
            return block_sparse_attention(q, k, v, kv_indices, kv_counts, block, text_k=text_k, text_v=text_v,
                                          backend="triton")

        candidates = [("swiftdit_triton", ours)]
        if gluon_forward_takes(q, k, v, block, text_k=text_k, has_element_mask=False):
            # The Gluon forward (FA3's layout) that "auto" runs on an H100 for these calls; at 64-token blocks
            # also its walk over pairs of query blocks, which no method runs yet.
            candidates.append(("swiftdit_gluon", lambda: block_sparse_attention(
                q, k, v, kv_indices, kv_counts, block, text_k=text_k, text_v=text_v, backend="gluon")))
            if block in GLUON_PAIR_BLOCKS:
                candidates.append(("swiftdit_gluon_pairs", lambda: gluon_pairs_forward(
                    q, k, v, kv_indices, kv_counts, block, text_k, text_v)))
        if not t and cudnn_frontend.cudnn_frontend_takes(q, block, has_text=False, has_element_mask=False,
                                                         estimate_dropped=False, needs_grad=False):
            # NVIDIA's FA3-derived block-sparse kernel, where installed (swiftdit[hopper]): the same table.
            candidates.append(("cudnn_frontend_bsa", lambda: block_sparse_attention(
                q, k, v, kv_indices, kv_counts, block, backend="cudnn-frontend")))
        note = f"pair overlap {pair_overlap(mask):.2f}"
        named = dict(candidates)
        if "swiftdit_gluon_pairs" in named:
            with torch.no_grad():
                err = (named["swiftdit_gluon_pairs"]()[0].float() - named["swiftdit_gluon"]()[0].float()).abs().max()
            note += f"; max|pairs-gluon|={err.item():.2e}"
        if flex is not None:
            fmask = flex_block_mask(mask, n, block, t)
            flex_keys = [torch.cat([tx, x], 2) if t else x for x, tx in ((k, text_k), (v, text_v))]
            # Flex's default Hopper tile is 128 x 128; a 64-token block mask needs 64-token tiles.
            tiles = {"BLOCK_M": block, "BLOCK_N": block} if block != 128 else None
            candidates.append(("flex_compiled", lambda: flex(q, *flex_keys, block_mask=fmask, kernel_options=tiles)))
            with torch.no_grad():
                err = (ours()[0].float() - candidates[-1][1]()).float().abs().max().item()
            note += f"; max|ours-flex|={err:.2e}"
        for name, fn in candidates:
            with torch.no_grad():
                ms = bench_ms(fn, quick)
            rate = flops / ms / 1e9
            rows.append(Row("forward", shape_key, block, density, kept_density, name, ms, rate, rate / dense_rate,
                            dense_ms / ms, note, masks))
        print(f"  {shape_key} block {block} {masks} masks, density {density:.2f}: " +
              ", ".join(f"{r.kernel} {r.ms:.3f} ms" for r in rows[-len(candidates):]), flush=True)
    return rows


def backward_rows(densities, block: int, quick: bool, device) -> list[Row]:
    """Forward + backward at Wan 480p: ours vs cuDNN dense (the backward alone is the difference)."""
    shape = SHAPES["wan480"]
    h, n, d = shape.heads, shape.visual_tokens, shape.head_dim
    q, k, v = (torch.randn(1, h, n, d, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, h, n, d, device=device, dtype=torch.bfloat16)

    def fwd_bwd(attend):
        def run():
            out = attend()
            torch.autograd.grad(out, (q, k, v), grad)
        return run

    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        dense_ms = bench_ms(fwd_bwd(lambda: F.scaled_dot_product_attention(q, k, v)), quick)
    dense_flops = 4.0 * h * n * n * d * 3.5  # forward 1 + backward 2.5 (recomputed scores)
    rows = [Row("fwd+bwd", "wan480", block, 1.0, 1.0, "cudnn_sdpa_dense", dense_ms, dense_flops / dense_ms / 1e9,
                1.0, 1.0)]
    n_blocks = math.ceil(n / block)
    for density in densities:
        mask = random_block_mask(h, n_blocks, density, device, seed=int(density * 1000))
        kv_indices, kv_counts = block_mask_to_index_table(mask)
        flops = 4.0 * d * kept_pairs(mask, n, block, 0) * 3.5
        ms = bench_ms(fwd_bwd(lambda: block_sparse_attention(q, k, v, kv_indices, kv_counts, block)[0]), quick)
        rate = flops / ms / 1e9
        rows.append(Row("fwd+bwd", "wan480", block, density, flops / dense_flops, "swiftdit_triton", ms, rate,
                        rate / rows[0].tflops_kept, dense_ms / ms))
    return rows


def planner_rows(quick: bool, device) -> list[Row]:
    """Pattern planning at Wan 480p against one dense cuDNN call (target: <= 3% of it); timed eagerly (with
    Python's launch gaps, which overlap earlier GPU work in a real forward) and as a CUDA graph (GPU cost)."""
    shape = SHAPES["wan480"]
    h, n, d = shape.heads, shape.visual_tokens, shape.head_dim
    q, k, v = (torch.randn(1, h, n, d, device=device, dtype=torch.bfloat16) for _ in range(3))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        dense_ms = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v), quick)
    rows = []
    for block in (64, 128):
        for rule, options in (("top-k 10%", dict(keep_ratio=0.1)),
                              ("top-k 10% + mass 0.9", dict(keep_ratio=0.1, keep_mass=0.9))):
            def plan():
                return plan_block_sparse(q, k, block, include_diagonal=True, **options)

            for timing, ms in (("eager", bench_ms(plan, quick)), ("cuda graph", graph_ms(plan, quick))):
                share = f"{100 * ms / dense_ms:.2f}% of cuDNN dense"
                rows.append(Row("planner", "wan480", block, 0.1, float("nan"), f"plan {rule}, {timing}", ms,
                                float("nan"), float("nan"), dense_ms / ms, share))
    return rows


def sla_rows(quick: bool, device) -> list[Row]:
    """SLA at Wan 480p, 10% critical blocks: forward (inference, no autograd) and backward vs cuDNN dense
    (targets 5x and 3x)."""
    shape = SHAPES["wan480"]
    h, n, d = shape.heads, shape.visual_tokens, shape.head_dim
    q, k, v = (torch.randn(1, h, n, d, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, h, n, d, device=device, dtype=torch.bfloat16)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        dense_fwd = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v), quick)
        dense_all = bench_ms(lambda: torch.autograd.grad(F.scaled_dot_product_attention(q, k, v), (q, k, v), grad),
                             quick)
    rows = [Row("sla", "wan480", 0, 1.0, 1.0, "cudnn_sdpa_dense fwd", dense_fwd, float("nan"), float("nan"), 1.0),
            Row("sla", "wan480", 0, 1.0, 1.0, "cudnn_sdpa_dense bwd", dense_all - dense_fwd, float("nan"),
                float("nan"), 1.0)]
    for block in (64, 128):
        mask = random_block_mask(h, math.ceil(n / block), 0.1, device, seed=7)
        kv_indices, kv_counts = block_mask_to_index_table(mask)

        def forward():
            return sparse_linear_attention(q, k, v, kv_indices, kv_counts, block)

        def forward_backward():
            out_sparse, out_linear, _ = forward()
            torch.autograd.grad((out_sparse, out_linear), (q, k, v), (grad, grad))

        with torch.no_grad():
            fwd_ms = bench_ms(forward, quick)  # inference
        # The backward is (forward + backward) minus the forward with the autograd graph recorded, whose
        # saved tensors it needs.
        bwd_ms = bench_ms(forward_backward, quick) - bench_ms(forward, quick)
        rows.append(Row("sla", "wan480", block, 0.1, float("nan"), "swiftdit SLA fwd", fwd_ms, float("nan"),
                        float("nan"), dense_fwd / fwd_ms, "target >= 5x"))
        rows.append(Row("sla", "wan480", block, 0.1, float("nan"), "swiftdit SLA bwd", bwd_ms, float("nan"),
                        float("nan"), (dense_all - dense_fwd) / bwd_ms, "target >= 3x"))
    return rows


def pooled_rows(shape_keys, quick: bool, device) -> list[Row]:
    """`rectified`'s pooled columns of the dropped blocks (estimate_dropped=True) against the same kernel
    without them: the in-kernel cost of the per-token estimate (issue 4, item 4), block 128."""
    rows = []
    block = 128
    for shape_key in shape_keys:
        shape = SHAPES[shape_key]
        h, n, d = shape.heads, shape.visual_tokens, shape.head_dim
        q, k, v = (torch.randn(1, h, n, d, device=device, dtype=torch.bfloat16) for _ in range(3))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            dense_ms = bench_ms(lambda: F.scaled_dot_product_attention(q, k, v), quick)
        for density in (0.10, 0.25):
            mask = random_block_mask(h, math.ceil(n / block), density, device, seed=int(density * 1000))
            kv_indices, kv_counts = block_mask_to_index_table(mask)
            flops = 4.0 * d * kept_pairs(mask, n, block, 0)
            timed = {}
            # What "auto" runs: the Gluon forward on an H100 (both with and without the pooled columns).
            kernel = "swiftdit_gluon" if gluon_forward_takes(q, k, v, block, text_k=None,
                                                             has_element_mask=False) else "swiftdit_triton"
            for name, estimate in ((kernel, False), (f"{kernel} + pooled dropped", True)):
                with torch.no_grad():
                    timed[name] = bench_ms(lambda: block_sparse_attention(q, k, v, kv_indices, kv_counts, block,
                                                                          estimate_dropped=estimate), quick)
            plain_ms = timed[kernel]
            for name, ms in timed.items():
                note = "" if ms == plain_ms else f"+{100 * (ms / plain_ms - 1):.1f}% over the plain kernel"
                rows.append(Row("pooled", shape_key, block, density, flops / (4.0 * h * n * n * d), name, ms,
                                flops / ms / 1e9, float("nan"), dense_ms / ms, note))
            print(f"  pooled {shape_key} density {density:.2f}: " +
                  ", ".join(f"{name} {ms:.3f} ms" for name, ms in timed.items()), flush=True)
    return rows


def environment() -> dict:
    props = torch.cuda.get_device_properties(0)
    return {"device": props.name, "sm_count": props.multi_processor_count, "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def save_results(out_dir: str, rows: list[Row], quick: bool) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "kernels.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    with open(os.path.join(out_dir, "kernels.json"), "w") as f:
        json.dump({"environment": environment(), "quick": quick, "rows": [asdict(r) for r in rows]}, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder for kernels.csv / kernels.json")
    parser.add_argument("--quick", action="store_true", help="Wan 480p only, densities 10%% and 100%%")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), help="shapes (default: all, or wan480)")
    parser.add_argument("--no-flex", action="store_true", help="skip FlexAttention (saves its compile time)")
    parser.add_argument("--blocks", nargs="+", type=int, default=[128], choices=[64, 128],
                        help="block sizes of the full forward table (default 128; 64 otherwise runs only at Wan "
                             "480p, densities 10%% and 20%%)")
    parser.add_argument("--masks", nargs="+", default=["random"], choices=sorted(MASKS),
                        help="block masks of the forward table: random (every row keeps the same number of blocks; "
                             "the default) and/or varied (rows of different lengths)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["forward", "backward", "planner", "sla", "pooled"],
                        help="benchmarks to leave out (forward: the forward table against cuDNN and Flex)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_kernels.py needs a CUDA device")
    device = torch.device("cuda")
    shapes = args.shapes or (["wan480"] if args.quick else list(SHAPES))
    densities = (0.10, 1.00) if args.quick else DENSITIES
    rows: list[Row] = []
    # Results are rewritten after every section so that a run stopped at its time limit keeps what it has.
    tables = [(masks, block) for masks in args.masks for block in args.blocks] if "forward" not in args.skip else []
    for i, (masks, block) in enumerate(tables):
        for shape_key in shapes:
            rows += [r for r in attention_rows(shape_key, densities, block, args.quick, not args.no_flex, device,
                                               masks)
                     if i == 0 or r.kernel != "cudnn_sdpa_dense"]  # one dense row per shape
            save_results(args.out, rows, args.quick)
    if not args.quick and "wan480" in shapes and "forward" not in args.skip and 64 not in args.blocks:
        rows += [r for r in attention_rows("wan480", (0.10, 0.20), 64, args.quick, not args.no_flex, device)
                 if r.kernel != "cudnn_sdpa_dense"]
        save_results(args.out, rows, args.quick)
    sections = {"backward": lambda: backward_rows((0.10, 1.00) if args.quick else (0.10, 0.20, 1.00), 128,
                                                  args.quick, device),
                "planner": lambda: planner_rows(args.quick, device),
                "sla": lambda: sla_rows(args.quick, device),
                "pooled": lambda: pooled_rows([s for s in shapes if s != "hunyuan720"], args.quick, device)}
    for name, section in sections.items():
        if name not in args.skip:
            rows += section()
            save_results(args.out, rows, args.quick)
    print(json.dumps(environment()))
    print("| bench | masks | shape | block | density | kernel | ms | TFLOP/s kept | x cuDNN rate | speedup vs cuDNN "
          "| note |")
    for r in rows:
        print(f"| {r.benchmark} | {r.masks} | {r.shape} | {r.block} | {r.density_kept:.3f} | {r.kernel} | {r.ms:.3f} | "
              f"{r.tflops_kept:.0f} | {r.ratio_to_cudnn_rate:.2f} | {r.speedup_vs_cudnn:.2f} | {r.note} |")


if __name__ == "__main__":
    main()
