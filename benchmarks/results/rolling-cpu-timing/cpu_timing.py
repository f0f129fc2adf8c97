# The ad-hoc script that measured benchmarks/results/rolling-cpu-timing/timing.json on the CPU machine
# (2026-11-22, 15:28-15:51 UTC, tree of 16632cb, nothing else running), as: python cpu_timing.py OUT.json 2
"""Time per frame of 512-frame embedded streams on this CPU machine (bench_rolling's solo timing pass)."""
import argparse, json, sys, time
import torch
sys.path.insert(0, "/work/main/tests")
from benchmark_scripts import load_benchmark
bench = load_benchmark("bench_rolling")
torch.set_num_threads(int(sys.argv[2]))
args = argparse.Namespace(frames=512, embedded_steps=8, guidance_scale=4.0, schedules=["chunked", "rolling"])
started = time.time()
result = bench.bench_embedded_timing(args, torch.device("cpu"))
result["threads"] = torch.get_num_threads(); result["seconds"] = time.time() - started
json.dump(result, open(sys.argv[1], "w"), indent=1)
