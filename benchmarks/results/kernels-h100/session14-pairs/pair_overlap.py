"""How many distinct key blocks a pair of neighbouring query blocks keeps, over the sum of the two lists'
lengths, in the block patterns the methods plan on the embedded model (bench_kernels.pair_overlap): 1 means
they share nothing, 0.5 that they keep the same blocks. The Gluon forward's pairs walk loads each distinct
block once for both, so this is the share of the two-lane walk's K/V loads it keeps.

Runs on the CPU (session 14: no GPU was lent), one demo generation per method (the pipeline's defaults:
16 frames of 64 x 64, 30 steps), every plan of every layer and step; --height/--width/--frames/--steps
render larger videos than the model was trained on, to see how the overlap goes with more blocks:

    .venv/bin/python benchmarks/results/kernels-h100/session14-pairs/pair_overlap.py [--methods sparse sla]
    .venv/bin/python benchmarks/results/kernels-h100/session14-pairs/pair_overlap.py --height 128 --width 128 \
        --steps 10
"""

import argparse
import sys

sys.path.insert(0, "benchmarks")
from bench_kernels import pair_overlap  # noqa: E402

from swiftdit.api import attention_session, disable_efficient_attention, enable_efficient_attention  # noqa: E402
from swiftdit.demo import DEMO_PROMPT  # noqa: E402
from swiftdit.methods import available_methods  # noqa: E402
from swiftdit.pipelines import load_pipeline  # noqa: E402
from swiftdit.render import RenderRequest, generate  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--methods", nargs="+", default=["sparse", "sla"], choices=available_methods())
parser.add_argument("--height", type=int, default=None)
parser.add_argument("--width", type=int, default=None)
parser.add_argument("--frames", type=int, default=None)
parser.add_argument("--steps", type=int, default=None)
args = parser.parse_args()
request = RenderRequest(DEMO_PROMPT, num_frames=args.frames, height=args.height, width=args.width,
                        num_inference_steps=args.steps)
pipe = load_pipeline(None)
for method in args.methods:
    enable_efficient_attention(pipe, method)
    planner = attention_session(pipe).method
    planned = planner.plan
    masks = []

    def recording_plan(q, k, call):
        pattern = planned(q, k, call)
        masks.append(pattern.block_mask)
        return pattern

    planner.plan = recording_plan  # an instance attribute shadows the class's method
    try:
        generate(pipe, request)
    finally:
        del planner.plan
        disable_efficient_attention(pipe)
    density = sum(m.float().mean().item() for m in masks) / len(masks)
    overlap = sum(pair_overlap(m) for m in masks) / len(masks)
    run = request.resolved(pipe)
    print(f"{method} ({run.num_frames} frames of {run.height} x {run.width}, {run.num_inference_steps} steps): "
          f"{len(masks)} plans of {tuple(masks[0].shape)} blocks ({masks[0].shape[-1]} key blocks of "
          f"{planner.config.block_size} tokens), mean density {density:.3f}, mean pair overlap {overlap:.3f} "
          f"(random rows of that density: {1 - density / 2:.3f})")
