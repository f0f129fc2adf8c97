"""Where a training step of the embedded model spends its time (issue 5: training must fit ~25 device minutes).

Times the step exactly as `swiftdit.pipelines.training.train` runs it (batch, loss, backward, clip, AdamW, EMA)
after a warm-up, and again with self-attention masks dropped (every sample full attention, which bounds what
the chunk-causal mask costs), once uncompiled and once with `TrainingConfig(compile=True)`; and writes a
torch.profiler table of each variant's heaviest kernels.

Measured on the H100 (2026-11-22, batch 64, bf16; results/training-speed-h100/): 0.155 s per step uncompiled,
0.082 s compiled (38 s for the first, compiling step). The stock forward with per-token timesteps took 0.180 s
(0.182 s compiled): it embedded and stored a float32 (6, dim) modulation table for every token of every layer,
which made the step elementwise-bound; `chunkwise_forward` embeds one per chunk.

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


def time_variant(config: TrainingConfig, quick: bool, steps: int, profile_dir: Path | None) -> dict:
    """Seconds per step of a fresh run of `config` (with and without masks), and the first step's time, which
    holds the compilation when `config.compile`; with `profile_dir`, a profiler table of a few steps too."""
    warmup = 1 if quick else 10
    run = TrainingRun(config, max_steps=1_000_000)
    figures = {}
    with masked_self_attention(run.unwrapped.transformer) as shared_mask:
        figures["first_step_seconds"] = seconds_per_step(run, shared_mask, False, 0, 1)
        figures["seconds_per_step"] = seconds_per_step(run, shared_mask, False, warmup, steps)
        figures["seconds_per_step_without_masks"] = seconds_per_step(run, shared_mask, True, warmup, steps)
        if profile_dir is None:
            return figures
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as profile:
            for _ in range(2 if quick else 5):
                run.step(shared_mask)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
    sort_key = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    table = profile.key_averages().table(sort_by=sort_key, row_limit=30)
    (profile_dir / f"training_profile_{'compiled' if config.compile else 'eager'}.txt").write_text(table)
    print(table)
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="a tiny model, batch 2, 2 steps: checks the script")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--variants", nargs="+", choices=["eager", "compiled"], default=["eager", "compiled"])
    parser.add_argument("--no-profile", action="store_true", help="skip the profiler tables")
    args = parser.parse_args(argv)
    config = TrainingConfig(chunk_causal_fraction=0.3, independent_chunk_noise_fraction=0.3)
    if args.quick:
        config = dataclasses.replace(config, model=QUICK_MODEL, batch_size=2, num_frames=8, height=16, width=16,
                                     mixed_precision="no")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "torch": torch.__version__, "batch_size": config.batch_size, "steps_timed": 2 if args.quick else args.steps}
    for variant in args.variants:
        variant_config = dataclasses.replace(config, compile=variant == "compiled")
        results[variant] = time_variant(variant_config, args.quick, results["steps_timed"],
                                        None if args.no_profile else args.out)
        print(json.dumps({variant: results[variant]}), flush=True)
    (args.out / "training_speed.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
