"""Rolling generation benchmark (issue 6): long streams of the embedded model, and Wan2.1-1.3B throughput.

Embedded model (assets/embedded_model), `--frames` frames per stream (default 512, 32x its training length):
- time per frame and peak memory per chunk past frame 64, from one stream per schedule and cache run alone:
  the largest deviation of one chunk's window from the mean, the deviation of a running median, and the
  trend (last quarter against first quarter);
- adherence on the last 16 frames (pipelines/adherence.py: colour and direction), one stream per prompt;
- drift over time against a no-sink sliding window of the same span: background colour error and object
  pixel count per 16-frame segment;
- prompt switching: is the new colour/direction detected within 2 chunks of the switch.
Wan2.1-T2V-1.3B architecture at random weights (speed does not depend on the weights): 480x832, 3-frame
chunks, 4 steps, 3 sink + 6 window latent frames (a 12-frame span with the chunk), bf16, frames counted after
decoding with AutoencoderKLWan at Wan2.1's config, over `--wan-latent-frames` latent frames (default 240); then
a 16-chunk stream timed with CUDA events splits a chunk's time into transformer forwards and VAE decode. Both
as the stream comes (eager) and after `compile_for_streaming` (`--wan-variants`).

    python benchmarks/bench_rolling.py --out bench_out --workers 12   # the full set (needs a GPU; the
                                                                      # per-prompt streams in 12 processes)
    python benchmarks/bench_rolling.py --out bench_out --quick    # a few prompts, short streams, a 2-layer Wan
Results go to <out>/rolling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

from swiftdit.pipelines import load_pipeline, stream_video
from swiftdit.pipelines.rolling import StreamConfig, compile_for_streaming, open_stream
from swiftdit.pipelines.adherence import detect, judge
from swiftdit.pipelines.moving_shapes import BACKGROUNDS, SIZES, held_out_prompts, parse_caption

from sdpa_backends import sdpa_context  # noqa: E402 (benchmarks/ is on sys.path when its scripts run)

SEGMENT_FRAMES = 16  # the adherence detector judges clips of the embedded model's training length
FLAT_FROM_FRAME = 64  # flatness is measured past the warm-up, as the issue asks

# Wan2.1-T2V-1.3B (B0 of the reference notes), and the streaming setup of LongLive's configs.
WAN_13B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
               text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
               qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)
WAN_TEXT_TOKENS = 512
WAN_STREAM = dict(chunk_frames=3, sink_frames=3, window_frames=6, num_inference_steps=4, guidance_scale=1.0)


def timed_stream(frames, device: torch.device, period: int, drain_frames: int = 0) -> dict:
    """Consume a frame generator; per `period` frames (one chunk's worth): seconds per frame and peak memory.

    A chunk's frames arrive together, so per-frame time is read over windows of one chunk period, which in
    steady state hold exactly one chunk's arrival wherever they start. The last `drain_frames` frames come
    while the window empties (under "rolling" no chunk enters after the last one, so the chunks in flight
    finish faster and faster): `steady` leaves the windows that reach into them out.
    """
    collected, arrivals, peaks = [], [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for frame in frames:  # a frame on the host is its own sync; a sync here would also drain the queued work
        collected.append(frame)
        arrivals.append(time.perf_counter() - started)
        peaks.append(torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
    arrivals, peaks = np.array(arrivals), np.array(peaks, dtype=float)
    windows = range(0, len(arrivals) - period, period)
    return {
        "frames": np.stack(collected),
        "total_seconds": float(arrivals[-1]),
        "window_start_frames": np.array(list(windows)),
        "seconds_per_frame": np.array([(arrivals[w + period] - arrivals[w]) / period for w in windows]),
        "peak_bytes": np.array([peaks[w:w + period].max() for w in windows]),
        "steady_end_frame": len(arrivals) - drain_frames - period,  # the last window start before the drain
    }


def steady(measured: dict, key: str, start_frame: int) -> np.ndarray:
    """The windows of `key` that start at or after `start_frame` (past the warm-up) and end before the
    stream's drain, if it has one."""
    starts = measured["window_start_frames"]
    end = measured.get("steady_end_frame", starts.max(initial=0))
    return measured[key][(starts >= start_frame) & (starts <= end)]


def flatness(measured: dict, key: str, start_frame: int) -> float | None:
    """Largest relative deviation from the mean of the windows past `start_frame` (0.05: within +-5%)."""
    tail = steady(measured, key, start_frame)
    if len(tail) == 0 or not tail.mean():
        return None
    return float(np.abs(tail / tail.mean() - 1).max())


def median_flatness(measured: dict, key: str, start_frame: int) -> float | None:
    """Largest relative deviation from the median of a running median over 5 windows (outliers filtered)."""
    tail = steady(measured, key, start_frame)
    if len(tail) < 5 or not np.median(tail):
        return None
    running = np.array([np.median(tail[i:i + 5]) for i in range(len(tail) - 4)])
    return float(np.abs(running / np.median(tail) - 1).max())


def trend(measured: dict, key: str, start_frame: int) -> float | None:
    """Mean of the last quarter of the windows past `start_frame` over the mean of the first quarter, minus 1:
    growth with the stream's length, which single slow windows (a collector pause) hardly move."""
    tail = steady(measured, key, start_frame)
    quarter = len(tail) // 4
    if quarter == 0 or not tail[:quarter].mean():
        return None
    return float(tail[-quarter:].mean() / tail[:quarter].mean() - 1)


def segment_drift(frames: np.ndarray, prompt: str) -> list[dict]:
    """Per 16-frame segment: background colour error (RGB distance in [0, 1] units) and object pixel count."""
    expected = parse_caption(prompt)
    background_rgb = np.array(BACKGROUNDS[expected.background]) / 255
    segments = []
    for start in range(0, len(frames) - SEGMENT_FRAMES + 1, SEGMENT_FRAMES):
        clip = frames[start:start + SEGMENT_FRAMES].astype(np.float32) / 255
        median = np.median(clip.reshape(-1, 3), axis=0)
        object_pixels = (np.linalg.norm(clip - median, axis=-1) > 0.25).sum(axis=(1, 2)).mean()
        segments.append({"start_frame": start, "background_error": float(np.linalg.norm(median - background_rgb)),
                         "object_pixels": float(object_pixels)})
    return segments


def embedded_setup(args, pipe) -> tuple[dict, int, int, int]:
    """Stream options shared by every embedded run, the sink and window sizes, and a chunk in video frames."""
    chunk = pipe.config.chunk_latent_frames
    video_chunk = chunk * pipe.transformer.config.patch_size[0]
    # A span of the training clip: one sink chunk, and a window filling the rest beside the chunk in flight.
    training_latent_frames = SEGMENT_FRAMES // pipe.transformer.config.patch_size[0]
    sink, window = chunk, training_latent_frames - 2 * chunk
    common = dict(num_frames=args.frames, chunk_frames=chunk, num_inference_steps=args.embedded_steps,
                  guidance_scale=args.guidance_scale)
    return common, sink, window, video_chunk


def schedule_options(args, schedule: str) -> dict:
    """The stream options of a schedule: `--rolling-chunks` applies under "rolling" only."""
    return dict(schedule=schedule, rolling_chunks=args.rolling_chunks if schedule == "rolling" else None)


def sink_variants(sink: int, window: int) -> tuple[tuple[str, int, int], ...]:
    """The attention-sink cache and a no-sink sliding window of the same span."""
    return ("sink", sink, window), ("no_sink", 0, sink + window)


def bench_embedded_timing(args, device: torch.device) -> dict:
    """Time per frame and peak memory of one stream per schedule and cache, alone on the device."""
    pipe = load_pipeline(device=device)
    pipe.set_progress_bar_config(disable=True)
    common, sink, window, video_chunk = embedded_setup(args, pipe)
    prompt = held_out_prompts()[0]
    timing = {}
    for schedule in args.schedules:
        for name, sink_frames, window_frames in sink_variants(sink, window):
            stream = open_stream(pipe, prompt, sink_frames=sink_frames, window_frames=window_frames,
                                 **schedule_options(args, schedule), generator=torch.Generator(device).manual_seed(0),
                                 **common)
            measured = timed_stream(stream.frames(), device, video_chunk,
                                    drain_frames=stream.config.chunks_in_flight * video_chunk)
            timing[f"{schedule}/{name}"] = {
                "prompt": prompt,
                "time_flatness": flatness(measured, "seconds_per_frame", FLAT_FROM_FRAME),
                "memory_flatness": flatness(measured, "peak_bytes", FLAT_FROM_FRAME),
                "time_trend": trend(measured, "seconds_per_frame", FLAT_FROM_FRAME),
                "memory_trend": trend(measured, "peak_bytes", FLAT_FROM_FRAME),
                "median_time_flatness": median_flatness(measured, "seconds_per_frame", FLAT_FROM_FRAME),
                "steady_ms_per_frame": float(steady(measured, "seconds_per_frame", FLAT_FROM_FRAME).mean() * 1e3),
                "ms_per_frame_by_window": [round(float(x) * 1e3, 3) for x in measured["seconds_per_frame"]],
                "peak_mib_by_window": [round(float(x) / 2**20, 2) for x in measured["peak_bytes"]],
                "window_start_frames": measured["window_start_frames"].tolist(),
                "steady_end_frame": measured["steady_end_frame"],
            }
            print(f"timing {schedule}/{name}: {timing[f'{schedule}/{name}']['steady_ms_per_frame']:.2f} ms/frame, "
                  f"time flatness {timing[f'{schedule}/{name}']['time_flatness']}, "
                  f"memory flatness {timing[f'{schedule}/{name}']['memory_flatness']}", flush=True)
    return {"config": dict(common, sink_frames=sink, window_frames=window), "timing": timing}


def bench_embedded_streams(args, device: torch.device, prompt_indices: list[int]) -> list[dict]:
    """Adherence at the end, drift over time and a prompt switch, per (schedule, prompt)."""
    pipe = load_pipeline(device=device)
    pipe.set_progress_bar_config(disable=True)
    common, sink, window, video_chunk = embedded_setup(args, pipe)
    prompts = held_out_prompts()[: args.prompts]
    rows = []
    for schedule in args.schedules:
        for index in prompt_indices:
            prompt = prompts[index]
            row = {"schedule": schedule, "prompt": prompt}
            for name, sink_frames, window_frames in sink_variants(sink, window):
                frames = np.stack(list(stream_video(pipe, prompt, sink_frames=sink_frames, window_frames=window_frames,
                                                    **schedule_options(args, schedule),
                                                    generator=torch.Generator(device).manual_seed(index), **common)))
                last = judge(frames[-SEGMENT_FRAMES:], prompt)
                row[name] = {"last_16": {"color": last.color, "direction": last.direction, "shape": last.shape},
                             "drift": segment_drift(frames, prompt)}
            row["switch"] = bench_switch(pipe, prompt, prompts[(index + 1) % len(prompts)],
                                         schedule_options(args, schedule), video_chunk,
                                         dict(common, num_frames=args.switch_frames,
                                              switch_context_noise=args.switch_context_noise),
                                         sink, window, device, index)
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("schedule", "prompt")} | {
                n: row[n]["last_16"] for n in ("sink", "no_sink")} | {"switch": row["switch"]}), flush=True)
    return rows


