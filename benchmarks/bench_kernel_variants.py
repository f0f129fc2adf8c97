"""Sweep of the block-sparse forward kernel's variants: every candidate config forced in turn, vs cuDNN.

The autotuner normally picks among the forward's candidates (`triton_attention.all_forward_configs`:
SUB 64/128, num_warps 4/8, num_stages 2/3/4, USE_TMA, WARP_SPEC). This script bypasses it: each variant
runs through `launch_forward(..., config=...)` at
  - Wan 480p (B=1, H=12, N=32760, D=128, block 128) at 10% and 100% density,
  - Wan 720p (N=75600) at 10%,
with the masks, index tables and FLOP counts of bench_kernels.py, and cuDNN SDPA dense on the same shapes.
Reported per variant and shape: median ms (triton.testing.do_bench), TFLOP/s on the kept blocks, that rate
over cuDNN's dense rate, and the max abs difference to the default (autotuned) path. A variant that fails
(compile error, out of resources, wrong result) is recorded with its error instead of stopping the sweep.
Results: <out>/variants.json; a table sorted by TFLOP/s is printed per shape.

    python benchmarks/bench_kernel_variants.py --out bench_out                 # H100: ~2-3 min
    python benchmarks/bench_kernel_variants.py --out bench_out --all           # also configs the pruning drops
    python benchmarks/bench_kernel_variants.py --out bench_out --compile-check  # no GPU: compile for sm_90 only
    python benchmarks/bench_kernel_variants.py --out bench_out --quick         # CPU, TRITON_INTERPRET=1, tiny

--compile-check compiles every variant for sm_90 with the installed Triton (no GPU needed) and records
shared memory, registers and spills (ptxas -v); this is how the pruning rules in triton_attention were set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback

import torch

if not torch.cuda.is_available() and "--compile-check" not in sys.argv:
    # The quick mode runs the kernels in Triton's CPU interpreter; it must be chosen before triton loads.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F
import triton
from bench_kernels import SHAPES, kept_pairs, random_block_mask
from swiftdit.kernels.block_sparse_attention import block_mask_to_index_table
from swiftdit.kernels.block_sparse_attention import triton_attention as ta
from swiftdit.kernels.block_sparse_attention.triton_ops import launch_forward
from swiftdit.kernels.ptxas_report import ptxas_report

# (shape key, density) measured per variant; block 128 throughout.
CASES = (("wan480", 0.10), ("wan480", 1.00), ("wan720", 0.10))
BLOCK = 128
# The quick mode: one tiny ragged shape in the interpreter, the default path and two forced variants.
QUICK_SHAPE = {"heads": 2, "tokens": 200, "head_dim": 32, "block": 64}
QUICK_VARIANTS = ({"SUB": 32, "num_warps": 4, "num_stages": 1, "USE_TMA": False, "WARP_SPEC": False},
                  {"SUB": 32, "num_warps": 4, "num_stages": 1, "USE_TMA": True, "WARP_SPEC": False})


def variant_name(config: dict | None) -> str:
    if config is None:
        return "default (autotuned)"
    extras = "".join(f" {flag}" for flag, key in (("tma", "USE_TMA"), ("ws", "WARP_SPEC")) if config.get(key))
    return f"sub{config['SUB']} w{config['num_warps']} s{config['num_stages']}{extras}"


def sweep_configs(block: int, block_d: int, everything: bool) -> list[tuple[dict, str | None]]:
    """(config, why it is pruned or None) for the whole space. Without `everything` only what the pruning
    keeps, plus warp specialization on the TMA variants (a sweep-only option)."""
    rows = []
    for config in ta.all_forward_configs():
        why = ta.forward_config_allowed(config, block, block_d, tma_ok=True, tune=True)
        sweep_only = why is not None and config.kwargs["WARP_SPEC"] and config.kwargs["USE_TMA"] and \
            ta.forward_config_allowed(config, block, block_d, tma_ok=True) is None
        if why is None or sweep_only or everything:
            rows.append((ta.forward_config_dict(config), None if sweep_only else why))
    return rows


def measure_ms(fn, on_cuda: bool, warmup: int, rep: int) -> float:
    if on_cuda:
        return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")
    times = []
    for _ in range(2):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
    return text[:400]


def run_sweep(args) -> dict:
    on_cuda = torch.cuda.is_available()
    device = torch.device("cuda" if on_cuda else "cpu")
    if args.quick:
        cases = [("quick", 0.5)]
        configs = [(dict(c), None) for c in QUICK_VARIANTS]
    else:
        if not on_cuda:
            raise SystemExit("the sweep needs a CUDA device (use --quick on the CPU, or --compile-check)")
        cases = [(s, d) for s, d in CASES if s in args.shapes]
        configs = sweep_configs(BLOCK, 128, args.all)
    started = time.monotonic()
    rows, cudnn = [], {}
    for shape_key, density in cases:
        rows += run_case(args, shape_key, density, configs, cudnn, started, device)
    return {"environment": environment(on_cuda), "quick": args.quick, "elapsed_s": time.monotonic() - started,
            "rows": rows}


def run_case(args, shape_key: str, density: float, configs, cudnn: dict, started: float, device) -> list[dict]:
    """cuDNN (once per shape) and every variant on one shape and density."""
    on_cuda = device.type == "cuda"
    if args.quick:
        h, n, d, block = (QUICK_SHAPE[k] for k in ("heads", "tokens", "head_dim", "block"))
        dtype = torch.float16
    else:
        shape = SHAPES[shape_key]
        h, n, d, block, dtype = shape.heads, shape.visual_tokens, shape.head_dim, BLOCK, torch.bfloat16
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, h, n, d, device=device, dtype=dtype) for _ in range(3))
    mask = random_block_mask(h, math.ceil(n / block), density, device, seed=int(density * 1000))
    kv_indices, kv_counts = block_mask_to_index_table(mask)
    flops = 4.0 * d * kept_pairs(mask, n, block, 0)
    scale = 1.0 / math.sqrt(d)
    case = f"{shape_key} density {density:.2f}"
    rows = []

    if on_cuda and shape_key not in cudnn:
        # cuDNN's dense rate per shape, measured once; every case of the shape gets it as a row.
        from torch.nn.attention import SDPBackend, sdpa_kernel

        try:
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                ms = measure_ms(lambda: F.scaled_dot_product_attention(q, k, v), on_cuda, args.warmup, args.rep)
            cudnn[shape_key] = (ms, 4.0 * h * n * n * d / ms / 1e9, None)
        except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
            cudnn[shape_key] = (None, None, short_error(exc))
    dense_ms, dense_rate, dense_error = cudnn.get(shape_key, (None, None, "no CUDA"))
    rows.append({"case": case, "shape": shape_key, "density": 1.0, "variant": "cudnn_sdpa_dense (dense work)",
                 "config": None, "pruned": None, "ms": dense_ms, "tflops_kept": dense_rate,
                 "ratio_to_cudnn_rate": 1.0 if dense_rate else None, "max_abs_diff": None, "error": dense_error})

    reference = None
    for config, pruned in [(None, None), *configs]:
        def forward(config=config):
            return launch_forward(q, k, v, kv_indices, kv_counts, block, scale, None, None, config=config)

        row = {"case": case, "shape": shape_key, "density": density, "variant": variant_name(config),
               "config": config, "pruned": pruned, "ms": None, "tflops_kept": None, "ratio_to_cudnn_rate": None,
               "max_abs_diff": None, "error": None}
        rows.append(row)
        if time.monotonic() - started > args.time_budget:
            row["error"] = "skipped: time budget spent"
            continue
        try:
            with torch.no_grad():
                out, _ = forward()
                if on_cuda:
                    torch.cuda.synchronize()
                if reference is None:
                    reference = out
                else:
                    row["max_abs_diff"] = (out.float() - reference.float()).abs().max().item()
                if torch.isnan(out).any():
                    raise FloatingPointError("NaN in the output")
                if row["max_abs_diff"] is not None and row["max_abs_diff"] > args.tolerance:
                    raise AssertionError(f"differs from the default path by {row['max_abs_diff']:.3g}")
                row["ms"] = measure_ms(forward, on_cuda, args.warmup, args.rep)
        except Exception as exc:  # noqa: BLE001 - compile errors, out of resources: recorded per variant
            row["error"] = short_error(exc)
            if args.verbose:
                traceback.print_exc()
            continue
        row["tflops_kept"] = flops / row["ms"] / 1e9
        if dense_rate:
            row["ratio_to_cudnn_rate"] = row["tflops_kept"] / dense_rate
        print(f"  {case}: {row['variant']}: {row['ms']:.3f} ms, {row['tflops_kept']:.1f} TFLOP/s", flush=True)
    return rows


def environment(on_cuda: bool) -> dict:
    env = {"torch": torch.__version__, "triton": triton.__version__, "interpreter": ta.interpreting()}
    if on_cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(device=props.name, sm_count=props.multi_processor_count, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
    return env


def compile_check(args) -> dict:
    """Compile every variant for sm_90 (bf16, block 128, head_dim 128, ragged N, 16-divisible strides) with
    the installed Triton and ptxas; no GPU needed. Records shared memory, registers, spills, or the error."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = ta.block_sparse_forward_kernel.fn
    pointers = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "Out": "*bf16", "Lse": "*fp32", "KvIdx": "*i32",
                "KvCnt": "*i32", "TextK": "*bf16", "TextV": "*bf16", "TextMask": "*u8", "ElemMask": "*u8",
                "BlockFull": "*u8", "Coords": "*i32", "PoolK": "*bf16", "PoolV": "*bf16", "PoolBias": "*fp32",
                "Dropped": "*u8"}
    aligned = {"s_qb", "s_qh", "s_qn", "s_kb", "s_kh", "s_kn", "s_vb", "s_vh", "s_vn", "s_ob", "s_oh", "s_on"}
    target = GPUTarget("cuda", 90, 32)
    backend = triton.compiler.make_backend(target)
    rows = []
    for config, pruned in sweep_configs(BLOCK, 128, everything=True):
        constants = {"BLOCK": BLOCK, "HEAD_DIM": 128, "BLOCK_D": 128, "EVEN_N": False, "HAS_TEXT": False,
                         "HAS_TEXT_MASK": False, "EMASK_KIND": 0, "TMA_OK": True, "SUB": config["SUB"],
                         "USE_TMA": config["USE_TMA"], "WARP_SPEC": config["WARP_SPEC"], "HAS_POOLED": False}
        signature, attrs = {}, {}
        for i, name in enumerate(kernel.arg_names):
            if name in constants:
                signature[name] = "constexpr"
            else:
                signature[name] = pointers.get(name, "fp32" if name == "qk_scale_log2" else "i32")
            if name in pointers or name in aligned:
                attrs[(i,)] = [["tt.divisibility", 16]]
        row = {"variant": variant_name(config), "config": config, "pruned": pruned, "error": None}
        rows.append(row)
        try:
            options = backend.parse_options({"num_warps": config["num_warps"], "num_stages": config["num_stages"]})
            compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs),
                                      target=target, options=options.__dict__)
            meta = compiled.metadata
            row.update(shared_bytes=meta.shared, warps=meta.num_warps,
                       global_scratch=getattr(meta, "global_scratch_size", 0),
                       wgmma=compiled.asm["ptx"].count("wgmma.mma_async"),
                       tma_loads=compiled.asm["ptx"].count("cp.async.bulk.tensor"))
            report = ptxas_report(compiled.asm["ptx"])
            row.update(registers=report.registers, spill_bytes=report.spill_bytes,
                       wgmma_serialized=report.wgmma_serialized, fits_smem=meta.shared <= ta.SMEM_LIMIT_BYTES)
        except Exception as exc:  # noqa: BLE001
            row["error"] = short_error(exc)
        print(f"  {row['variant']}: " + (row["error"] or f"smem {row['shared_bytes'] // 1024} KB, regs "
                                         f"{row['registers']}, spills {row['spill_bytes']} B, warps {row['warps']}")
              + (f" [pruned: {pruned}]" if pruned else ""), flush=True)
    return {"triton": triton.__version__, "target": "cuda:90", "rows": rows}


