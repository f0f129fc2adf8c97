"""The forward-variant sweep (benchmarks/bench_kernel_variants.py) in its --quick mode: on the CPU it runs the
default path and two forced variants (pointer loads, TMA descriptors) in Triton's interpreter on a tiny ragged
shape, checks each against the default and writes variants.json. Nothing about speed is asserted."""

import json

import pytest
import torch
import triton.language as tl
from benchmark_scripts import load_benchmark
from triton.runtime.interpreter import InterpretedFunction

needs_interpreter_or_cuda = pytest.mark.skipif(
    not isinstance(tl.sum, InterpretedFunction) and not torch.cuda.is_available(),
    reason="needs Triton's interpreter (TRITON_INTERPRET=1 before triton is first imported) or CUDA",
)


@needs_interpreter_or_cuda
def test_quick_sweep_measures_every_variant_and_writes_json(tmp_path):
    bench = load_benchmark("bench_kernel_variants")
    result = bench.main(["--quick", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "variants.json").read_text())
    assert written["rows"] == json.loads(json.dumps(result["rows"]))
    variants = [r for r in written["rows"] if not r["variant"].startswith("cudnn")]
    assert [r["variant"] for r in variants] == ["default (autotuned)", "sub32 w4 s1", "sub32 w4 s1 tma"]
    for row in variants:
        assert row["error"] is None, row
        assert row["ms"] > 0 and row["tflops_kept"] > 0
    assert all(r["max_abs_diff"] < 1e-2 for r in variants[1:])


def test_sweep_keeps_the_autotuned_configs_and_names_why_others_are_dropped():
    bench = load_benchmark("bench_kernel_variants")
    configs = bench.sweep_configs(128, 128, everything=False)
    assert all(why is None for _, why in configs)
    tuned = [c for c, _ in configs if not c["WARP_SPEC"]]
    assert len(tuned) == 8 and all(c["num_warps"] == 8 and c["num_stages"] in (2, 3) for c in tuned)
    everything = bench.sweep_configs(128, 128, everything=True)
    assert len(everything) == 48
    reasons = {why for _, why in everything if why}
    assert any("shared memory" in why for why in reasons) and any("registers" in why for why in reasons)


def test_compile_check_compiles_a_variant_for_sm90_and_reads_ptxas(tmp_path):
    """--compile-check (no GPU: the variant compiled for sm_90 and assembled by ptxas) on one variant, in a
    subprocess without the interpreter: it compiles with the kernel's current arguments and records shared
    memory, registers and spills. Its argument list had gone stale once, and every variant failed."""
    import os
    import subprocess
    import sys

    from benchmark_scripts import BENCHMARKS_DIR

    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "import bench_kernel_variants as bench;"
        "first = bench.sweep_configs(128, 128, everything=False)[:1];"
        "bench.sweep_configs = lambda *args, **kwargs: first;"
        "print(json.dumps(bench.compile_check(None)['rows']))"
    )
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    # "--compile-check" in its argv keeps the script from turning on the interpreter, as on its command line.
    run = subprocess.run([sys.executable, "-c", script, str(BENCHMARKS_DIR), "--compile-check"], env=env,
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    (row,) = json.loads(run.stdout.strip().splitlines()[-1])
    assert row["error"] is None, row["error"]
    assert row["shared_bytes"] > 0 and row["registers"] > 0 and row["spill_bytes"] is not None
    assert row["wgmma"] > 0 and not row["wgmma_serialized"]
