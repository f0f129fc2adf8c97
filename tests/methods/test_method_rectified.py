"""Rectified attention: closer to dense than plain sparse attention at the same pattern on inputs with
spatial locality, and Re-ttention's history measured at refresh steps and reused in between."""

import pytest
import torch

from method_cases import dense_attention, make_call, random_inputs, relative_error, structured_inputs
from swiftdit.methods import VisualAttentionInputs, build_method, rectified

GRID = (4, 16, 16)
SELECTION = dict(block_size=64, mass=0.0, neighbours=False, first_frame_sink=False)


# The published block estimate is only claimed with compact (Hilbert) blocks: on raster rows its pooled
# kept share R_i is biased low and it can do worse than plain sparse, which the token estimate fixes.
@pytest.mark.parametrize("pooled_estimate, reorder", [("token", "none"), ("token", "hilbert"), ("block", "hilbert")])
@pytest.mark.parametrize("density", [0.1, 0.25])
def test_pooled_rectification_beats_plain_sparse_on_structured_inputs(pooled_estimate, density, reorder):
    inputs = structured_inputs(GRID)
    call = make_call(GRID)
    options = dict(SELECTION, density=density, reorder=reorder)
    sparse = build_method("sparse", options)
    rectified = build_method("rectified", dict(options, pooled_estimate=pooled_estimate))
    pattern = sparse.plan(inputs.q, inputs.k, call)
    assert torch.equal(rectified.plan(inputs.q, inputs.k, call).block_mask, pattern.block_mask)
    reference = dense_attention(inputs)
    sparse_error = relative_error(sparse.attend(inputs, pattern, call), reference)
    rectified_error = relative_error(rectified.attend(inputs, pattern, call), reference)
    assert rectified_error < 0.8 * sparse_error


@pytest.mark.parametrize("sharpness", [2.0, 4.0, 8.0])
def test_token_estimate_never_strays_from_sparse(sharpness):
    """On sharp heads nearly all mass is kept; the token estimate then stays as good as plain sparse."""
    inputs = structured_inputs(GRID, sharpness=sharpness, seed=1)
    call = make_call(GRID)
    options = dict(SELECTION, density=0.1, reorder="none")
    pattern = build_method("sparse", options).plan(inputs.q, inputs.k, call)
    reference = dense_attention(inputs)
    sparse_error = relative_error(build_method("sparse", options).attend(inputs, pattern, call), reference)
    token_error = relative_error(build_method("rectified", options).attend(inputs, pattern, call), reference)
    assert token_error <= sparse_error * 1.001


def test_rectified_keeps_text_keys_exact_and_padding_ignored():
    grid = (2, 8, 8)
    inputs = random_inputs(grid, text_len=6)
    call = make_call(grid, text_len=6)
    method = build_method("rectified", dict(block_size=64, density=0.5))
    pattern = method.plan(inputs.q, inputs.k, call)
    out = method.attend(inputs, pattern, call)
    padded_changed = VisualAttentionInputs(**{**vars(inputs), "text_v": inputs.text_v.clone()})
    padded_changed.text_v[-1, :, -2:] += 100.0  # the padded text values of the last sample
    torch.testing.assert_close(method.attend(padded_changed, pattern, call), out)


def history_method(**options):
    return build_method("rectified", {**SELECTION, "density": 0.1, "rectify": "history", "refresh_every": 3, **options})


def test_history_refresh_step_is_dense_and_reuse_step_restores_it():
    inputs = structured_inputs(GRID)
    call = make_call(GRID)
    method = history_method()
    pattern = method.plan(inputs.q, inputs.k, call)
    reference = dense_attention(inputs)
    torch.testing.assert_close(method.attend(inputs, pattern, call), reference, rtol=1e-5, atol=1e-5)
    assert {"kept_share", "residual"} <= set(pattern.extras)
    # Same inputs at a reusing step: r * O_sparse + (O_full - r * O_sparse) is the dense output again.
    torch.testing.assert_close(method.attend(inputs, pattern, call), reference, rtol=1e-5, atol=1e-5)


