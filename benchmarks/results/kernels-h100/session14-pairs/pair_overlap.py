"""How many distinct key blocks a pair of neighbouring query blocks keeps, over the sum of the two lists'
lengths, in the block patterns the methods plan on the embedded model (bench_kernels.pair_overlap): 1 means
they share nothing, 0.5 that they keep the same blocks. The Gluon forward's pairs walk loads each distinct
block once for both, so this is the share of the two-lane walk's K/V loads it keeps.

Runs on the CPU (session 14: no GPU was lent), one 30-step demo generation per method, every plan of every
layer and step:

    .venv/bin/python benchmarks/results/kernels-h100/session14-pairs/pair_overlap.py [--methods sparse sla]
"""

import argparse
import sys

sys.path.insert(0, "benchmarks")
from bench_kernels import pair_overlap  # noqa: E402

from swiftdit.api import attention_session, disable_efficient_attention, enable_efficient_attention  # noqa: E402
from swiftdit.demo import DEMO_PROMPT  # noqa: E402
from swiftdit.pipelines import load_pipeline  # noqa: E402
from swiftdit.render import RenderRequest, generate  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--methods", nargs="+", default=["sparse", "sla"])
args = parser.parse_args()
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
        generate(pipe, RenderRequest(DEMO_PROMPT))
    finally:
        del planner.plan
        disable_efficient_attention(pipe)
    density = sum(m.float().mean().item() for m in masks) / len(masks)
    overlap = sum(pair_overlap(m) for m in masks) / len(masks)
    print(f"{method}: {len(masks)} plans of {tuple(masks[0].shape)} blocks ({masks[0].shape[-1]} key blocks of "
          f"{planner.config.block_size} tokens), mean density {density:.3f}, mean pair overlap {overlap:.3f} "
          f"(random rows of that density: {1 - density / 2:.3f})")
