# The ad-hoc script that measured benchmarks/results/rolling-cpu-switch-context-noise/*.json on the CPU (2026-11-22,
# 18:14-18:55 UTC, shipped weights step 12,945), run as: python switch_eval.py LABEL SCHEDULE NOISE PART 2 40
# (two processes at a time, one thread each; LABEL base = noise 0, n50 = 0.5, n80 = 0.8, r80 = rolling at 0.8).
"""Prompt switches on the CPU: new colour and direction within 2 chunks after the switch (24 held-out prompts)."""
import json, sys, time
import numpy as np
import torch
sys.path.insert(0, "/work/main/tests")
from benchmark_scripts import load_benchmark
from swiftdit.pipelines import load_pipeline, stream_video
from swiftdit.pipelines.adherence import judge
from swiftdit.pipelines.moving_shapes import held_out_prompts

label, schedule, noise, part, parts, frames = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
torch.set_num_threads(1)
bench = load_benchmark("bench_rolling")
pipe = load_pipeline(device="cpu")
pipe.set_progress_bar_config(disable=True)
class Args: pass
args = Args(); args.frames = frames; args.embedded_steps = 8; args.guidance_scale = 4.0
common, sink, window, video_chunk = bench.embedded_setup(args, pipe)
extra = {"switch_context_noise": noise} if noise > 0 else {}
prompts = held_out_prompts()[:24]
rows = []
for index in range(part, 24, parts):
    started = time.time()
    switch_frame, new_prompt = 32, prompts[(index + 1) % 24]
    video = np.stack(list(stream_video(pipe, [(0, prompts[index]), (switch_frame, new_prompt)], sink_frames=sink,
                                       window_frames=window, schedule=schedule,
                                       generator=torch.Generator("cpu").manual_seed(index),
                                       **dict(common, num_frames=switch_frame + 2 * video_chunk), **extra)))
    after = judge(video[switch_frame:switch_frame + 2 * video_chunk], new_prompt)
    row = {"index": index, "new_prompt": new_prompt, "color": after.color, "direction": after.direction,
           "seconds": time.time() - started}
    rows.append(row)
    print(label, row, flush=True)
json.dump(rows, open(f"/tmp/sw/{label}_{part}.json", "w"))
