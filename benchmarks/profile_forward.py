"""Where one transformer forward spends its time: a torch.profiler trace of a Wan / HunyuanVideo forward at
real shape (random weights), under one swiftdit method or the dense / no-self-attention baselines.

Prints (and writes to <out>/<label>.txt) the CUDA kernels by total device time and the forward's wall time
against its summed kernel time (a gap means the GPU waited for the host). The model and inputs are
bench_speed.py's, so the figures line up with its forward table.

    python benchmarks/profile_forward.py --shape wan720 --method clear --options '{"radius": 4}' --out prof
    python benchmarks/profile_forward.py --shape wan720 --method no_self_attention --out prof
    python benchmarks/profile_forward.py --method rectified --options '{"rectify": "history"}' --reuse-step --out prof

--reuse-step profiles a step that reuses the plan of the step before (as bench_speed's "reuse step" rows): each
profiled or warm-up forward follows an untimed one at another timestep that plans.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import swiftdit
import torch
from torch.profiler import ProfilerActivity, profile

from bench_speed import (  # noqa: E402  (benchmarks/ is on sys.path when a script of it runs)
    NO_ATTENTION_BACKEND,
    SHAPES,
    build_transformer,
    forward_inputs,
    processor_backend,
    register_backends,
)
from sdpa_backends import sdpa_context  # noqa: E402

BASELINES = ("dense", "no_self_attention")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="wan720")
    parser.add_argument("--method", required=True, help=f"a swiftdit method or one of {BASELINES}")
    parser.add_argument("--options", default="{}", help="the method's options as JSON")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=25, help="kernels listed")
    parser.add_argument("--reuse-step", action="store_true",
                        help="profile a step that reuses the previous step's plan (refresh_every > 1)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("profile_forward.py needs a CUDA device")
    device = torch.device("cuda")
    spec = SHAPES[args.shape]
    transformer = build_transformer(spec, False, device, torch.bfloat16)
    inputs = forward_inputs(spec, transformer, device, torch.bfloat16)
    register_backends()
    options = json.loads(args.options)
    with contextlib.ExitStack() as stack:
        stack.enter_context(sdpa_context(device, False))
        if args.method == "no_self_attention":
            stack.enter_context(processor_backend(transformer, NO_ATTENTION_BACKEND, True))
        elif args.method != "dense":
            swiftdit.enable_efficient_attention(transformer, args.method, **options)

        def forward(previous_step: bool = False):
            # Another timestep makes the runtime count a new denoising step (bench_speed's forward does the same).
            step_inputs = {**inputs, "timestep": inputs["timestep"] + 1} if previous_step else inputs
            with torch.no_grad():
                transformer(**step_inputs)

        def prepare():
            if args.reuse_step:
                swiftdit.attention_session(transformer).reset_call_state()
                forward(previous_step=True)

        for _ in range(args.warmup):
            prepare()
            forward()
        prepare()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
            started = time.perf_counter()
            forward()
            torch.cuda.synchronize()
            wall = time.perf_counter() - started
    events = [e for e in trace.key_averages() if e.device_time_total > 0]
    kernel_total = sum(e.self_device_time_total for e in events) / 1e6
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    step = " (reuse step)" if args.reuse_step else ""
    lines = [f"{args.shape} {args.method} {options}{step}: wall {wall:.4f} s (under the profiler), kernels "
             f"{kernel_total:.4f} s summed", "| ms total | calls | ms per call | kernel |", "|---|---|---|---|"]
    for e in events[: args.top]:
        ms = e.self_device_time_total / 1e3
        lines.append(f"| {ms:.2f} | {e.count} | {ms / max(e.count, 1):.3f} | {e.key[:110]} |")
    text = "\n".join(lines)
    print(text, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    label = args.method + ("-" + "-".join(f"{k}{v}" for k, v in options.items()) if options else "")
    label += "-reuse-step" if args.reuse_step else ""
    (out / f"{args.shape}-{label}.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