def bench_embedded(args, device: torch.device) -> dict:
    """Timing alone first (so that nothing else shares the device), then the streams, spread over
    `--workers` processes: each stream of this small model is bound by kernel launches, not by the GPU."""
    result = bench_embedded_timing(args, device)
    shards = [list(range(args.prompts))[worker::args.workers] for worker in range(args.workers)]
    if args.workers == 1:
        streams = bench_embedded_streams(args, device, shards[0])
    else:
        # Shard files go to a scratch folder: the device machine hands back only 8 files from --out.
        scratch = tempfile.mkdtemp(prefix="bench_rolling_")
        processes = []
        for worker, shard in enumerate(shards):
            shard_file = os.path.join(scratch, f"embedded_shard_{worker}.json")
            command = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--shard", *map(str, shard),
                       "--shard-file", shard_file]
            processes.append((subprocess.Popen(command), shard_file))
        streams = []
        for process, shard_file in processes:
            if process.wait() != 0:
                raise RuntimeError(f"embedded stream worker failed with exit code {process.returncode}")
            with open(shard_file) as file:
                streams += json.load(file)
    result["config"]["switch_frames"] = args.switch_frames
    result["config"]["switch_context_noise"] = args.switch_context_noise
    result["config"]["rolling_chunks"] = args.rolling_chunks
    result["streams"] = sorted(streams, key=lambda row: (row["schedule"], row["prompt"]))
    result["summary"] = summarize(result["streams"], result["timing"])
    return result


