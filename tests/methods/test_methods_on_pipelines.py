"""Every method through `enable_efficient_attention` on the tiny Wan, HunyuanVideo, CogVideoX and Flux
pipelines: it runs, sparsifies, equals the dense pipeline when every block is kept, and keeps no state
from one pipeline call to the next."""

import pytest
import torch

import swiftdit
from method_cases import ALL_BLOCKS_OPTIONS
from swiftdit.methods import rectified
from tiny_pipelines import TINY_PIPELINES, run

PIPELINES = ["wan", "hunyuan_video", "cogvideox", "flux"]
METHODS = sorted(ALL_BLOCKS_OPTIONS)
# Options scaled to the tiny latents (tens to a few hundred tokens): the smallest blocks and cells.
SMALL_OPTIONS = {
    "sparse": dict(density=0.25),
    "radial": dict(block_size=64),
    "draft": dict(pool_h=4, pool_w=8, sparsity=0.5),
    "rectified": dict(block_size=64, density=0.25, neighbours=False, first_frame_sink=False),
    "clear": dict(radius=2, temporal_radius=0),
    "sla": dict(density=0.25),
}


def tiny_pipeline(name: str):
    """The tiny pipeline with two denoising steps: enough to cross a step boundary, and fast."""
    tiny = TINY_PIPELINES[name]()
    tiny.call_kwargs.update(num_inference_steps=2)
    return tiny


@pytest.fixture(scope="module")
def references():
    """Dense outputs of each tiny pipeline (computed once)."""
    return {name: run(tiny_pipeline(name)) for name in PIPELINES}


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("method", METHODS)
def test_all_blocks_kept_matches_the_dense_pipeline(method, pipeline, references):
    tiny = tiny_pipeline(pipeline)
    tiny.pipe.enable_efficient_attention(method, **ALL_BLOCKS_OPTIONS[method])
    out = run(tiny)
    summary = swiftdit.attention_session(tiny.pipe).density_summary()
    assert summary["sparse_calls"] > 0 and summary["mean_density"] == pytest.approx(1.0)
    torch.testing.assert_close(out, references[pipeline], rtol=1e-4, atol=1e-4)


def larger_wan():
    """Tiny Wan at 128x128, 17 frames: a (5, 8, 8) grid of 320 tokens, one 64-token block per latent frame."""
    tiny = TINY_PIPELINES["wan"]()
    tiny.call_kwargs.update(height=128, width=128, num_frames=17)
    return tiny


@pytest.fixture(scope="module")
def larger_wan_reference():
    return run(larger_wan())


@pytest.mark.parametrize("method", METHODS)
def test_sparse_settings_change_the_output_and_repeat_across_calls(method, larger_wan_reference):
    tiny = larger_wan()
    tiny.pipe.enable_efficient_attention(method, **SMALL_OPTIONS[method])
    first = run(tiny)
    assert torch.isfinite(first).all()
    # Not a closeness bound: on the tiny random model attention is nearly uniform, where the rectified
    # estimate of the dropped blocks is almost exact.
    assert not torch.equal(first, larger_wan_reference)
    assert swiftdit.attention_session(tiny.pipe).density_summary()["mean_density"] < 1.0
    # Nothing carries over between pipeline calls: the same inputs give the same output.
    torch.testing.assert_close(run(tiny), first, rtol=0, atol=0)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_method_runs_on_each_pipeline(pipeline, references):
    for method in METHODS:
        tiny = tiny_pipeline(pipeline)
        tiny.pipe.enable_efficient_attention(method, **SMALL_OPTIONS[method])
        out = run(tiny)
        assert out.shape == references[pipeline].shape and torch.isfinite(out).all(), method


def test_retention_history_is_measured_at_each_refresh_and_reset_per_call(monkeypatch):
    dense_refreshes = []
    measure = rectified.dropped_blocks_of
    monkeypatch.setattr(rectified, "dropped_blocks_of",
                        lambda pattern: dense_refreshes.append(1) or measure(pattern))
    tiny = larger_wan()  # 3 steps x 2 CFG branches x 2 layers
    tiny.pipe.enable_efficient_attention("rectified", rectify="history", refresh_every=2, block_size=64,
                                         density=0.25, mass=0.0, neighbours=False, first_frame_sink=False)
    method = swiftdit.attention_session(tiny.pipe).method
    planned_steps = []
    plan = method.plan
    monkeypatch.setattr(method, "plan",
                        lambda q, k, call: planned_steps.append(call.step.step_index) or plan(q, k, call))
    first = run(tiny)
    # Plans at steps 0 and 2, reused at step 1, for each branch and layer; each plan is one dense refresh.
    assert sorted(planned_steps) == [0] * 4 + [2] * 4
    assert len(dense_refreshes) == 8
    # The refresh steps computed every pair and are recorded so; the reusing step computed the pattern only.
    per_step = swiftdit.attention_session(tiny.pipe).density_summary()["per_step"]
    assert per_step[0] == per_step[2] == 1.0 and per_step[1] < 0.9
    second = run(tiny)
    assert len(dense_refreshes) == 16  # the second call measures its own history from scratch
    torch.testing.assert_close(second, first, rtol=0, atol=0)
