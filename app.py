"""Web app: generate with a diffusers pipeline dense and with efficient attention, side by side; or stream a
video of any length with rolling generation (attention-sink KV cache), switching the prompt while it runs.

    python app.py                      # http://127.0.0.1:7860, the embedded model
    python app.py --host 0.0.0.0 --port 8000

Needs the `app` extra (`pip install -e ".[app]"`). The method controls are generated from each method's
config dataclass, so a new method or option appears here without touching this file. Generations and
streams run one at a time through Gradio's queue (one pipeline in memory, hooks installed per run); other
users wait in the queue. A prompt switch skips that queue: it only hands the new prompt to the running stream.
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
import time
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from swiftdit.api import disable_efficient_attention, enable_efficient_attention
from swiftdit.methods import available_methods
from swiftdit.pipelines import MovingShapesPipeline, load_pipeline
from swiftdit.pipelines.moving_shapes import FRAMES_PER_SECOND, ShapeClip, training_combinations
from swiftdit.pipelines.rolling import SCHEDULES, VideoStream, open_stream
from swiftdit.render import (
    DEFAULT_METHOD, Comparison, PatternProbe, RenderRequest, compare, method_options, parse_option_value,
    pipeline_call_defaults, write_video,
)
from swiftdit.visualize import render_block_pattern

DEFAULT_HOST = "127.0.0.1"  # local only unless the user asks for more
DEFAULT_PORT = 7860
QUEUE_SIZE = 16  # waiting generations beyond this are refused with a "queue full" message
EXAMPLE_PROMPT_COUNT = 6
PATTERN_IMAGE_PIXELS = 256  # the block map is drawn about this many pixels wide
EMBEDDED_MODEL_LABEL = "embedded moving-shapes model"
PIPELINE_CONCURRENCY = "pipeline"  # generations and streams share the one pipeline, so they take turns
OUT_OF_MEMORY = "out of memory: lower the frames, the size or the steps, or use a smaller model."
STREAM_METHOD = "dense"  # efficient attention inside the window is optional; plain attention is the baseline
STREAM_FRAMES = 64  # 8 seconds of the embedded model's video
# The embedded model's settings in benchmarks/bench_rolling.py: a sink chunk and this window (latent frames)
# span its 16-frame training clip beside the chunk in flight; 8 steps.
STREAM_WINDOW_FRAMES = 4
STREAM_STEPS = 8
STREAM_IMAGE_PIXELS = 256  # streamed frames are enlarged (nearest neighbour) to about this many pixels wide


class PipelineHolder:
    """The one loaded pipeline, reloaded when the user names another model."""

    def __init__(self):
        self.model: str | None = None
        self.pipe = None

    def get(self, model: str | None):
        if self.pipe is None or model != self.model:
            self.pipe = None  # free the previous model before loading the next
            self.pipe = load_pipeline(model)
            self.model = model
        return self.pipe


def example_prompts() -> list[str]:
    """Captions of the embedded model's training combinations, spread over colours, shapes and motions."""
    combinations = training_combinations()
    stride = len(combinations) // EXAMPLE_PROMPT_COUNT
    return [ShapeClip(*combinations[i * stride]).caption for i in range(EXAMPLE_PROMPT_COUNT)]


def option_control(method: str, option, id_prefix: str = "") -> gr.components.Component:
    """A control for one config field: its default, the docstring text with the allowed range, and an
    element id `PREFIXoption-METHOD-NAME` (tests and scripts find it by that)."""
    common = dict(label=option.name, info=option.help, elem_id=f"{id_prefix}option-{method}-{option.name}")
    if option.kind == "bool":
        return gr.Checkbox(value=option.default, **common)
    if option.kind == "choice":
        return gr.Dropdown(choices=list(option.choices), value=option.default, **common)
    if option.kind in ("int", "float"):
        return gr.Number(value=option.default, precision=0 if option.kind == "int" else None, **common)
    # Anything else (an int or a tuple of layers, a free string) is typed as a Python literal.
    return gr.Textbox(value=repr(option.default), **{**common, "label": f"{option.name} ({option.type_name})"})


class MethodControls:
    """A method dropdown and, per method, the controls of its options; only the chosen method's are shown.

    Each tab builds its own; `id_prefix` keeps their element ids apart (`PREFIXmethod`, `PREFIXoption-...`).
    """

    def __init__(self, methods: list[str], value: str, id_prefix: str = ""):
        self.dropdown = gr.Dropdown(methods, value=value, label="Method", elem_id=f"{id_prefix}method")
        self.inputs: list[gr.components.Component] = []  # every method's controls, in `self.keys` order
        self.keys = []  # (method, OptionSpec) of each control
        groups = []
        for name in methods:
            with gr.Group(visible=name == value) as group:
                for option in method_options(name):
                    self.inputs.append(option_control(name, option, id_prefix))
                    self.keys.append((name, option))
            groups.append(group)
        self.dropdown.change(lambda chosen: [gr.update(visible=name == chosen) for name in methods],
                             inputs=self.dropdown, outputs=groups)

    def options(self, method: str, values) -> dict:
        """`method`'s options from the values of `self.inputs`, typed literals parsed."""
        return {option.name: parse_option_value(value) if option.kind == "literal" else value
                for (owner, option), value in zip(self.keys, values) if owner == method}


