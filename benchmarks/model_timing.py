"""Wall time of one default clip (16x64x64, dense attention) of the embedded model on the current device.

    python benchmarks/model_timing.py --threads 2 --output timing_cpu.json      # CI-like CPU
    python benchmarks/model_timing.py --output timing_cuda.json                 # best device
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from swiftdit.pipelines import EMBEDDED_MODEL_DIR, load_pipeline
from swiftdit.pipelines.pipeline_moving_shapes import GENERATION_MODES

PROMPT = "a red circle moving right on a black background"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def time_default_clip(pipe, repeats: int, **call_kwargs) -> list[float]:
    """Seconds per call, after one warm-up call that pays for lazy initialisation."""
    seconds = []
    for attempt in range(repeats + 1):
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        pipe(PROMPT, generator=torch.Generator(pipe.device).manual_seed(attempt), output_type="np", **call_kwargs)
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (CI's machine has 2 cores)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=list(GENERATION_MODES), choices=GENERATION_MODES)
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=DTYPES)
    parser.add_argument("--num-inference-steps", type=int, default=30, help="the pipeline default")
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    results = []
    for dtype_name in args.dtypes:
        pipe = load_pipeline(dtype=DTYPES[dtype_name])
        pipe.set_progress_bar_config(disable=True)
        for mode in args.modes:
            seconds = time_default_clip(pipe, args.repeats, num_inference_steps=args.num_inference_steps,
                                        guidance_scale=args.guidance_scale, generation_mode=mode)
            results.append({"dtype": dtype_name, "generation_mode": mode, "median_s": statistics.median(seconds),
                            "all_s": seconds})
            print(dtype_name, mode, f"median {statistics.median(seconds):.3f} s", flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu, {torch.get_num_threads()} threads"
    model_step = json.loads((EMBEDDED_MODEL_DIR / "training_log.json").read_text())["step"]
    # The machine may be shared: the 1-minute load average before and after says how busy it was.
    args.output.write_text(json.dumps({"device": device, "num_inference_steps": args.num_inference_steps,
                                       "guidance_scale": args.guidance_scale, "runs": results,
                                       "model_step": model_step,
                                       "load_average_before_after": [load_before[0], os.getloadavg()[0]]},
                                      indent=1))


if __name__ == "__main__":
    main()
