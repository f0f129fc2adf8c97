"""The shipped embedded model: offline loading, size budget, output format, held-out colour, option errors."""

import json

import pytest
import torch

from swiftdit.pipelines import EMBEDDED_MODEL_DIR, MovingShapesPipeline, load_pipeline
from swiftdit.pipelines.adherence import detect
from swiftdit.pipelines.moving_shapes import held_out_prompts, parse_caption

MAX_WEIGHT_BYTES = 40 * 1000 * 1000
MIN_VISUAL_TOKENS = 2048


@pytest.fixture(scope="module")
def pipe(monkeypatch_module):
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    pipe = load_pipeline(device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_loads_offline_as_the_embedded_pipeline_within_the_size_budget(pipe):
    assert isinstance(pipe, MovingShapesPipeline)
    assert json.loads((EMBEDDED_MODEL_DIR / "model_index.json").read_text())["_class_name"] == "MovingShapesPipeline"
    weight_bytes = sum(path.stat().st_size for path in EMBEDDED_MODEL_DIR.rglob("*.safetensors"))
    assert 0 < weight_bytes <= MAX_WEIGHT_BYTES
    # Every shard fits the device machine's 16 MiB return limit, so retraining can hand it back.
    assert max(path.stat().st_size for path in EMBEDDED_MODEL_DIR.rglob("*.safetensors")) < 16 * 2**20
    patch_t, patch_h, patch_w = pipe.transformer.config.patch_size
    assert (16 // patch_t) * (64 // patch_h) * (64 // patch_w) >= MIN_VISUAL_TOKENS


def test_default_size_generation_has_the_video_pipeline_output_format(pipe):
    frames = pipe("a red circle moving right on a black background", num_inference_steps=1, guidance_scale=1.0,
                  generator=torch.Generator().manual_seed(0), output_type="np").frames
    assert frames.shape == (1, 16, 64, 64, 3) and frames.dtype.name == "float32"
    assert 0.0 <= frames.min() and frames.max() <= 1.0


def test_short_generation_of_a_held_out_prompt_gets_the_colour(pipe):
    prompt = held_out_prompts()[0]
    # Half the default length keeps this fast on a CPU; the colour is decided in the first steps.
    frames = pipe(prompt, num_frames=8, num_inference_steps=6, generator=torch.Generator().manual_seed(0)).frames
    assert detect(frames[0]).color == parse_caption(prompt).color


@pytest.mark.parametrize("options, option_name", [
    ({"generation_mode": "sideways"}, "generation_mode"),
    ({"output_type": "gif"}, "output_type"),
    ({"num_frames": 6, "generation_mode": "chunked"}, "num_frames"),
    ({"height": 30}, "height"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
])
def test_bad_options_raise_a_value_error_naming_the_option(pipe, options, option_name):
    with pytest.raises(ValueError, match=option_name):
        pipe("a red circle moving right on a black background", **options)
