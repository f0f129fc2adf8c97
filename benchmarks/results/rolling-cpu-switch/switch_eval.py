# The ad-hoc script that measured benchmarks/results/rolling-cpu-switch/*.json on the CPU (2026-11-22, 13:12-13:36 UTC),
# run as: python switch_eval.py {new|old} {0|1} 2 64 (two processes at a time, one thread each).
"""Rolling-schedule prompt switches on the CPU: drain-first (new) against switching with chunks in flight (old)."""
import json, sys, time
import torch
sys.path.insert(0, "/work/main/tests")
from benchmark_scripts import load_benchmark
from swiftdit.pipelines import load_pipeline
from swiftdit.pipelines.moving_shapes import held_out_prompts
from swiftdit.pipelines import rolling

variant, part, parts, frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1)
if variant == "old":
    rolling.VideoStream._switch_due = lambda self, first_frame, upcoming: False
bench = load_benchmark("bench_rolling")
pipe = load_pipeline(device="cpu")
pipe.set_progress_bar_config(disable=True)

class Args: pass
args = Args(); args.frames = frames; args.embedded_steps = 8; args.guidance_scale = 4.0
common, sink, window, video_chunk = bench.embedded_setup(args, pipe)
prompts = held_out_prompts()[:24]
rows = []
for index in range(part, 24, parts):  # parts=2, part 0: the even prompts
    started = time.time()
    switch_frame, new_prompt = 32, prompts[(index + 1) % 24]
    from swiftdit.pipelines import stream_video
    from swiftdit.pipelines.adherence import judge
    import numpy as np
    video = np.stack(list(stream_video(pipe, [(0, prompts[index]), (switch_frame, new_prompt)], sink_frames=sink,
                                       window_frames=window, schedule="rolling",
                                       generator=torch.Generator("cpu").manual_seed(index),
                                       **dict(common, num_frames=switch_frame + 2 * video_chunk))))
    after = judge(video[switch_frame:switch_frame + 2 * video_chunk], new_prompt)
    row = {"new_prompt": new_prompt, "color": after.color, "direction": after.direction}
    row["seconds"] = time.time() - started
    rows.append(row)
    print(variant, index, row, flush=True)
json.dump(rows, open(f"/tmp/sw/{variant}_{part}.json", "w"))
