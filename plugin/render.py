"""What the web app, the batch CLI and the demo share: render one prompt dense and with an efficient method,
compare the two videos (PSNR/SSIM), capture the block pattern of one layer, write mp4 files atomically, and
describe a method's options from its config dataclass.

Only torch, numpy and imageio are imported here, so `import swiftdit` stays light; the app's Gradio code
lives in app.py at the repository root.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import math
import os
import re
import tempfile
import time
import typing
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .api import attention_session, disable_efficient_attention, enable_efficient_attention
from .methods import build_method, method_class
from .pattern import BlockPattern

# The method `enable_efficient_attention` uses when none is named; the app, CLI and demo start from it.
DEFAULT_METHOD: str = inspect.signature(enable_efficient_attention).parameters["method"].default

# SSIM as Wang et al. (2004) define it: an 11x11 Gaussian window of sigma 1.5 and the constants K1, K2 on
# images in [0, 1].
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03

# libx264's yuv420p output needs even frame sizes; imageio pads other sizes up to this multiple.
VIDEO_MACRO_BLOCK = 2


# -- one generation --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RenderRequest:
    """The settings of one video; `None` fields take the pipeline's own defaults (its `__call__` signature)."""

    prompt: str
    seed: int = 0
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None

    def resolved(self, pipe) -> "RenderRequest":
        """This request with every unset field filled from the pipeline's call defaults."""
        defaults = pipeline_call_defaults(pipe)
        filled = {name: defaults.get(name) if getattr(self, name) is None else getattr(self, name)
                  for name in ("num_frames", "height", "width", "num_inference_steps", "guidance_scale")}
        return dataclasses.replace(self, **filled)


@dataclasses.dataclass
class Generation:
    frames: np.ndarray  # (frames, height, width, 3) float32 in [0, 1]
    seconds: float  # wall time of the pipeline call


@dataclasses.dataclass
class Comparison:
    """Dense and efficient generations of one request, and what the efficient run did."""

    request: RenderRequest
    method: str
    options: dict[str, Any]
    efficient: Generation
    dense: Generation | None = None
    sparse_calls: int = 0
    mean_density: float | None = None  # over the sparse attention calls; None when every call ran dense
    pattern: BlockPattern | None = None  # the one `PatternProbe` asked for, if any

    @property
    def speedup(self) -> float | None:
        return None if self.dense is None else self.dense.seconds / self.efficient.seconds

    @property
    def psnr(self) -> float | None:
        return None if self.dense is None else psnr(self.dense.frames, self.efficient.frames)

    @property
    def ssim(self) -> float | None:
        return None if self.dense is None else ssim(self.dense.frames, self.efficient.frames)