def bench_switch(pipe, prompt, new_prompt, schedule: dict, video_chunk, common, sink, window, device, seed) -> dict:
    """Switch half way (on a chunk boundary); judge the two chunks after the switch against the new prompt."""
    switch_frame = (common["num_frames"] // 2) // video_chunk * video_chunk
    frames = np.stack(list(stream_video(pipe, [(0, prompt), (switch_frame, new_prompt)], sink_frames=sink,
                                        window_frames=window, **schedule,
                                        generator=torch.Generator(device).manual_seed(seed), **common)))
    after = judge(frames[switch_frame:switch_frame + 2 * video_chunk], new_prompt)
    return {"new_prompt": new_prompt, "color": after.color, "direction": after.direction,
            "detected_background": detect(frames[switch_frame:switch_frame + 2 * video_chunk]).background}


def summarize(streams: list[dict], timing: dict) -> dict:
    summary = {}
    for schedule in sorted({row["schedule"] for row in streams}):
        rows = [row for row in streams if row["schedule"] == schedule]
        entry = {}
        for name in ("sink", "no_sink"):
            both = [r[name]["last_16"]["color"] and r[name]["last_16"]["direction"] for r in rows]
            entry[name] = {
                "last_16_color_and_direction": sum(both) / len(rows),
                "last_16_color": sum(r[name]["last_16"]["color"] for r in rows) / len(rows),
                "last_16_direction": sum(r[name]["last_16"]["direction"] for r in rows) / len(rows),
                "time_flatness": timing[f"{schedule}/{name}"]["time_flatness"],
                "median_time_flatness": timing[f"{schedule}/{name}"]["median_time_flatness"],
                "time_trend": timing[f"{schedule}/{name}"]["time_trend"],
                "memory_trend": timing[f"{schedule}/{name}"]["memory_trend"],
                "memory_flatness": timing[f"{schedule}/{name}"]["memory_flatness"],
                "steady_ms_per_frame": timing[f"{schedule}/{name}"]["steady_ms_per_frame"],
                "first_background_error": float(np.mean([r[name]["drift"][0]["background_error"] for r in rows])),
                "final_background_error": float(np.mean([r[name]["drift"][-1]["background_error"] for r in rows])),
                "first_object_pixels": float(np.mean([r[name]["drift"][0]["object_pixels"] for r in rows])),
                "final_object_pixels": float(np.mean([r[name]["drift"][-1]["object_pixels"] for r in rows])),
            }
        entry["switch_color_and_direction_within_2_chunks"] = sum(
            r["switch"]["color"] and r["switch"]["direction"] for r in rows) / len(rows)
        summary[schedule] = entry
    # What an object of each caption size covers, for reading the drift's object_pixels (squares: side^2).
    summary["reference_object_extent_px"] = dict(SIZES)
    return summary


class GpuTimer:
    """Accumulates the GPU time of marked regions with CUDA events (no host sync while the stream runs)."""

    def __init__(self):
        self.pairs: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def start(self) -> None:
        self.pairs.append((torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)))
        self.pairs[-1][0].record()

    def stop(self) -> None:
        self.pairs[-1][1].record()

    def seconds(self, skip: int = 0) -> float:
        torch.cuda.synchronize()
        return sum(begin.elapsed_time(end) for begin, end in self.pairs[skip:]) / 1000


