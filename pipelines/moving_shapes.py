"""Procedural training data of the embedded model: clips of one filled shape moving on a flat background.

Every clip is described by a `ShapeClip` (what to draw) and rendered by `render_clips` (how it looks), so the
same description serves as the caption, as the ground truth of the adherence detector and as the key of the
train/held-out split. Rendering is vectorised in torch so that a training batch is drawn on the GPU in
microseconds instead of being read from disk.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from typing import Sequence

import torch

from swiftdit.validation import check_choice, check_float, check_int

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 230),
    "yellow": (240, 220, 40),
    "magenta": (220, 60, 220),
    "cyan": (40, 210, 220),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Unit motion per direction in image coordinates (x to the right, y downwards).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (110, 110, 110),
    "navy": (20, 20, 80),
    "brown": (80, 50, 20),
}
# Size word -> object extent in pixels ("" is the default size, written without a word in the caption).
SIZES: dict[str, float] = {"small": 10.0, "": 14.0, "large": 18.0}
SPEED_RANGE_PX_PER_FRAME = (1.0, 3.0)
FRAMES_PER_SECOND = 8

# Held-out combinations: this many (color, shape, direction, background) tuples never appear in training,
# chosen by a fixed shuffle so that training and evaluation agree without sharing a file.
NUM_HELD_OUT_COMBINATIONS = 48
_HELD_OUT_SHUFFLE_SEED = 5


@dataclasses.dataclass(frozen=True)
class ShapeClip:
    """One clip: the caption's attributes plus the motion parameters the caption does not mention."""

    color: str
    shape: str
    direction: str
    background: str
    size: str = ""
    speed: float = 2.0
    start_x: float = 32.0
    start_y: float = 32.0

    def __post_init__(self):
        check_choice("ShapeClip", "color", self.color, COLORS)
        check_choice("ShapeClip", "shape", self.shape, SHAPES)
        check_choice("ShapeClip", "direction", self.direction, DIRECTIONS)
        check_choice("ShapeClip", "background", self.background, BACKGROUNDS)
        check_choice("ShapeClip", "size", self.size, SIZES)
        check_float("ShapeClip", "speed", self.speed, minimum=SPEED_RANGE_PX_PER_FRAME[0],
                    maximum=SPEED_RANGE_PX_PER_FRAME[1])

    @property
    def combination(self) -> tuple[str, str, str, str]:
        return (self.color, self.shape, self.direction, self.background)

    @property
    def caption(self) -> str:
        size_word = f"{self.size} " if self.size else ""
        return f"a {size_word}{self.color} {self.shape} moving {self.direction} on a {self.background} background"


def parse_caption(caption: str) -> ShapeClip:
    """Inverse of `ShapeClip.caption` for the attributes a caption names (motion parameters get defaults)."""
    words = caption.strip().lower().split()
    size = words.pop(1) if len(words) > 1 and words[1] in SIZES else ""
    template = ["a", "<color>", "<shape>", "moving", "<direction>", "on", "a", "<background>", "background"]
    if len(words) != len(template) or any(t != w for t, w in zip(template, words) if not t.startswith("<")):
        raise ValueError(
            f"caption {caption!r} does not follow the template "
            "'a [large |small ]{color} {shape} moving {direction} on a {background} background'"
        )
    return ShapeClip(color=words[1], shape=words[2], direction=words[4], background=words[7], size=size)


def all_combinations() -> list[tuple[str, str, str, str]]:
    return list(itertools.product(COLORS, SHAPES, DIRECTIONS, BACKGROUNDS))


def held_out_combinations() -> list[tuple[str, str, str, str]]:
    """The combinations reserved for evaluation, in a fixed order."""
    combinations = all_combinations()
    random.Random(_HELD_OUT_SHUFFLE_SEED).shuffle(combinations)
    return combinations[:NUM_HELD_OUT_COMBINATIONS]


def training_combinations() -> list[tuple[str, str, str, str]]:
    held_out = set(held_out_combinations())
    return [c for c in all_combinations() if c not in held_out]


def held_out_prompts() -> list[str]:
    """One caption per held-out combination; the size word cycles so that every size is evaluated."""
    size_words = list(SIZES)
    return [
        ShapeClip(*combination, size=size_words[i % len(size_words)]).caption
        for i, combination in enumerate(held_out_combinations())
    ]


