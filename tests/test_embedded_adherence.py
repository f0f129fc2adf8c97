"""The adherence detector, on procedurally drawn videos whose answers are known."""

import numpy as np
import pytest
import torch

from swiftdit.pipelines.adherence import adherence_rates, detect, judge
from swiftdit.pipelines.moving_shapes import ShapeClip, all_combinations, render_clips, sample_clips


def test_detects_every_attribute_of_drawn_clips_with_noise():
    clips = sample_clips(60, torch.Generator().manual_seed(1), all_combinations())
    videos = render_clips(clips, noise_std=0.03, generator=torch.Generator().manual_seed(2))
    for clip, video in zip(clips, videos):
        detection = detect(video)
        assert (detection.color, detection.shape, detection.direction, detection.background) == (
            clip.color, clip.shape, clip.direction, clip.background), clip


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_direction_survives_wrapping_around_the_edge(direction):
    # Start one pixel from the edge the object moves towards, at the top speed: it wraps in the first frames.
    start = {"left": (1.0, 30.0), "right": (63.0, 30.0), "up": (30.0, 1.0), "down": (30.0, 63.0)}[direction]
    clip = ShapeClip("green", "circle", direction, "navy", size="large", speed=3.0, start_x=start[0],
                     start_y=start[1])
    detection = detect(render_clips([clip])[0])
    assert detection.direction == direction
    assert max(abs(v) for v in detection.velocity) == pytest.approx(3.0, abs=0.25)


def test_accepts_uint8_numpy_and_judges_wrong_expectations_as_wrong():
    clip = ShapeClip("yellow", "triangle", "down", "brown", size="large")
    video = (render_clips([clip])[0].numpy() * 255).round().astype(np.uint8)
    assert judge(video, clip.caption) == judge(video, clip)
    assert all(vars(judge(video, clip)).values())
    wrong = judge(video, "a yellow square moving up on a brown background")
    assert wrong.color and not wrong.shape and not wrong.direction
    rates = adherence_rates([video, video], [clip.caption, "a red triangle moving down on a brown background"])
    assert rates == {"color": 0.5, "shape": 1.0, "direction": 1.0}


def test_a_clip_without_an_object_has_no_answers():
    empty = torch.full((16, 64, 64, 3), 110 / 255)
    detection = detect(empty)
    assert detection.background == "gray"
    assert (detection.color, detection.shape, detection.direction) == (None, None, None)
    assert not any(vars(judge(empty, "a red circle moving left on a gray background")).values())


def test_rejects_videos_of_the_wrong_layout():
    with pytest.raises(ValueError, match="frames, height, width, 3"):
        detect(torch.zeros(16, 3, 64, 64))
