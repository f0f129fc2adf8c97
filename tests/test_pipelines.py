"""The plugin through real diffusers pipeline classes: Wan 2.1, Wan 2.2 (two experts), Flux, CogVideoX
(batched CFG) and HunyuanVideo (text-last joint attention with padding)."""

import pytest
import torch

import swiftdit
from recording import recorded_calls
from tiny_pipelines import TINY_PIPELINES, run


@pytest.fixture(params=sorted(TINY_PIPELINES))
def tiny(request):
    return TINY_PIPELINES[request.param]()


def test_dense_and_disable_are_bit_identical(tiny):
    reference = run(tiny)
    report = tiny.pipe.enable_efficient_attention("dense")
    assert isinstance(report, swiftdit.EnableReport)
    assert torch.equal(run(tiny), reference)
    tiny.pipe.enable_efficient_attention("sparse", density=0.5)
    tiny.pipe.disable_efficient_attention()
    assert torch.equal(run(tiny), reference)
    assert swiftdit.attention_session(tiny.pipe) is None


def test_step_branch_and_schedule_seen_inside_attention(tiny):
    tiny.pipe.enable_efficient_attention("_recording")
    recorded_calls()
    for _ in range(2):  # state is reset at each pipeline call: two calls see the same steps
        run(tiny)
        calls = recorded_calls()
        seen = []
        for call, _ in calls:
            key = (call.step.step_index, call.step.branch)
            if key not in seen:
                seen.append(key)
        assert seen == [(s, b) for s in range(tiny.num_steps) for b in tiny.branches]
        assert {call.step.num_steps for call, _ in calls} == {tiny.num_steps}


def test_two_experts_each_get_their_steps():
    tiny = TINY_PIPELINES["wan22"]()
    report = tiny.pipe.enable_efficient_attention("_recording")
    assert [d.component for d in report.denoisers] == ["transformer", "transformer_2"]
    recorded_calls()
    run(tiny)
    by_expert = {}
    for call, _ in recorded_calls():
        by_expert.setdefault(call.step.model_key, set()).add(call.step.step_index)
    # boundary_ratio 0.5 over 3 steps: the high-noise expert runs first, the low-noise one last.
    assert by_expert["transformer"] and by_expert["transformer_2"]
    assert max(by_expert["transformer"]) < min(by_expert["transformer_2"])


def test_dense_steps_and_layers_bypass_the_method():
    tiny = TINY_PIPELINES["wan"]()
    tiny.pipe.enable_efficient_attention("_recording", dense_steps=1, dense_last_steps=1, dense_layers=1)
    recorded_calls()
    run(tiny)
    calls = recorded_calls()
    assert {c.step.step_index for c, _ in calls} == {1}
    assert {c.layer_index for c, _ in calls} == {1}


def test_batch_and_videos_per_prompt():
    tiny = TINY_PIPELINES["wan"]()
    tiny.call_kwargs.update(num_videos_per_prompt=2)
    reference = run(tiny)
    assert reference.shape[0] == 2
    tiny.pipe.enable_efficient_attention("dense")
    assert torch.equal(run(tiny), reference)
    tiny.pipe.enable_efficient_attention("sparse", density=1.0)
    torch.testing.assert_close(run(tiny), reference, rtol=1e-4, atol=1e-4)


def test_sparse_changes_the_output_and_reports_density():
    tiny = TINY_PIPELINES["wan"]()
    tiny.call_kwargs.update(height=256, width=256, num_frames=5)  # grid (2, 16, 16): 512 tokens, 8 blocks
    reference = run(tiny)
    tiny.pipe.enable_efficient_attention("sparse", density=0.25, block_size=64, neighbours=False,
                                         first_frame_sink=False)
    out = run(tiny)
    assert not torch.equal(out, reference)
    summary = swiftdit.attention_session(tiny.pipe).density_summary()
    assert summary["sparse_calls"] == 3 * 2 * 2  # steps x branches x layers
    assert 0.2 < summary["mean_density"] < 0.45  # 2 of 8 key blocks plus the diagonal
