"""Prompt adherence of the embedded model on held-out prompts, in both generation modes, dense attention.

Every held-out prompt (a colour/shape/direction/background combination never seen in training) is generated
with each seed, all prompts of a seed in one batch, and judged by the adherence detector.

    python benchmarks/model_adherence.py --output adherence.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from swiftdit.pipelines import load_pipeline
from swiftdit.pipelines.adherence import detect, judge
from swiftdit.pipelines.moving_shapes import held_out_prompts
from swiftdit.pipelines.pipeline_moving_shapes import GENERATION_MODES

ATTRIBUTES = ("color", "shape", "direction")


def measure_adherence(pipe, prompts: list[str], seeds: list[int], mode: str, **call_kwargs) -> dict:
    records = []
    started = time.perf_counter()
    for seed in seeds:
        generator = torch.Generator(pipe.device).manual_seed(seed)
        videos = pipe(prompts, generator=generator, generation_mode=mode, output_type="np", **call_kwargs).frames
        for prompt, video in zip(prompts, videos):
            detection, judgement = detect(video), judge(video, prompt)
            records.append({"prompt": prompt, "seed": seed, "detected": [detection.color, detection.shape,
                                                                          detection.direction],
                            **{name: getattr(judgement, name) for name in ATTRIBUTES}})
    rates = {name: sum(r[name] for r in records) / len(records) for name in ATTRIBUTES}
    return {"mode": mode, "num_videos": len(records), "rates": rates,
            "seconds": time.perf_counter() - started, "records": records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", default=list(GENERATION_MODES), choices=GENERATION_MODES)
    parser.add_argument("--num-inference-steps", type=int, default=30, help="the pipeline default")
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    args = parser.parse_args()

    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    prompts = held_out_prompts()
    results = {"device": str(pipe.device), "num_prompts": len(prompts), "seeds": args.seeds,
               "num_inference_steps": args.num_inference_steps, "guidance_scale": args.guidance_scale,
               "modes": [measure_adherence(pipe, prompts, args.seeds, mode,
                                           num_inference_steps=args.num_inference_steps,
                                           guidance_scale=args.guidance_scale) for mode in args.modes]}
    args.output.write_text(json.dumps(results, indent=1))
    for mode in results["modes"]:
        print(mode["mode"], {k: round(v, 3) for k, v in mode["rates"].items()}, f"{mode['seconds']:.1f} s")


if __name__ == "__main__":
    main()