def test_history_refresh_is_recorded_as_dense_and_reuse_at_the_pattern_density():
    inputs = structured_inputs(GRID)
    call = make_call(GRID)
    method = history_method()
    pattern = method.plan(inputs.q, inputs.k, call)
    assert pattern.density() < 0.5
    torch.testing.assert_close(method.computed_density(pattern, inputs), torch.ones_like(pattern.density_per_head()))
    method.attend(inputs, pattern, call)
    torch.testing.assert_close(method.computed_density(pattern, inputs), pattern.density_per_head())


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["history", "calibrated"])
def test_gpu_refresh_through_cudnn_equals_the_refresh_through_the_complement(mode, monkeypatch):
    cpu_inputs = structured_inputs((4, 32, 32), head_dim=128)
    inputs = VisualAttentionInputs(*(x.to("cuda", torch.bfloat16) for x in (cpu_inputs.q, cpu_inputs.k, cpu_inputs.v)),
                                   scale=cpu_inputs.scale)
    assert rectified.uses_cudnn_refresh(inputs)
    call = make_call((4, 32, 32))
    outputs, histories = [], []
    for through_cudnn in (True, False):
        monkeypatch.setattr(rectified, "uses_cudnn_refresh", lambda _, use=through_cudnn: use)
        method = history_method(rectify=mode)
        pattern = method.plan(inputs.q, inputs.k, call)
        outputs.append(method.attend(inputs, pattern, call).float())
        histories.append({name: value.float() for name, value in pattern.extras.items() if torch.is_tensor(value)})
    reference = dense_attention(VisualAttentionInputs(*(x.float() for x in (inputs.q, inputs.k, inputs.v)),
                                                      scale=inputs.scale))
    for out in outputs:
        torch.testing.assert_close(out, reference, rtol=0, atol=2e-2)
    for name in histories[0]:
        torch.testing.assert_close(histories[0][name], histories[1][name], rtol=0, atol=2e-2)


def slightly_changed(inputs: VisualAttentionInputs, amount: float = 0.05) -> VisualAttentionInputs:
    gen = torch.Generator().manual_seed(7)
    return VisualAttentionInputs(*(x + amount * torch.randn(x.shape, generator=gen) for x in (inputs.q, inputs.k, inputs.v)),
                                 scale=inputs.scale)