def print_table(result: dict) -> None:
    rows = result["rows"]
    for case in dict.fromkeys(r["case"] for r in rows):
        print(f"\n{case}")
        print("| variant | ms | TFLOP/s kept | x cuDNN rate | max abs diff vs default | error |")
        ordered = sorted((r for r in rows if r["case"] == case), key=lambda r: -(r["tflops_kept"] or -1))
        for r in ordered:
            fmt = (lambda x, spec: format(x, spec) if x is not None else "-")
            print(f"| {r['variant']} | {fmt(r['ms'], '.3f')} | {fmt(r['tflops_kept'], '.1f')} | "
                  f"{fmt(r['ratio_to_cudnn_rate'], '.3f')} | {fmt(r['max_abs_diff'], '.2e')} | {r['error'] or ''} |")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder for variants.json")
    parser.add_argument("--quick", action="store_true", help="CPU interpreter, tiny shape, 2 forced variants")
    parser.add_argument("--all", action="store_true", help="also variants the pruning drops (may fail)")
    parser.add_argument("--compile-check", action="store_true", help="compile for sm_90 only (no GPU)")
    parser.add_argument("--shapes", nargs="+", default=["wan480", "wan720"], choices=["wan480", "wan720"])
    parser.add_argument("--time-budget", type=float, default=240.0,
                        help="seconds; variants after it are recorded as skipped (default 240)")
    parser.add_argument("--warmup", type=int, default=25, help="do_bench warm-up, ms")
    parser.add_argument("--rep", type=int, default=200, help="do_bench repetitions, ms")
    parser.add_argument("--tolerance", type=float, default=2e-2,
                        help="max abs difference to the default path before a variant counts as wrong")
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failing variants")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.compile_check:
        result = compile_check(args)
        path = os.path.join(args.out, "variants_compile.json")
    else:
        result = run_sweep(args)
        path = os.path.join(args.out, "variants.json")
        print_table(result)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