def sample_clips(count: int, generator: torch.Generator,
                 combinations: Sequence[tuple[str, str, str, str]] | None = None,
                 frame_size: int = 64) -> list[ShapeClip]:
    """Draw `count` clips uniformly over `combinations` (default: the training ones), sizes and motions."""
    check_int("sample_clips", "count", count, minimum=1)
    combinations = training_combinations() if combinations is None else list(combinations)
    size_words = list(SIZES)
    combination_index = torch.randint(len(combinations), (count,), generator=generator).tolist()
    size_index = torch.randint(len(size_words), (count,), generator=generator).tolist()
    low, high = SPEED_RANGE_PX_PER_FRAME
    speeds = (low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)).tolist()
    starts = (frame_size * torch.rand(count, 2, generator=generator, dtype=torch.float64)).tolist()
    return [
        ShapeClip(*combinations[c], size=size_words[s], speed=speed, start_x=start[0], start_y=start[1])
        for c, s, speed, start in zip(combination_index, size_index, speeds, starts)
    ]


def _wrapped_offset(coordinate: torch.Tensor, center: torch.Tensor, period: int) -> torch.Tensor:
    """Signed distance from `center` on a circle of length `period`, so objects wrap around the frame edges."""
    return torch.remainder(coordinate - center + period / 2, period) - period / 2


def shape_masks(clips: Sequence[ShapeClip], num_frames: int, height: int, width: int,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean (B, F, H, W) masks of each clip's object in each frame."""
    def column(values):
        return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1, 1)

    motion = [DIRECTIONS[c.direction] for c in clips]
    frame = torch.arange(num_frames, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    speed = column([c.speed for c in clips])
    center_x = column([c.start_x for c in clips]) + column([m[0] for m in motion]) * speed * frame
    center_y = column([c.start_y for c in clips]) + column([m[1] for m in motion]) * speed * frame
    # Pixel centres sit at integer + 0.5.
    xs = torch.arange(width, dtype=torch.float32, device=device).view(1, 1, 1, -1) + 0.5
    ys = torch.arange(height, dtype=torch.float32, device=device).view(1, 1, -1, 1) + 0.5
    dx = _wrapped_offset(xs, torch.remainder(center_x, width), width)
    dy = _wrapped_offset(ys, torch.remainder(center_y, height), height)
    radius = column([SIZES[c.size] / 2 for c in clips])
    shape = column([SHAPES.index(c.shape) for c in clips])
    circle = dx * dx + dy * dy <= radius * radius
    square = (dx.abs() <= radius) & (dy.abs() <= radius)
    # Upright isosceles triangle filling half of its 2r x 2r box: apex at the top, base at the bottom.
    triangle = (dy.abs() <= radius) & (dx.abs() <= (dy + radius) / 2)
    return torch.where(shape == 0, circle, torch.where(shape == 1, square, triangle))


def render_clips(clips: Sequence[ShapeClip], num_frames: int = 16, height: int = 64, width: int = 64,
                 noise_std: float = 0.0, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Render clips to float videos in [0, 1], shaped (B, F, H, W, 3).

    `noise_std` adds independent per-frame Gaussian pixel noise (drawn from `generator`, which must live on
    `device`), a little texture that keeps the model from memorising perfectly flat colours.
    """
    check_int("render_clips", "num_frames", num_frames, minimum=1)
    check_int("render_clips", "height", height, minimum=8)
    check_int("render_clips", "width", width, minimum=8)
    check_float("render_clips", "noise_std", noise_std, minimum=0.0)
    masks = shape_masks(clips, num_frames, height, width, device).unsqueeze(-1)
    foreground = torch.tensor([COLORS[c.color] for c in clips], dtype=torch.float32, device=device) / 255
    background = torch.tensor([BACKGROUNDS[c.background] for c in clips], dtype=torch.float32, device=device) / 255
    video = torch.where(masks, foreground.view(-1, 1, 1, 1, 3), background.view(-1, 1, 1, 1, 3))
    if noise_std > 0:
        video = video + noise_std * torch.randn(video.shape, generator=generator, device=device)
    return video.clamp(0, 1)