def wan_time_breakdown(pipe, embeddings, args, device: torch.device, chunks: int = 16, warmup_chunks: int = 2) -> dict:
    """GPU seconds per chunk in the transformer forwards and in the VAE decode, from a shorter stream timed
    with CUDA events around each forward and each chunk's decode; the rest of a chunk's time is the host."""
    stream = open_stream(pipe, embeddings, 1 + pipe.vae.config.scale_factor_temporal * (chunks * 3 - 1),
                         height=args.wan_height, width=args.wan_width,
                         generator=torch.Generator(device).manual_seed(0), **WAN_STREAM)
    forwards, decodes = GpuTimer(), GpuTimer()
    hooks = [stream.transformer.register_forward_pre_hook(lambda *_: forwards.start()),
             stream.transformer.register_forward_hook(lambda *_: forwards.stop())]
    decoder, arrivals = stream.decoder, []
    decode, start_decode = decoder.decode, decoder.start_decode

    def timed_decode(samples):  # runs on the decoder's own CUDA stream, so the events are recorded there
        decodes.start()
        frames = decode(samples)
        decodes.stop()
        return frames

    def start_timed_decode(samples):
        decoded = start_decode(samples)
        frames = decoded.frames

        def arrived():  # a chunk's frames have arrived on the host when this returns
            result = frames()
            arrivals.append(time.perf_counter())
            return result

        decoded.frames = arrived
        return decoded

    decoder.decode, decoder.start_decode = timed_decode, start_timed_decode
    try:
        for _ in stream.frames():
            pass
    finally:
        for hook in hooks:
            hook.remove()
    measured = len(arrivals) - warmup_chunks
    forwards_per_chunk = len(forwards.pairs) / len(arrivals)
    return {
        "chunks_timed": measured,
        "wall_seconds_per_chunk": (arrivals[-1] - arrivals[warmup_chunks - 1]) / (measured - 1) if measured > 1 else None,
        "transformer_gpu_seconds_per_chunk": forwards.seconds(int(warmup_chunks * forwards_per_chunk)) / measured,
        # With the decode on its own stream, it overlaps the next chunk's forwards: the two GPU figures are
        # then spans that share the GPU, and their sum exceeds the wall time.
        "decode_gpu_seconds_per_chunk": decodes.seconds(warmup_chunks) / measured,
        "decode_overlaps_forwards": decoder.stream is not None,
        "forwards_per_chunk": forwards_per_chunk,
    }


