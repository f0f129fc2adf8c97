"""The block-sparse forward and cuDNN's dense attention under Nsight Compute, at Wan2.1 480p (H=12, L=32760, D=128).

Issue 4 asks why the forward stays below cuDNN's rate; the hardware counters say where the cycles go (session 12:
the 64-token forward is bound by L2 throughput).
The script warms everything up (Triton compilation, autotuning, cuDNN plan) outside the profiled range, then
calls, once each inside it: our forward ("auto": the Gluon kernel on an H100) at 10% and at 100% density (block
128 or --block 64, bf16) and cuDNN SDPA dense. Run it under ncu with the range switched off at the start:

    ncu --profile-from-start off --clock-control none --set detailed --csv --page details \\
        python benchmarks/profile_kernel_ncu.py [--block 64] > ncu.csv
    python benchmarks/profile_kernel_ncu.py --summarize ncu.csv   # the metrics that matter, one row per kernel
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

# The counters read per kernel, with the names ncu's "details" page gives them (section, metric name).
SUMMARY_METRICS = (
    ("GPU Speed Of Light Throughput", "Duration"),
    ("GPU Speed Of Light Throughput", "Compute (SM) Throughput"),
    ("GPU Speed Of Light Throughput", "Memory Throughput"),
    ("GPU Speed Of Light Throughput", "L2 Cache Throughput"),
    ("GPU Speed Of Light Throughput", "L1/TEX Cache Throughput"),
    ("GPU Speed Of Light Throughput", "DRAM Throughput"),
    ("Compute Workload Analysis", "Executed Ipc Active"),
    ("Compute Workload Analysis", "Issue Slots Busy"),
    ("Launch Statistics", "Registers Per Thread"),
    ("Launch Statistics", "Dynamic Shared Memory Per Block"),
    ("Launch Statistics", "Threads"),
    ("Launch Statistics", "Grid Size"),
    ("Occupancy", "Achieved Occupancy"),
    ("Occupancy", "Theoretical Occupancy"),
    ("Warp State Statistics", "Warp Cycles Per Issued Instruction"),
    ("Memory Workload Analysis", "L1/TEX Hit Rate"),
    ("Memory Workload Analysis", "L2 Hit Rate"),
)


def run_profiled_calls(block: int) -> None:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from bench_kernels import random_block_mask  # benchmarks/ is on sys.path when a script of it runs
    from swiftdit.kernels.block_sparse_attention import block_mask_to_index_table, block_sparse_attention

    heads, tokens, head_dim = 12, 32760, 128
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, heads, tokens, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    n_blocks = math.ceil(tokens / block)
    tables = {density: block_mask_to_index_table(random_block_mask(heads, n_blocks, density, "cuda", seed=0))
              for density in (0.1, 1.0)}

    def dense():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v)

    calls = [(f"ours_{density:.0%}", lambda table=table: block_sparse_attention(q, k, v, *table, block))
             for density, table in tables.items()] + [("cudnn_dense", dense)]
    with torch.no_grad():
        for _, call in calls:  # compile, autotune and plan outside the profiled range
            for _ in range(3):
                call()
        torch.cuda.synchronize()
        for name, call in calls:
            torch.cuda.profiler.start()
            call()
            torch.cuda.synchronize()
            torch.cuda.profiler.stop()
            print(f"profiled {name}", file=sys.stderr, flush=True)


def summarize(csv_path: Path) -> list[dict]:
    """One dict per profiled kernel: its name and the SUMMARY_METRICS with their units."""
    text = csv_path.read_text()
    rows = list(csv.DictReader(line for line in text.splitlines() if line.startswith('"')))
    kernels: dict[str, dict] = {}
    for row in rows:
        key = row["ID"]
        kernel = kernels.setdefault(key, {"kernel": row["Kernel Name"][:60]})
        if (row["Section Name"], row["Metric Name"]) in SUMMARY_METRICS:
            kernel[row["Metric Name"]] = f"{row['Metric Value']} {row['Metric Unit']}".strip()
    return list(kernels.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--summarize", type=Path, help="print the summary of an ncu --csv details file")
    parser.add_argument("--block", type=int, default=128, choices=[64, 128], help="block size of our forward")
    args = parser.parse_args()
    if args.summarize is None:
        run_profiled_calls(args.block)
        return
    for kernel in summarize(args.summarize):
        print(" | ".join(f"{name}: {value}" for name, value in kernel.items()))


if __name__ == "__main__":
    main()
