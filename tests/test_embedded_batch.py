"""Batched generation with the embedded pipeline: a list of prompts with one generator per prompt gives each
video the one an unbatched call with the same seed gives, in both generation modes (diffusers' convention,
which benchmarks/bench_quality.py relies on to batch its requests)."""

import numpy as np
import pytest
import torch

from swiftdit.pipelines import load_pipeline
from swiftdit.pipelines.moving_shapes import held_out_prompts

SEEDS = (3, 5)
CALL = {"num_frames": 8, "height": 32, "width": 32, "num_inference_steps": 2, "output_type": "np"}


@pytest.fixture(scope="module")
def pipe():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        pipe = load_pipeline(device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generators(seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


@pytest.mark.parametrize("generation_mode", ["full", "chunked"])
def test_batched_videos_equal_unbatched_videos_of_the_same_seeds(pipe, generation_mode):
    prompts = held_out_prompts()[: len(SEEDS)]
    batched = pipe(prompts, generator=generators(SEEDS), generation_mode=generation_mode, **CALL).frames
    assert batched.shape[0] == len(prompts)
    for index, (prompt, seed) in enumerate(zip(prompts, SEEDS)):
        single = pipe(prompt, generator=torch.Generator().manual_seed(seed), generation_mode=generation_mode,
                      **CALL).frames
        np.testing.assert_allclose(batched[index], single[0], rtol=0, atol=1e-4)
    # The two videos really differ: each got its own noise, not a copy of the first.
    assert np.abs(batched[0] - batched[1]).max() > 0.05


def test_a_list_of_generators_of_the_wrong_length_raises_naming_the_option(pipe):
    prompts = held_out_prompts()[:2]
    with pytest.raises(ValueError, match="generator"):
        pipe(prompts, generator=generators(SEEDS[:1]), **CALL)
