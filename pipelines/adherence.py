"""Prompt-adherence detector for moving-shape clips: what colour, shape and direction does a video show?

It needs no model: the background is the median colour of the clip (the object covers under a tenth of the
frame), the object is every pixel far from it, its colour is the palette colour most of those pixels are
nearest to, its shape follows from how much of its bounding box it fills (square 1, circle pi/4, triangle
1/2), and its direction from the frame-to-frame motion of its centroid, measured on the torus so that an
object wrapping around an edge still moves by a few pixels, not by the frame width.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from swiftdit.pipelines.moving_shapes import BACKGROUNDS, COLORS, DIRECTIONS, ShapeClip, parse_caption

# An object pixel differs from the background by more than this (RGB distance, channels in [0, 1]). The
# closest object/background pair of the palette (orange on brown) is about 0.66 apart; the training noise
# is about 0.02, so a quarter of the closest gap separates the two with room for generation artefacts.
OBJECT_DISTANCE_THRESHOLD = 0.25
# Fill-ratio boundaries halfway between the ideal triangle (0.5), circle (pi/4) and square (1.0).
TRIANGLE_CIRCLE_FILL = (0.5 + math.pi / 4) / 2
CIRCLE_SQUARE_FILL = (math.pi / 4 + 1.0) / 2
MIN_NEIGHBOURS = 2
# Frames whose object has fewer pixels than this are skipped for shape and motion.
MIN_OBJECT_PIXELS = 12


@dataclasses.dataclass(frozen=True)
class Detection:
    """What the detector saw; a field is None when the clip shows no object to judge."""

    background: str
    color: str | None
    shape: str | None
    direction: str | None
    fill_ratio: float | None
    velocity: tuple[float, float] | None  # mean (dx, dy) in pixels per frame


@dataclasses.dataclass(frozen=True)
class Judgement:
    color: bool
    shape: bool
    direction: bool


def _as_float_video(video) -> torch.Tensor:
    """(F, H, W, 3) float in [0, 1] from uint8 or float numpy/torch input."""
    video = torch.as_tensor(np.asarray(video) if not isinstance(video, torch.Tensor) else video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be shaped (frames, height, width, 3), got {tuple(video.shape)}")
    if video.dtype == torch.uint8:
        return video.float() / 255
    return video.float().clamp(0, 1)


def _nearest(colors: torch.Tensor, palette: dict[str, tuple[int, int, int]]) -> torch.Tensor:
    """Index into `palette` of the nearest entry of each colour (..., 3)."""
    table = torch.tensor(list(palette.values()), dtype=torch.float32) / 255
    return torch.cdist(colors.reshape(-1, 3), table).argmin(dim=1).reshape(colors.shape[:-1])


def _circular_mean(positions: torch.Tensor, weights: torch.Tensor, period: int) -> float:
    """Mean of positions on a circle of length `period` (the centroid of an object that wraps around)."""
    angle = positions * (2 * math.pi / period)
    mean_angle = math.atan2(float((weights * angle.sin()).sum()), float((weights * angle.cos()).sum()))
    return (mean_angle * period / (2 * math.pi)) % period


def _drop_stray_pixels(mask: torch.Tensor) -> torch.Tensor:
    """Keep object pixels with at least two object neighbours (3x3, on the torus): isolated noise goes, while
    a triangle's one-pixel apex, which has neighbours below it, stays and keeps the fill ratio honest."""
    padded = F.pad(mask.float()[None, None], (1, 1, 1, 1), mode="circular")
    neighbours = F.conv2d(padded, torch.ones(1, 1, 3, 3))[0, 0] - mask.float()
    return mask & (neighbours >= MIN_NEIGHBOURS)


def _fill_ratio(mask: torch.Tensor, center_x: float, center_y: float) -> float:
    """Object area over bounding-box area, after rolling the frame so the object does not straddle an edge."""
    height, width = mask.shape
    centered = torch.roll(mask, shifts=(height // 2 - int(center_y), width // 2 - int(center_x)), dims=(0, 1))
    rows = centered.any(dim=1).nonzero()
    cols = centered.any(dim=0).nonzero()
    box_area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    return float(centered.sum() / box_area)


def detect(video) -> Detection:
    """Detect background, object colour, shape and direction in one clip shaped (F, H, W, 3)."""
    video = _as_float_video(video)
    num_frames, height, width, _ = video.shape
    background_rgb = video.reshape(-1, 3).median(dim=0).values
    background = list(BACKGROUNDS)[int(_nearest(background_rgb, BACKGROUNDS))]
    far_from_background = (video - background_rgb).norm(dim=-1) > OBJECT_DISTANCE_THRESHOLD
    masks = torch.stack([_drop_stray_pixels(frame) for frame in far_from_background])
    if int(masks.sum()) < MIN_OBJECT_PIXELS:
        return Detection(background, None, None, None, None, None)

    color_votes = torch.bincount(_nearest(video[masks], COLORS), minlength=len(COLORS))
    color = list(COLORS)[int(color_votes.argmax())]

    xs = torch.arange(width, dtype=torch.float32) + 0.5
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    centers, fills = [], []
    for mask in masks:
        if int(mask.sum()) < MIN_OBJECT_PIXELS:
            centers.append(None)
            continue
        weights = mask.float()
        center_x = _circular_mean(xs, weights.sum(dim=0), width)
        center_y = _circular_mean(ys, weights.sum(dim=1), height)
        centers.append((center_x, center_y))
        fills.append(_fill_ratio(mask, center_x, center_y))
    fill = float(np.median(fills))
    shape = "triangle" if fill < TRIANGLE_CIRCLE_FILL else "circle" if fill < CIRCLE_SQUARE_FILL else "square"

    steps = []
    for previous, current in zip(centers[:-1], centers[1:]):
        if previous is not None and current is not None:
            steps.append((
                (current[0] - previous[0] + width / 2) % width - width / 2,
                (current[1] - previous[1] + height / 2) % height - height / 2,
            ))
    if not steps:
        return Detection(background, color, shape, None, fill, None)
    velocity = tuple(float(v) for v in np.mean(steps, axis=0))
    direction = max(DIRECTIONS, key=lambda name: DIRECTIONS[name][0] * velocity[0] + DIRECTIONS[name][1] * velocity[1])
    return Detection(background, color, shape, direction, fill, velocity)


def judge(video, expected: ShapeClip | str) -> Judgement:
    """Whether a clip shows the colour, shape and direction of `expected` (a clip or its caption)."""
    if isinstance(expected, str):
        expected = parse_caption(expected)
    detection = detect(video)
    return Judgement(
        color=detection.color == expected.color,
        shape=detection.shape == expected.shape,
        direction=detection.direction == expected.direction,
    )


def adherence_rates(videos: Sequence, prompts: Sequence[str]) -> dict[str, float]:
    """Fraction of clips whose colour, shape and direction match their prompt."""
    if len(videos) != len(prompts):
        raise ValueError(f"got {len(videos)} videos for {len(prompts)} prompts; pass one prompt per video")
    judgements = [judge(video, prompt) for video, prompt in zip(videos, prompts)]
    return {
        field: sum(getattr(j, field) for j in judgements) / len(judgements)
        for field in ("color", "shape", "direction")
    }