def optional_int(name: str, text: str) -> int | None:
    """A whole number typed in the box labelled `name`; None where the box is empty."""
    if not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"'{name}' must be a whole number or empty, got {text!r}") from None


def enlarged(frame: np.ndarray) -> np.ndarray:
    """`frame` repeated pixel by pixel to about STREAM_IMAGE_PIXELS wide: the models' frames are tiny."""
    factor = max(1, STREAM_IMAGE_PIXELS // frame.shape[1])
    return frame.repeat(factor, axis=0).repeat(factor, axis=1)


def prompt_history(video_stream: VideoStream) -> str:
    """The prompts the stream put in force, each with the video frame it took effect at."""
    return "  \n".join(f"**from frame {start}**: {prompt}" for start, prompt in video_stream.applied_prompts)


def metrics_text(result: Comparison) -> str:
    density = "n/a (every attention call ran dense)" if result.mean_density is None else f"{result.mean_density:.3f}"
    lines = [f"**{result.method}**: {result.efficient.seconds:.2f} s"]
    if result.dense is not None:
        lines = [f"**dense**: {result.dense.seconds:.2f} s", *lines,
                 f"**speedup**: {result.speedup:.2f}x",
                 f"**PSNR** vs dense: {result.psnr:.2f} dB, **SSIM**: {result.ssim:.4f}"]
    lines.append(f"**attention density** (mean over {result.sparse_calls} sparse calls): {density}")
    return "  \n".join(lines)


def pattern_picture(result: Comparison, probe: PatternProbe):
    """(image, caption) of the probed block map, or (None, why there is none)."""
    where = f"layer {probe.layer}, head {probe.head}, step {probe.step}"
    if result.pattern is None:
        return None, f"No pattern at {where}: that step or layer ran dense (dense_steps / dense_layers), or the layer does not exist."
    image = render_block_pattern(result.pattern, head=probe.head,
                                 pixels_per_block=max(1, PATTERN_IMAGE_PIXELS // result.pattern.num_blocks))
    return image, f"Block map at {where}: rows are query blocks, columns key blocks; bright = computed."


def build_app(output_dir: Path) -> gr.Blocks:
    pipelines = PipelineHolder()
    defaults = pipeline_call_defaults(MovingShapesPipeline)
    stream_defaults = {name: p.default for name, p in inspect.signature(open_stream).parameters.items()}
    methods = available_methods()
    live_streams: dict[str, VideoStream] = {}  # the running stream of each browser session, for its prompt switch

    def load(model_name: str):
        """The pipeline named in the Model box; a ValueError naming the model where it cannot load."""
        model_id = model_name.strip() or None
        try:
            return pipelines.get(model_id)
        except Exception as error:  # missing folder, unreachable Hub, incompatible files
            raise ValueError(f"cannot load the model {model_id or EMBEDDED_MODEL_LABEL!r}: {error}") from error

    with gr.Blocks(title="swiftdit") as app:
        gr.Markdown("# swiftdit: efficient attention for diffusion transformers\n"
                    "Generate the same video with dense attention and with an efficient method, and compare; "
                    "or stream a long video chunk by chunk and switch its prompt as it goes.")
        model = gr.Textbox(label="Model", value="", elem_id="model",
                           placeholder=f"empty: the {EMBEDDED_MODEL_LABEL}; or a local folder / Hub id")
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column():
                    prompt = gr.Textbox(label="Prompt", value=example_prompts()[0], elem_id="prompt")
                    gr.Examples(example_prompts(), inputs=[prompt], label="Prompts the embedded model knows")
                    with gr.Row():
                        steps = gr.Number(label="Steps", value=defaults["num_inference_steps"], precision=0,
                                          minimum=1, elem_id="steps")
                        guidance = gr.Number(label="Guidance", value=defaults["guidance_scale"], minimum=0)
                        seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
                    with gr.Row():
                        frames = gr.Number(label="Frames", value=defaults["num_frames"], precision=0, minimum=1,
                                           elem_id="frames")
                        height = gr.Number(label="Height", value=defaults["height"], precision=0, minimum=1,
                                           elem_id="height")
                        width = gr.Number(label="Width", value=defaults["width"], precision=0, minimum=1,
                                          elem_id="width")
                    compare_dense = gr.Checkbox(label="Also run dense (side by side, speedup, PSNR/SSIM)", value=True)
                with gr.Column():
                    generate_method = MethodControls(methods, DEFAULT_METHOD)
                    gr.Markdown("Block map to show:")
                    with gr.Row():
                        layer = gr.Number(label="Layer", value=0, precision=0, minimum=0)
                        head = gr.Number(label="Head", value=0, precision=0, minimum=0)
                        step = gr.Number(label="Step (-1 = last)", value=-1, precision=0)
            generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
            status = gr.Markdown(elem_id="status")
            with gr.Row():
                dense_video = gr.Video(label="Dense", elem_id="dense-video", autoplay=True, loop=True)
                efficient_video = gr.Video(label="Efficient", elem_id="efficient-video", autoplay=True, loop=True)
            with gr.Row():
                metrics = gr.Markdown(elem_id="metrics")
                with gr.Column():
                    pattern_image = gr.Image(label="Attention block map", elem_id="pattern", type="numpy")
                    pattern_caption = gr.Markdown()

        # Gradio hands its Progress tracker only to a positional parameter whose default is a Progress, and the
        # method's option values vary in number: so the tracker comes first and the inputs are unpacked here.
        def run(progress=gr.Progress(track_tqdm=True), *inputs):
            (prompt_text, model_name, method_name, steps_value, guidance_value, seed_value, frames_value,
             height_value, width_value, with_dense, layer_value, head_value, step_value, *option_values) = inputs

            def failure(message: str):
                return None, None, "", None, "", f"**Error:** {message}"

            try:
                options = generate_method.options(method_name, option_values)
                request = RenderRequest(
                    prompt=prompt_text, seed=int(seed_value), num_frames=int(frames_value), height=int(height_value),
                    width=int(width_value), num_inference_steps=int(steps_value), guidance_scale=float(guidance_value))
                progress(0, desc="loading the model")
                pipe = load(model_name)
                probe = PatternProbe(layer=int(layer_value), head=int(head_value), step=int(step_value))
                result = compare(pipe, request, method_name, options, compare_dense=with_dense, probe=probe)
            except (ValueError, TypeError) as error:  # bad option or setting, named by the validators
                return failure(str(error))
            except (torch.OutOfMemoryError, MemoryError):
                return failure(OUT_OF_MEMORY)
            generation_dir = Path(tempfile.mkdtemp(dir=output_dir))  # one folder per generation: no name clashes
            efficient_path = write_video(generation_dir / "efficient.mp4", result.efficient.frames, FRAMES_PER_SECOND)
            dense_path = None if result.dense is None else write_video(
                generation_dir / "dense.mp4", result.dense.frames, FRAMES_PER_SECOND)
            image, caption = pattern_picture(result, probe)
            return (None if dense_path is None else str(dense_path), str(efficient_path), metrics_text(result),
                    image, caption, "Done.")

        generate_button.click(
            run,
            inputs=[prompt, model, generate_method.dropdown, steps, guidance, seed, frames, height, width,
                    compare_dense, layer, head, step, *generate_method.inputs],
            outputs=[dense_video, efficient_video, metrics, pattern_image, pattern_caption, status],
            concurrency_id=PIPELINE_CONCURRENCY,
        )

        with gr.Tab("Stream"):
            gr.Markdown("Rolling generation: the video is made chunk by chunk, each chunk attending to a KV cache "
                        "of sink + window frames, so it can run for any length at a steady cost per frame. "
                        "Frames show as they are made; a prompt switch takes effect at the next chunk, with "
                        "the cache recomputed under the new prompt. Sink, window and chunk sizes count latent "
                        "frames.")
            with gr.Row():
                with gr.Column():
                    # The numbers have no bounds here: the stream's validators name the option in the page,
                    # where Gradio's bounds check would raise a pop-up that names no box.
                    stream_prompt = gr.Textbox(label="Prompt", value=example_prompts()[0], elem_id="stream-prompt")
                    gr.Examples(example_prompts(), inputs=[stream_prompt], label="Prompts the embedded model knows")
                    with gr.Row():
                        stream_frames = gr.Number(label="Frames", value=STREAM_FRAMES, precision=0,
                                                  elem_id="stream-frames")
                        stream_steps = gr.Number(label="Steps", value=STREAM_STEPS, precision=0,
                                                 elem_id="stream-steps")
                        stream_guidance = gr.Number(label="Guidance", value=defaults["guidance_scale"])
                        stream_seed = gr.Number(label="Seed", value=0, precision=0)
                    with gr.Row():
                        stream_height = gr.Number(label="Height", value=defaults["height"], precision=0,
                                                  elem_id="stream-height")
                        stream_width = gr.Number(label="Width", value=defaults["width"], precision=0,
                                                 elem_id="stream-width")
                    # Text boxes, as "empty" (the stream's own default) must stay apart from 0: Gradio sends
                    # an empty Number box as 0.
                    with gr.Row():
                        chunk_frames = gr.Textbox(label="Chunk frames", value="", placeholder="the model's own",
                                                  elem_id="stream-chunk-frames")
                        sink_frames = gr.Textbox(label="Sink frames", value="", placeholder="one chunk",
                                                 elem_id="stream-sink-frames")
                        window_frames = gr.Textbox(label="Window frames", value=str(STREAM_WINDOW_FRAMES),
                                                   placeholder="unbounded", elem_id="stream-window-frames")
                    schedule = gr.Radio(list(SCHEDULES), value=stream_defaults["schedule"], label="Schedule",
                                        info="chunked: one chunk in flight (Self-Forcing); rolling: one per step "
                                             "at staggered noise levels (Rolling Forcing)", elem_id="stream-schedule")
                with gr.Column():
                    stream_method = MethodControls(methods, STREAM_METHOD, id_prefix="stream-")
            start_button = gr.Button("Start", variant="primary", elem_id="stream-start")
            with gr.Row():
                with gr.Column():
                    stream_image = gr.Image(label="Stream", elem_id="stream-frame", type="numpy", format="png")
                    stream_progress = gr.Markdown(elem_id="stream-progress")
                with gr.Column():
                    stream_status = gr.Markdown(elem_id="stream-status")
                    new_prompt = gr.Textbox(label="New prompt", value=example_prompts()[-1], elem_id="switch-prompt")
                    switch_button = gr.Button("Switch prompt", elem_id="switch")
                    switch_status = gr.Markdown(elem_id="switch-status")

        # Gradio passes the request only to a positional parameter, hence first, before the option values.
        def run_stream(request: gr.Request, prompt_text, model_name, method_name, frames_value, steps_value,
                       guidance_value, seed_value, height_value, width_value, chunk_value, sink_value, window_value,
                       schedule_name, *option_values):
            """Yields (frame, frame counter, prompts in force and state) as the stream makes frames."""
            try:
                options = stream_method.options(method_name, option_values)
                num_frames = int(frames_value)
                video_stream = open_stream(
                    load(model_name), prompt_text, num_frames,
                    window_frames=optional_int("Window frames", window_value),
                    sink_frames=optional_int("Sink frames", sink_value),
                    chunk_frames=optional_int("Chunk frames", chunk_value), schedule=schedule_name,
                    num_inference_steps=int(steps_value),
                    guidance_scale=float(guidance_value), height=int(height_value), width=int(width_value),
                    generator=torch.Generator().manual_seed(int(seed_value)))
                enable_efficient_attention(video_stream.pipe, method_name, **options)
            except (ValueError, TypeError) as error:  # bad option or setting, named by the validators
                yield None, "", f"**Error:** {error}"
                return
            live_streams[request.session_hash] = video_stream
            start = time.perf_counter()
            made = 0
            try:
                for made, frame in enumerate(video_stream.frames(), start=1):
                    rate = made / (time.perf_counter() - start)
                    yield (enlarged(frame), f"**Frame {made} / {num_frames}**, {rate:.1f} frames/s",
                           prompt_history(video_stream))
                ending = "Done."
            except (torch.OutOfMemoryError, MemoryError):
                ending = f"**Error** after {made} frames: {OUT_OF_MEMORY}"
            finally:
                del live_streams[request.session_hash]
                disable_efficient_attention(video_stream.pipe)
            yield gr.update(), gr.update(), f"{prompt_history(video_stream)}  \n{ending}"

        def switch_prompt(prompt_text, request: gr.Request) -> str:
            video_stream = live_streams.get(request.session_hash)
            if video_stream is None:
                return "No stream is running: press Start first."
            video_stream.switch_prompt(prompt_text)
            return f"Switching to *{prompt_text}* at the next chunk that starts."

        start_button.click(
            run_stream,
            inputs=[stream_prompt, model, stream_method.dropdown, stream_frames, stream_steps, stream_guidance,
                    stream_seed, stream_height, stream_width, chunk_frames, sink_frames, window_frames, schedule,
                    *stream_method.inputs],
            outputs=[stream_image, stream_progress, stream_status],
            concurrency_id=PIPELINE_CONCURRENCY,
        )
        # No limit and a group of its own: a switch must reach the stream while the stream holds the pipeline.
        switch_button.click(switch_prompt, inputs=[new_prompt], outputs=[switch_status], concurrency_limit=None)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="swiftdit web app")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    output_dir = Path(tempfile.mkdtemp(prefix="swiftdit-app-"))
    app = build_app(output_dir)
    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    app.launch(server_name=args.host, server_port=args.port, allowed_paths=[str(output_dir)])


if __name__ == "__main__":
    main()
