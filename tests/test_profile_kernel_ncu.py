"""The ncu summary of benchmarks/profile_kernel_ncu.py reads the recorded H100 profile: one row per profiled
kernel (ours at 10% and 100% density, then cuDNN), with the counters BENCHMARKS.md quotes."""

from benchmark_scripts import BENCHMARKS_DIR, load_benchmark


def test_summary_of_the_recorded_profile_has_one_row_per_kernel_with_the_quoted_counters():
    summary = load_benchmark("profile_kernel_ncu").summarize(BENCHMARKS_DIR / "results/kernels-h100/ncu_wan480.csv")
    assert [row["kernel"].split("_")[0] for row in summary] == ["block", "block", "cudnn"]
    ours, cudnn = summary[1], summary[2]
    assert ours["Compute (SM) Throughput"] == "49.71 %" and cudnn["Compute (SM) Throughput"] == "67.50 %"
    assert ours["Registers Per Thread"].startswith("250") and cudnn["Threads"].startswith("50,688")