def test_calibrated_refresh_is_exact_and_reuse_corrects_the_pooled_estimate():
    inputs = structured_inputs(GRID)
    call = make_call(GRID)
    method = history_method(rectify="calibrated")
    pattern = method.plan(inputs.q, inputs.k, call)
    assert pattern.density() < 0.5
    # The refresh computes every pair, then the pattern's pairs once more for the pooled output.
    torch.testing.assert_close(method.computed_density(pattern, inputs), 1 + pattern.density_per_head())
    torch.testing.assert_close(method.attend(inputs, pattern, call), dense_attention(inputs), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(method.computed_density(pattern, inputs), pattern.density_per_head())
    # Same inputs at a reusing step: the pooled output plus its measured error is the dense output again.
    torch.testing.assert_close(method.attend(inputs, pattern, call), dense_attention(inputs), rtol=1e-5, atol=1e-5)
    later = slightly_changed(inputs)
    reference = dense_attention(later)
    pooled = build_method("rectified", dict(SELECTION, density=0.1)).attend(later, pattern, call)
    assert relative_error(method.attend(later, pattern, call), reference) < 0.5 * relative_error(pooled, reference)


def test_history_tracks_slowly_changing_inputs_better_than_sparse():
    call = make_call(GRID)
    method = history_method()
    refresh_inputs = structured_inputs(GRID)
    pattern = method.plan(refresh_inputs.q, refresh_inputs.k, call)
    method.attend(refresh_inputs, pattern, call)
    later = slightly_changed(refresh_inputs)
    reference = dense_attention(later)
    sparse_error = relative_error(build_method("sparse", dict(SELECTION, density=0.1)).attend(later, pattern, call),
                                  reference)
    assert relative_error(method.attend(later, pattern, call), reference) < 0.5 * sparse_error


def test_history_is_measured_again_for_a_new_plan():
    call = make_call(GRID)
    method = history_method()
    first_inputs, second_inputs = structured_inputs(GRID, seed=1), structured_inputs(GRID, seed=2)
    first = method.plan(first_inputs.q, first_inputs.k, call)
    method.attend(first_inputs, first, call)
    second = method.plan(second_inputs.q, second_inputs.k, call)  # the runtime re-planned: a refresh step
    torch.testing.assert_close(method.attend(second_inputs, second, call), dense_attention(second_inputs),
                               rtol=1e-5, atol=1e-5)


def test_history_ratio_drift_grows_per_sparse_step():
    inputs = structured_inputs(GRID)
    call = make_call(GRID)
    plain, drifting = history_method(), history_method(ratio_drift=0.04)
    plain_pattern = plain.plan(inputs.q, inputs.k, call)
    drifting_pattern = drifting.plan(inputs.q, inputs.k, call)
    plain.attend(inputs, plain_pattern, call)
    drifting.attend(inputs, drifting_pattern, call)
    out_sparse = build_method("sparse", dict(SELECTION, density=0.1)).attend(inputs, plain_pattern, call)
    for sparse_steps in (1, 2):
        gap = drifting.attend(inputs, drifting_pattern, call) - plain.attend(inputs, plain_pattern, call)
        kept_share = plain_pattern.extras["kept_share"]
        expected_ratio_gap = (kept_share + 0.04 * sparse_steps).clamp(max=1.0) - kept_share
        torch.testing.assert_close(gap, expected_ratio_gap[..., None] * out_sparse, rtol=1e-4, atol=1e-5)


def token_estimate_oracle(inputs: VisualAttentionInputs, pattern) -> torch.Tensor:
    """The token estimate written out in float64, as the method's docstring states it: per token, the exact
    kept part (kept blocks and text) and n_j exp(q_t . k_bar_j * scale) v_bar_j over dropped blocks j,
    mixed by mass. Blocks follow the pattern's token order."""
    order, block = pattern.token_order, pattern.block_size
    q, k, v = (x.double() if order is None else x.double()[:, :, order] for x in (inputs.q, inputs.k, inputs.v))
    n = q.shape[2]
    block_of = torch.arange(n) // block
    kept = pattern.block_mask[:, :, block_of][..., block_of]  # (B|1, H|1, N, N) token pairs in kept blocks
    scores = (q @ k.transpose(-1, -2) * inputs.scale).masked_fill(~kept, float("-inf"))
    values = v
    if inputs.text_k is not None:
        text_scores = q @ inputs.text_k.double().transpose(-1, -2) * inputs.scale
        if inputs.text_key_mask is not None:
            text_scores = text_scores.masked_fill(~inputs.text_key_mask[:, None, None, :], float("-inf"))
        scores = torch.cat([scores, text_scores], -1)
        values = torch.cat([v, inputs.text_v.double().expand(v.shape[0], -1, -1, -1)], 2)
    n_blocks = pattern.num_blocks
    sizes = torch.bincount(block_of, minlength=n_blocks).double()
    k_bar = torch.zeros(*k.shape[:2], n_blocks, k.shape[-1], dtype=torch.float64).index_add_(2, block_of, k) / sizes[:, None]
    v_bar = torch.zeros_like(k_bar).index_add_(2, block_of, v) / sizes[:, None]
    pooled_scores = (q @ k_bar.transpose(-1, -2) * inputs.scale + sizes.log())
    pooled_scores = pooled_scores.masked_fill(pattern.block_mask[:, :, block_of], float("-inf"))
    weights = torch.cat([scores, pooled_scores], -1).softmax(-1)
    out = weights @ torch.cat([values, v_bar], 2)
    if order is not None:
        out = out[:, :, torch.argsort(order)]
    return out


@pytest.mark.parametrize("reorder, text_len", [("none", 0), ("hilbert", 0), ("none", 6)])
def test_token_estimate_is_the_stated_formula(reorder, text_len):
    """The kernel's pooled columns give exactly the per-token formula, in the pattern's token order."""
    grid = (4, 8, 8) if text_len else GRID
    inputs = structured_inputs(grid) if not text_len else random_inputs(grid, text_len=text_len)
    call = make_call(grid, text_len=text_len)
    method = build_method("rectified", dict(SELECTION, density=0.2, reorder=reorder))
    pattern = method.plan(inputs.q, inputs.k, call)
    assert not pattern.block_mask.all(), "the case must drop blocks"
    out = method.attend(inputs, pattern, call)
    expected = token_estimate_oracle(inputs, pattern)
    assert relative_error(out, expected) < 1e-5
