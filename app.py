"""Web app: generate with a diffusers pipeline dense and with efficient attention, side by side.

    python app.py                      # http://127.0.0.1:7860, the embedded model
    python app.py --host 0.0.0.0 --port 8000

Needs the `app` extra (`pip install -e ".[app]"`). The method controls are generated from each method's
config dataclass, so a new method or option appears here without touching this file. Generations run one
at a time through Gradio's queue (one pipeline in memory, hooks installed per generation); other users
wait in the queue.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import gradio as gr
import torch

from swiftdit.methods import available_methods
from swiftdit.pipelines import MovingShapesPipeline, load_pipeline
from swiftdit.pipelines.moving_shapes import FRAMES_PER_SECOND, ShapeClip, training_combinations
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


def option_control(method: str, option) -> gr.components.Component:
    """A control for one config field: its default, the docstring text with the allowed range, and an
    element id `option-METHOD-NAME` (tests and scripts find it by that)."""
    common = dict(label=option.name, info=option.help, elem_id=f"option-{method}-{option.name}")
    if option.kind == "bool":
        return gr.Checkbox(value=option.default, **common)
    if option.kind == "choice":
        return gr.Dropdown(choices=list(option.choices), value=option.default, **common)
    if option.kind in ("int", "float"):
        return gr.Number(value=option.default, precision=0 if option.kind == "int" else None, **common)
    # Anything else (an int or a tuple of layers, a free string) is typed as a Python literal.
    return gr.Textbox(value=repr(option.default), **{**common, "label": f"{option.name} ({option.type_name})"})


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
    methods = available_methods()
    options_by_method = {method: method_options(method) for method in methods}

    with gr.Blocks(title="swiftdit") as app:
        gr.Markdown("# swiftdit: efficient attention for diffusion transformers\n"
                    "Generate the same video with dense attention and with an efficient method, and compare.")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", value=example_prompts()[0], elem_id="prompt")
                gr.Examples(example_prompts(), inputs=[prompt], label="Prompts the embedded model knows")
                model = gr.Textbox(label="Model", value="", elem_id="model",
                                   placeholder=f"empty: the {EMBEDDED_MODEL_LABEL}; or a local folder / Hub id")
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
                method = gr.Dropdown(methods, value=DEFAULT_METHOD, label="Method", elem_id="method")
                option_groups, option_inputs, option_keys = [], [], []
                for name in methods:
                    with gr.Group(visible=name == DEFAULT_METHOD) as group:
                        for option in options_by_method[name]:
                            control = option_control(name, option)
                            option_inputs.append(control)
                            option_keys.append((name, option))
                    option_groups.append(group)
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

        method.change(lambda chosen: [gr.update(visible=name == chosen) for name in methods],
                      inputs=method, outputs=option_groups)

        def run(prompt_text, model_name, method_name, steps_value, guidance_value, seed_value, frames_value,
                height_value, width_value, with_dense, layer_value, head_value, step_value, *option_values,
                progress=gr.Progress(track_tqdm=True)):
            def failure(message: str):
                return None, None, "", None, "", f"**Error:** {message}"

            options = {}
            try:
                for (owner, option), value in zip(option_keys, option_values):
                    if owner == method_name:
                        options[option.name] = parse_option_value(value) if option.kind == "literal" else value
                request = RenderRequest(
                    prompt=prompt_text, seed=int(seed_value), num_frames=int(frames_value), height=int(height_value),
                    width=int(width_value), num_inference_steps=int(steps_value), guidance_scale=float(guidance_value))
                progress(0, desc="loading the model")
                model_id = model_name.strip() or None
                try:
                    pipe = pipelines.get(model_id)
                except Exception as error:  # missing folder, unreachable Hub, incompatible files
                    return failure(f"cannot load the model {model_id or EMBEDDED_MODEL_LABEL!r}: {error}")
                probe = PatternProbe(layer=int(layer_value), head=int(head_value), step=int(step_value))
                result = compare(pipe, request, method_name, options, compare_dense=with_dense, probe=probe)
            except (ValueError, TypeError) as error:  # bad option or setting, named by the validators
                return failure(str(error))
            except (torch.OutOfMemoryError, MemoryError):
                return failure("out of memory: lower the frames, the size or the steps, or use a smaller model.")
            generation_dir = Path(tempfile.mkdtemp(dir=output_dir))  # one folder per generation: no name clashes
            efficient_path = write_video(generation_dir / "efficient.mp4", result.efficient.frames, FRAMES_PER_SECOND)
            dense_path = None if result.dense is None else write_video(
                generation_dir / "dense.mp4", result.dense.frames, FRAMES_PER_SECOND)
            image, caption = pattern_picture(result, probe)
            return (None if dense_path is None else str(dense_path), str(efficient_path), metrics_text(result),
                    image, caption, "Done.")

        generate_button.click(
            run,
            inputs=[prompt, model, method, steps, guidance, seed, frames, height, width, compare_dense, layer, head,
                    step, *option_inputs],
            outputs=[dense_video, efficient_video, metrics, pattern_image, pattern_caption, status],
        )
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
