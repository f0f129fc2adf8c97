"""Where a training step of the embedded model spends its time (issue 5: training must fit ~25 device minutes).

Times the step exactly as `swiftdit.pipelines.training.train` runs it (batch, loss, backward, clip, AdamW, EMA)
after a warm-up, and again with self-attention masks dropped (every sample full attention, which bounds what
the chunk-causal mask costs); and prints a torch.profiler table of the step's heaviest kernels.

Measured on the H100 (2026-11-22, batch 64, bf16): 0.180 s per step, 0.167 s without the masks. The GPU time
goes mostly to elementwise kernels (multiplies, dtype copies), not to attention (about 26 ms) or matmuls:
Wan's per-token timesteps modulate every token with its own float32 (6, dim) table. Two things that did not
pay, tried and removed: `transformer.compile(dynamic=False)` (0.182 s; Inductor fuses the modulation's
gradient into one 96 ms reduction), and sending samples with one noise level through with a per-sample
timestep (two forwards per step at varying batch sizes: 0.19 s per step over a training run).

    python benchmarks/model_training_speed.py --out bench_out            # needs a GPU for meaningful figures
    python benchmarks/model_training_speed.py --out bench_out --quick    # a CPU check of the script
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from swiftdit.pipelines.chunk_causal import masked_self_attention
from swiftdit.pipelines.embedded_model import EmbeddedModelConfig
from swiftdit.pipelines.training import TrainingConfig, TrainingRun

QUICK_MODEL = EmbeddedModelConfig(hidden_dim=48, num_heads=1, num_layers=2, ffn_dim=32, text_dim=16, text_heads=2,
                                  text_layers=1, text_ffn_dim=16)


def step_dropping_masks(run: TrainingRun, shared_mask, drop_masks: bool) -> torch.Tensor:
    """One training step; with `drop_masks`, the loss's own `applied(mask)` applies None instead."""
    if not drop_masks:
        return run.step(shared_mask)
    original_applied = shared_mask.applied
    shared_mask.applied = lambda mask: original_applied(None)
    try:
        return run.step(shared_mask)
    finally:
        shared_mask.applied = original_applied


def seconds_per_step(run: TrainingRun, shared_mask, drop_masks: bool, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step_dropping_masks(run, shared_mask, drop_masks)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step_dropping_masks(run, shared_mask, drop_masks)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="a tiny model, batch 2, 2 steps: checks the script")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    config = TrainingConfig(chunk_causal_fraction=0.3, independent_chunk_noise_fraction=0.3)
    if args.quick:
        config = dataclasses.replace(config, model=QUICK_MODEL, batch_size=2, num_frames=8, height=16, width=16,
                                     mixed_precision="no")
    warmup, steps = (1, 2) if args.quick else (10, args.steps)
    run = TrainingRun(config, max_steps=1_000_000)
    results = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "torch": torch.__version__, "batch_size": config.batch_size, "steps_timed": steps}
    with masked_self_attention(run.unwrapped.transformer) as shared_mask:
        results["seconds_per_step"] = seconds_per_step(run, shared_mask, False, warmup, steps)
        print(json.dumps(results), flush=True)
        results["seconds_per_step_without_masks"] = seconds_per_step(run, shared_mask, True, warmup, steps)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as profile:
            for _ in range(2 if args.quick else 5):
                run.step(shared_mask)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training_speed.json").write_text(json.dumps(results, indent=1))
    sort_key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    table = profile.key_averages().table(sort_by=sort_key, row_limit=30)
    (args.out / "training_profile.txt").write_text(table)
    print(json.dumps(results, indent=1))
    print(table)
    return results


if __name__ == "__main__":
    main()
