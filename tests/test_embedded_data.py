"""Procedural moving-shapes data: captions, determinism, wrap-around, held-out split, option errors."""

import pytest
import torch

from swiftdit.pipelines.moving_shapes import (
    BACKGROUNDS, COLORS, DIRECTIONS, SHAPES, SIZES, ShapeClip, all_combinations, held_out_combinations,
    held_out_prompts, parse_caption, render_clips, sample_clips, shape_masks, training_combinations,
)


def test_captions_follow_the_template_and_parse_back():
    clip = ShapeClip("cyan", "triangle", "up", "navy", size="large")
    assert clip.caption == "a large cyan triangle moving up on a navy background"
    assert ShapeClip("red", "circle", "left", "black").caption == "a red circle moving left on a black background"
    for size in SIZES:
        clip = ShapeClip("orange", "square", "down", "brown", size=size)
        assert parse_caption(clip.caption) == clip


@pytest.mark.parametrize("caption", ["a red dog moving left on a black background", "a red circle on black", ""])
def test_captions_outside_the_template_are_rejected(caption):
    with pytest.raises(ValueError):
        parse_caption(caption)


def test_bad_clip_options_name_the_option():
    with pytest.raises(ValueError, match="'color'"):
        ShapeClip("purple", "circle", "left", "black")
    with pytest.raises(ValueError, match="'speed'"):
        ShapeClip("red", "circle", "left", "black", speed=7.0)


def test_sampling_and_rendering_are_deterministic_from_the_seed():
    def draw(seed):
        clips = sample_clips(8, torch.Generator().manual_seed(seed))
        return clips, render_clips(clips, noise_std=0.02, generator=torch.Generator().manual_seed(seed))

    clips_a, video_a = draw(3)
    clips_b, video_b = draw(3)
    clips_c, _ = draw(4)
    assert clips_a == clips_b and torch.equal(video_a, video_b)
    assert clips_a != clips_c
    assert video_a.shape == (8, 16, 64, 64, 3) and 0 <= video_a.min() and video_a.max() <= 1


def test_rendered_colours_and_sizes_are_exact_without_noise():
    clip = ShapeClip("magenta", "square", "right", "gray", size="large", speed=1.0, start_x=20.0, start_y=20.0)
    video = render_clips([clip], num_frames=2)[0]
    assert torch.allclose(video[0, 20, 20] * 255, torch.tensor(COLORS["magenta"], dtype=torch.float32))
    assert torch.allclose(video[0, 0, 0] * 255, torch.tensor(BACKGROUNDS["gray"], dtype=torch.float32))
    mask = shape_masks([clip], 1, 64, 64)[0, 0]
    assert int(mask.any(dim=0).sum()) == SIZES["large"]  # 18 px across


def test_objects_wrap_around_the_frame_edges():
    clip = ShapeClip("white", "square", "left", "black", size="small", speed=3.0, start_x=2.0, start_y=30.0)
    masks = shape_masks([clip], 4, 64, 64)[0]
    columns = masks[3].any(dim=0).nonzero().flatten().tolist()
    # At frame 3 the centre is at x = 2 - 9 = -7, i.e. 57: the square is whole on the right side.
    assert min(columns) > 40 and len(columns) == SIZES["small"]
    straddling = masks[0].any(dim=0).nonzero().flatten().tolist()
    assert 0 in straddling and 63 in straddling  # frame 0 straddles the left edge


def test_held_out_combinations_never_reach_training_and_cover_the_vocabulary():
    held_out = set(held_out_combinations())
    training = training_combinations()
    assert len(held_out) == 48 and held_out.isdisjoint(training)
    assert len(training) + len(held_out) == len(all_combinations())
    for index, vocabulary in enumerate((COLORS, SHAPES, DIRECTIONS, BACKGROUNDS)):
        assert {combination[index] for combination in training} == set(vocabulary)
    sampled = sample_clips(256, torch.Generator().manual_seed(0))
    assert not {clip.combination for clip in sampled} & held_out
    prompts = held_out_prompts()
    assert len(set(prompts)) == 48 and {parse_caption(p).combination for p in prompts} == held_out
