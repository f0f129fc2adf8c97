"""Every supported model family, through its transformer forward on a tiny random config.

For each: dense is bit-identical to the unpatched model, disable restores it bit-identically, and the
context a method sees inside attention (grid, text span, layer, step, branch) is right.
"""

import contextlib

import pytest
import torch
from diffusers.hooks import HookRegistry

import swiftdit
from recording import recorded_calls
from tiny_models import TINY_MODELS

TIMESTEPS = (900.0, 500.0, 100.0)


def denoise(tiny, branches=("cond", "uncond")):
    """Emulate a pipeline loop: per step, one forward per CFG branch inside diffusers' cache_context."""
    outputs = []
    with torch.no_grad():
        for t in TIMESTEPS:
            for branch in branches:
                with context(tiny.model, branch):
                    outputs.append(tiny.model(**tiny.make_inputs(torch.tensor([t])))[0])
    # What DiffusionPipeline.maybe_free_model_hooks does at the end of a call.
    HookRegistry.check_if_exists_or_initialize(tiny.model).reset_stateful_hooks()
    return torch.stack(outputs)


def context(model, branch):
    """diffusers' cache_context where the model has one (PixArt has none: branches are counted)."""
    return model.cache_context(branch) if hasattr(model, "cache_context") else contextlib.nullcontext()


def expected_branch(model, forward_index):
    if hasattr(model, "cache_context"):
        return ("cond", "uncond")[forward_index % 2]
    return f"pass{forward_index % 2}"


@pytest.fixture(params=sorted(TINY_MODELS))
def tiny(request):
    return TINY_MODELS[request.param]()


def test_dense_is_bit_identical_and_disable_restores(tiny):
    reference = denoise(tiny)
    report = swiftdit.enable_efficient_attention(tiny.model, "dense")
    assert report.denoisers[0].swapped, "no self-attention layer was found"
    assert torch.equal(denoise(tiny), reference)
    swiftdit.enable_efficient_attention(tiny.model, "sparse", density=0.5)
    swiftdit.disable_efficient_attention(tiny.model)
    assert "swiftdit_denoiser" not in tiny.model._diffusers_hook.hooks
    assert torch.equal(denoise(tiny), reference)


def test_swapped_layers_are_the_visual_self_attention(tiny):
    report = swiftdit.enable_efficient_attention(tiny.model, "dense")
    (denoiser,) = report.denoisers
    assert denoiser.swapped and all(name.startswith(tiny.swapped_prefixes) for name in denoiser.swapped)
    for name, reason in denoiser.kept.items():
        assert reason, f"{name} kept dense without a reason"
        assert "refiner" in name or name.endswith("attn2"), f"unexpected dense module {name}: {reason}"


def test_context_seen_inside_attention(tiny):
    swiftdit.enable_efficient_attention(tiny.model, "_recording")
    recorded_calls()
    sparse_out = denoise(tiny)
    calls = recorded_calls()
    swiftdit.disable_efficient_attention(tiny.model)
    num_layers = len(swiftdit.enable_efficient_attention(tiny.model, "dense").denoisers[0].swapped)
    swiftdit.disable_efficient_attention(tiny.model)
    # The recording method keeps every block, so it equals dense attention up to float rounding.
    torch.testing.assert_close(sparse_out, denoise(tiny), rtol=1e-4, atol=1e-5)

    per_forward = len(calls) // (len(TIMESTEPS) * 2)
    assert per_forward >= num_layers
    for i, (call, q_shape) in enumerate(calls):
        forward_index = i // per_forward
        assert call.step.step_index == forward_index // 2
        assert call.step.branch == expected_branch(tiny.model, forward_index)
        assert call.step.num_steps is None  # a bare transformer knows no schedule
        assert call.layout.grid == tiny.grid
        assert q_shape[2] == tiny.grid[0] * tiny.grid[1] * tiny.grid[2]
        assert call.num_layers == num_layers and 0 <= call.layer_index < num_layers
        if tiny.text_position == "none" or call.layer_name.endswith("attn2"):  # SD3.5's attn2 is image-only
            assert call.layout.text_len == 0
        else:
            assert call.layout.text_position == tiny.text_position
            if tiny.text_len > 0:  # -1: varies per call (checked in the model-specific tests)
                assert call.layout.text_len == tiny.text_len
    layer_order = [c.layer_index for c, _ in calls[:per_forward]]
    assert sorted(set(layer_order)) == list(range(num_layers))


def test_text_keys_reach_the_method_and_padding_is_masked():
    tiny = TINY_MODELS["hunyuan_video"]()
    swiftdit.enable_efficient_attention(tiny.model, "_recording")
    recorded_calls()
    denoise(tiny, branches=("cond",))
    from recording import RecordingAttention

    inputs = RecordingAttention.inputs[0]
    assert inputs.text_k.shape[2] == 9
    # The last two text tokens are padding in tiny_hunyuan_video: masked for every visual query.
    assert inputs.text_key_mask.tolist() == [[True] * 7 + [False] * 2]
    recorded_calls()


def test_mochi_text_length_varies_per_sample():
    tiny = TINY_MODELS["mochi"]()
    swiftdit.enable_efficient_attention(tiny.model, "_recording")
    recorded_calls()
    denoise(tiny, branches=("cond",))
    text_lengths = {call.layout.text_len for call, _ in recorded_calls()}
    assert text_lengths == {7, 5}


def test_steps_without_cache_context_are_counted_from_timesteps():
    tiny = TINY_MODELS["sd3"]()
    swiftdit.enable_efficient_attention(tiny.model, "_recording")
    recorded_calls()
    with torch.no_grad():
        for t in TIMESTEPS:
            for _ in range(2):  # two forwards per step without any cache context (like SD3 pipelines)
                tiny.model(**tiny.make_inputs(torch.tensor([t])))
    calls = recorded_calls()
    seen = sorted({(c.step.step_index, c.step.branch) for c, _ in calls})
    assert seen == [(s, f"pass{p}") for s in range(3) for p in range(2)]