def pipeline_call_defaults(pipe) -> dict[str, Any]:
    """Keyword defaults of the pipeline's (an instance or a class) `__call__` (frames, size, steps, guidance) as its authors chose them."""
    pipeline_class = pipe if isinstance(pipe, type) else type(pipe)
    return {name: p.default for name, p in inspect.signature(pipeline_class.__call__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def generate(pipe, request: RenderRequest) -> Generation:
    """Run the pipeline once for `request` (resolved first) and time it.

    Video pipelines get `num_frames` and return `.frames`; an image pipeline (Flux, SD3) returns a
    one-frame video.
    """
    request = request.resolved(pipe)
    kwargs = _call_kwargs(pipe, request, prompt=request.prompt, generator=torch.Generator().manual_seed(request.seed))
    start = time.perf_counter()
    output = pipe(**kwargs)
    seconds = time.perf_counter() - start
    return Generation(frames=_output_video(pipe, output, 0), seconds=seconds)


def generate_batch(pipe, requests: list[RenderRequest]) -> list[Generation]:
    """Run the pipeline once for several requests that differ only in prompt and seed.

    The call gets the list of prompts and one seeded `torch.Generator` per request, so that each video
    starts from the noise `generate(pipe, request)` would draw: diffusers' pipelines (the embedded one
    included) draw video i's noise from generator i alone. The videos then match unbatched calls up to
    floating-point differences of the batched kernels. One request is exactly `generate`. Each
    Generation's `seconds` is the call's wall time divided by the number of requests.
    """
    if not requests:
        return []
    resolved = [request.resolved(pipe) for request in requests]
    if len(resolved) == 1:
        return [generate(pipe, resolved[0])]
    settings = {dataclasses.replace(request, prompt="", seed=0) for request in resolved}
    if len(settings) > 1:
        raise ValueError("generate_batch: the requests of one batch may differ only in prompt and seed, got "
                         f"{len(settings)} different settings")
    kwargs = _call_kwargs(pipe, resolved[0], prompt=[request.prompt for request in resolved],
                          generator=[torch.Generator().manual_seed(request.seed) for request in resolved])
    start = time.perf_counter()
    output = pipe(**kwargs)
    seconds = (time.perf_counter() - start) / len(resolved)
    return [Generation(frames=_output_video(pipe, output, index), seconds=seconds) for index in range(len(resolved))]


def _is_video_pipeline(pipe) -> bool:
    return "num_frames" in inspect.signature(type(pipe).__call__).parameters


def _call_kwargs(pipe, request: RenderRequest, *, prompt, generator) -> dict[str, Any]:
    """Pipeline call arguments of a resolved request, with the given prompt(s) and generator(s)."""
    kwargs = {"prompt": prompt, "height": request.height, "width": request.width,
              "num_inference_steps": request.num_inference_steps, "guidance_scale": request.guidance_scale,
              "generator": generator, "output_type": "np"}
    if _is_video_pipeline(pipe):
        kwargs["num_frames"] = request.num_frames
    return kwargs


def _output_video(pipe, output, index: int) -> np.ndarray:
    """Video `index` of a pipeline output as (frames, H, W, 3) float32; an image is a one-frame video."""
    video = output.frames[index] if _is_video_pipeline(pipe) else output.images[index:index + 1]
    return np.asarray(video, dtype=np.float32)


class PatternProbe:
    """Keeps the block pattern one layer uses at one step of the next efficient generation.

    The runtime drops its plans when a pipeline call ends, so the probe wraps the method's `plan` while the
    generation runs. A plan is reused until the next refresh and a static plan (radial, CLEAR) is made once
    for all layers, so the pattern in use at a step is the latest plan made at or before it.
    step: 0-based denoising step, negative counts from the end (-1 = last).
    """

    def __init__(self, layer: int = 0, head: int = 0, step: int = -1):
        self.layer, self.head, self.step = layer, head, step
        self.plans: dict[int, BlockPattern] = {}  # planning step -> pattern of the first CFG branch
        self.num_steps: int | None = None

    @contextlib.contextmanager
    def attached(self, pipe):
        method = attention_session(pipe).method
        original_plan = method.plan

        def recording_plan(q, k, call):
            pattern = original_plan(q, k, call)
            if method.static_pattern or call.layer_index == self.layer:
                self.plans.setdefault(call.step.step_index, pattern)
                self.num_steps = call.step.num_steps
            return pattern

        method.plan = recording_plan  # an instance attribute shadows the class's method
        try:
            yield self
        finally:
            del method.plan

    def pattern(self, num_steps: int) -> BlockPattern | None:
        step = self.step + num_steps if self.step < 0 else self.step
        planned = [s for s in self.plans if s <= step]
        return self.plans[max(planned)] if planned else None


# Pipelines that already ran once in this process: the first call pays one-time setup (allocator, thread
# pools, lazy imports: several times a later call on the CPU, seen with the embedded model), which would count
# against whichever run goes first.
_warmed_up: weakref.WeakSet = weakref.WeakSet()


def warm_up(pipe, request: RenderRequest) -> None:
    """One untimed single-step dense generation of `request`, once per pipeline."""
    if pipe not in _warmed_up:
        generate(pipe, dataclasses.replace(request, num_inference_steps=1))
        _warmed_up.add(pipe)


def compare(pipe, request: RenderRequest, method: str = DEFAULT_METHOD, options: dict[str, Any] | None = None,
            *, compare_dense: bool = True, probe: PatternProbe | None = None) -> Comparison:
    """Generate `request` with `method` (and first dense when `compare_dense`), leaving `pipe` dense after.

    The options are validated before anything runs, so a bad option costs no generation.
    """
    options = dict(options or {})
    build_method(method, options)
    request = request.resolved(pipe)
    disable_efficient_attention(pipe)
    warm_up(pipe, request)
    dense = generate(pipe, request) if compare_dense else None
    enable_efficient_attention(pipe, method, **options)
    try:
        with probe.attached(pipe) if probe is not None else contextlib.nullcontext():
            efficient = generate(pipe, request)
        summary = attention_session(pipe).density_summary()
    finally:
        disable_efficient_attention(pipe)
    return Comparison(
        request=request, method=method, options=options, efficient=efficient, dense=dense,
        sparse_calls=summary["sparse_calls"], mean_density=summary["mean_density"],
        pattern=None if probe is None else probe.pattern(request.num_inference_steps),
    )


# -- differences between two videos ---------------------------------------------------------------------
def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two videos in [0, 1]; inf when they are identical."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(test, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean structural similarity of two (frames, H, W, C) videos in [0, 1], per frame and channel."""
    x = torch.as_tensor(np.asarray(reference), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(test), dtype=torch.float64)
    # (frames, H, W, C) -> (frames * C, 1, H, W): every frame channel is one grey image.
    x, y = (t.permute(0, 3, 1, 2).reshape(-1, 1, *t.shape[1:3]) for t in (x, y))
    size = min(SSIM_WINDOW, x.shape[-2], x.shape[-1])
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    gauss = torch.exp(-coords**2 / (2 * SSIM_SIGMA**2))
    gauss /= gauss.sum()
    # The window is separable: filtering with it ("valid" positions only, as a conv2d with the 2-D window)
    # is rows @ image @ columns^T with banded matrices, a float64 matmul many times faster on the CPU than a
    # float64 conv2d (which made SSIM the slowest step of the quality benchmark).
    rows, columns = _valid_filter_matrix(gauss, x.shape[-2]), _valid_filter_matrix(gauss, x.shape[-1])

    def local_mean(t):
        return rows @ t @ columns.T

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov = local_mean(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


def _valid_filter_matrix(kernel: torch.Tensor, length: int) -> torch.Tensor:
    """(length - k + 1, length) matrix whose product with a signal is its correlation with `kernel` at every
    position where the kernel fits (conv2d's default padding 0)."""
    positions = length - kernel.numel() + 1
    matrix = torch.zeros(positions, length, dtype=kernel.dtype)
    taps = torch.arange(positions)[:, None] + torch.arange(kernel.numel())[None, :]
    return matrix.scatter_(1, taps, kernel.expand(positions, -1))


# -- files -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path` with the same suffix; rename it to `path` only on success, so
    that a reader (or a resumed batch) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_video(path: Path, frames: np.ndarray, fps: float) -> Path:
    """Write (frames, H, W, 3) floats in [0, 1] as an H.264 mp4 (imageio-ffmpeg), atomically."""
    import imageio.v2 as imageio

    pixels = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
    with atomic_path(path) as temporary:
        with imageio.get_writer(temporary, format="FFMPEG", fps=fps, codec="libx264",
                                macro_block_size=VIDEO_MACRO_BLOCK) as writer:
            for frame in pixels:
                writer.append_data(frame)
    return Path(path)


# -- method options ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One field of a method's config dataclass, as the app and `swiftdit methods` present it."""

    name: str
    kind: str  # "bool", "int", "float", "choice" or "literal" (any Python literal, e.g. a tuple)
    type_name: str  # the annotation as written, e.g. "int | tuple[int, ...]"
    default: Any
    choices: tuple[Any, ...] = ()
    help: str = ""  # the config docstring's description, which states the allowed range


def method_options(method: str) -> list[OptionSpec]:
    """The options of `method` from its config dataclass: type, default, choices (Literal types) and the
    docstring text that documents each, the most derived class's note first (a subclass's docstring often
    only restates a default, its base explains the option and its range)."""
    config_class = method_class(method).Config
    hints = typing.get_type_hints(config_class)
    names = [field.name for field in dataclasses.fields(config_class)]
    notes: dict[str, list[str]] = {name: [] for name in names}
    for cls in config_class.__mro__:
        for name, text in _field_docs(cls.__doc__ or "", names).items():
            notes[name].append(text)
    specs = []
    for field in dataclasses.fields(config_class):
        hint = hints[field.name]
        if typing.get_origin(hint) is typing.Literal:
            kind, choices = "choice", typing.get_args(hint)
        else:
            kind, choices = {bool: "bool", int: "int", float: "float"}.get(hint, "literal"), ()
        type_name = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
        specs.append(OptionSpec(field.name, kind, type_name, field.default, choices, " ".join(notes[field.name])))
    return specs


def _field_docs(docstring: str, names: list[str]) -> dict[str, str]:
    """Descriptions of the given option names in a config docstring.

    Entries read "name: text" (or "a, b: text" for several), at a line start or after a sentence, and run
    until the next entry or a blank line.
    """
    name = "(?:" + "|".join(map(re.escape, names)) + ")"
    entry = re.compile(rf"(?:^|(?<=\. ))({name}(?:, {name})*): ")
    docs: dict[str, str] = {}
    for paragraph in inspect.cleandoc(docstring).split("\n\n"):
        text = " ".join(line.strip() for line in paragraph.splitlines())
        starts = list(entry.finditer(text))
        for match, following in zip(starts, starts[1:] + [None]):
            description = text[match.end():following.start() if following else len(text)].strip()
            for option in match.group(1).split(", "):
                docs[option] = description
    return docs


def parse_option_value(text: str) -> Any:
    """A Python literal when `text` is one (0.2, 3, True, (0, 1)), else the text itself ("hilbert")."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings to an options dict; raises ValueError naming a malformed pair."""
    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"an option must be KEY=VALUE, got {pair!r}")
        options[key.strip()] = parse_option_value(value)
    return options