def bench_wan(args, device: torch.device) -> dict:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    architecture = dict(WAN_13B, num_layers=2) if args.quick else WAN_13B
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(**architecture).to(device, dtype).eval()
    vae = AutoencoderKLWan().to(device, dtype).eval()
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
    embeddings = torch.randn(1, WAN_TEXT_TOKENS, WAN_13B["text_dim"], device=device, dtype=dtype)
    result = {
        "architecture": {k: v for k, v in architecture.items() if k != "patch_size"}, "stream": WAN_STREAM,
        "height": args.wan_height, "width": args.wan_width, "latent_frames": args.wan_latent_frames,
        "dtype": str(dtype), "sdpa": "cuDNN first" if device.type == "cuda" else "PyTorch default",
    }
    # Eager first: compiling is in place and cannot be undone.
    for variant in sorted(args.wan_variants, key=["eager", "compiled"].index):
        with sdpa_context(device, strict_cudnn=False):  # dense attention on the fastest SDPA kernel (bench_speed's)
            result[variant] = wan_stream_speed(pipe, embeddings, args, device, compiled=variant == "compiled")
        print(json.dumps({variant: result[variant]}, indent=1), flush=True)
    return result


def wan_stream_speed(pipe, embeddings, args, device: torch.device, compiled: bool) -> dict:
    vae = pipe.vae
    measured = {}
    if compiled:
        compile_for_streaming(pipe)
        # The compiler's work (every layout of the cache, the first chunk's decode) is done by streams that
        # fill the window, untimed apart from their total. Two of them: on the H100 the second stream still
        # recompiled parts of the VAE decoder before its first frame (48 s), the third none
        # (benchmarks/results/rolling-h100/session6/exploration/explore_recompiles.py).
        started = time.perf_counter()
        warmup_chunks = 2 + (WAN_STREAM["sink_frames"] + WAN_STREAM["window_frames"]) // WAN_STREAM["chunk_frames"]
        warmup_frames = 1 + vae.config.scale_factor_temporal * (warmup_chunks * WAN_STREAM["chunk_frames"] - 1)
        for seed in (1, 2):
            for _ in stream_video(pipe, embeddings, warmup_frames, height=args.wan_height, width=args.wan_width,
                                  generator=torch.Generator(device).manual_seed(seed), **WAN_STREAM):
                pass
        measured["compile_warmup_seconds"] = time.perf_counter() - started
    num_frames = 1 + vae.config.scale_factor_temporal * (args.wan_latent_frames - 1)
    stream = stream_video(pipe, embeddings, num_frames, height=args.wan_height, width=args.wan_width,
                          generator=torch.Generator(device).manual_seed(0), **WAN_STREAM)
    chunk_video_frames = vae.config.scale_factor_temporal * WAN_STREAM["chunk_frames"]
    # On CUDA a chunk is handed out when the next one is queued; the last has no next one and follows the one
    # before at once, so its window is not steady state.
    timed = timed_stream(stream, device, chunk_video_frames, drain_frames=chunk_video_frames)
    flat_from = min(FLAT_FROM_FRAME, num_frames // 2)
    measured.update({
        "video_frames": int(len(timed["frames"])),
        "fps_end_to_end": len(timed["frames"]) / timed["total_seconds"],
        "fps_past_warmup": float(1 / steady(timed, "seconds_per_frame", flat_from).mean()),
        "time_flatness": flatness(timed, "seconds_per_frame", flat_from),
        "memory_flatness": flatness(timed, "peak_bytes", flat_from),
        "peak_gib": float(timed["peak_bytes"].max() / 2**30),
        "per_window": {"start_frame": timed["window_start_frames"].tolist(),
                       "seconds_per_frame": timed["seconds_per_frame"].tolist(),
                       "peak_gib": (timed["peak_bytes"] / 2**30).tolist()},
    })
    if device.type == "cuda":
        measured["breakdown"] = wan_time_breakdown(pipe, embeddings, args, device, chunks=4 if args.quick else 16)
    return measured


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parts", nargs="+", default=["embedded", "wan"], choices=["embedded", "wan"])
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--schedules", nargs="+", default=["chunked", "rolling"], choices=["chunked", "rolling"])
    parser.add_argument("--embedded-steps", type=int, default=8)
    parser.add_argument("--rolling-chunks", type=int, default=None,
                        help="chunks in flight under 'rolling' (default: one per step; 2 keeps the embedded "
                             "model's attention span near its training clip, BENCHMARKS.md)")
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--switch-frames", type=int, default=128,
                        help="length of each prompt-switch stream (the switch comes half way)")
    parser.add_argument("--switch-context-noise", type=float, default=StreamConfig.switch_context_noise,
                        help="noise level of the context re-cached at a prompt switch (stream_video's option)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the embedded streams")
    parser.add_argument("--shard", type=int, nargs="+", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shard-file", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--wan-latent-frames", type=int, default=240)
    parser.add_argument("--wan-variants", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"],
                        help="the Wan stream as it comes, and after compile_for_streaming (minutes of compiling)")
    parser.add_argument("--wan-height", type=int, default=480)
    parser.add_argument("--wan-width", type=int, default=832)
    args = parser.parse_args()
    if args.quick:
        args.frames, args.prompts, args.switch_frames, args.wan_latent_frames = 96, 2, 32, 12
        args.wan_height, args.wan_width = 128, 128
    for name in ("frames", "prompts", "switch_frames", "workers", "embedded_steps", "wan_latent_frames"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    os.makedirs(args.out, exist_ok=True)
    if args.shard is not None:  # a worker process of bench_embedded
        with open(args.shard_file, "w") as file:
            json.dump(bench_embedded_streams(args, device, args.shard), file)
        return
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "quick": args.quick}
    # Each part's results are written as soon as it ends, so that a run cut short keeps what it measured.
    for part in ("wan", "embedded"):
        if part not in args.parts:
            continue
        try:
            results[part] = bench_wan(args, device) if part == "wan" else bench_embedded(args, device)
        except Exception as error:  # recorded, so that the other part still runs
            traceback.print_exc()
            results[part] = {"error": repr(error)}
        print(json.dumps(results[part].get("summary", results[part]), indent=1), flush=True)
        with open(os.path.join(args.out, "rolling.json"), "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
