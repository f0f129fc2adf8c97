"""Holding a method's token order through the whole forward (runtime.TokenOrderHook), on Wan and LTX.

With the order held, the tokens entering the blocks (Wan's patch embedding, LTX's input projection), the
rotary table and the output projection are permuted once per forward and the attention layers move no rows;
the video must be the one the per-layer gathers give.
"""

import contextlib
import dataclasses

import pytest
import torch

import swiftdit
import swiftdit.methods.blocking as blocking
from swiftdit.runtime import TOKEN_ORDER_HOOK
from test_models import denoise
from tiny_models import _randn, tiny_ltx, tiny_wan, tiny_wan_i2v, tiny_wan_vace

# A (4, 16, 16) grid = 1024 tokens: 16 blocks of 64, 8 of 128, so that patterns really drop blocks.
GRID = (4, 16, 16)

# The structural blocks (3-D neighbours, first-frame sink) would keep almost every block of so small a grid.
SELECTION = dict(density=0.3, block_size=64, neighbours=False, first_frame_sink=False)
METHODS = [
    ("sparse", SELECTION),
    ("sparse", dict(SELECTION, reorder="hilbert")),
    ("clear", dict(radius=3, block_size=64)),
    ("draft", dict(sparsity=0.6)),
    ("rectified", dict(SELECTION, rectify="history", refresh_every=2)),
    ("rectified", dict(SELECTION, pooled_estimate="block")),
    ("sla", dict(SELECTION, reorder="patch")),
]


def on_larger_grid(tiny, **inputs):
    small_inputs = tiny.make_inputs

    def make_inputs(t):
        return {**small_inputs(t), **inputs}

    return dataclasses.replace(tiny, make_inputs=make_inputs, grid=GRID)


def wan_on_larger_grid(build=tiny_wan):  # latents (B, C, T, H, W) with 2x2 patches
    return on_larger_grid(build(), hidden_states=_randn(2, 4, GRID[0], 2 * GRID[1], 2 * GRID[2], seed=5))


def ltx_on_larger_grid():  # packed latents (B, S, C), patch size 1
    t, h, w = GRID
    return on_larger_grid(tiny_ltx(), hidden_states=_randn(1, t * h * w, 4, seed=5), num_frames=t, height=h,
                          width=w)


MODELS = {"wan": wan_on_larger_grid, "wan-i2v": lambda: wan_on_larger_grid(tiny_wan_i2v), "ltx": ltx_on_larger_grid}


@pytest.fixture
def row_moves(monkeypatch):
    """Counts the gathers the attention layers make (fused corrections on unmoved rows not counted)."""
    moves = []
    original = blocking.permute_tokens

    def counting(x, order, *args, **kwargs):
        if kwargs.get("row_scale") is None and kwargs.get("addend") is None:
            moves.append(tuple(x.shape))
        return original(x, order, *args, **kwargs)

    monkeypatch.setattr(blocking, "permute_tokens", counting)
    return moves


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("method,options", METHODS, ids=lambda v: v if isinstance(v, str) else None)
def test_held_order_gives_the_per_layer_result_without_moving_rows(model, method, options, row_moves):
    tiny = MODELS[model]()
    dense = denoise(tiny)
    swiftdit.enable_efficient_attention(tiny.model, method, hold_token_order=False, **options)
    per_layer = denoise(tiny)
    assert row_moves, "the per-layer path should reorder q, k, v"
    assert (per_layer - dense).abs().max() > 1e-3, "the pattern dropped nothing: the comparison would be empty"

    row_moves.clear()
    swiftdit.enable_efficient_attention(tiny.model, method, **options)  # held by default
    held = denoise(tiny)
    assert row_moves == []
    assert swiftdit.attention_session(tiny.model).denoisers[0].token_order_blocker is None
    torch.testing.assert_close(held, per_layer, rtol=0, atol=1e-5)


def test_methods_in_raster_order_hold_nothing(row_moves):
    tiny = wan_on_larger_grid()
    swiftdit.enable_efficient_attention(tiny.model, "sparse", density=0.3, block_size=64, reorder="none")
    session = swiftdit.attention_session(tiny.model)
    with torch.no_grad():
        tiny.model(**tiny.make_inputs(torch.tensor([500.0])))
    assert session.denoisers[0].forward.token_order is None
    assert row_moves == []


def per_token_timestep_inputs(tiny):
    small_inputs = tiny.make_inputs

    def make_inputs(t):
        inputs = small_inputs(t)
        return {**inputs, "timestep": t.expand(2)[:, None].expand(2, 90).contiguous()}

    return dataclasses.replace(tiny, make_inputs=make_inputs)


@pytest.mark.parametrize("case,blocker", [
    ("vace", "WanVACETransformer3DModel has no token-order hooks"),
    ("per-token timesteps", "per-token timesteps"),
    ("masked processor", "self-attention processor MaskedWanAttnProcessor"),
])
def test_forwards_the_hooks_cannot_cover_keep_raster_order(case, blocker):
    from swiftdit.pipelines.chunk_causal import chunk_causal_mask, masked_self_attention

    tiny = {"vace": tiny_wan_vace, "per-token timesteps": lambda: per_token_timestep_inputs(tiny_wan()),
            "masked processor": tiny_wan}[case]()
    options = dict(density=0.5, block_size=64)
    swiftdit.enable_efficient_attention(tiny.model, "sparse", hold_token_order=False, **options)
    with masked_self_attention(tiny.model) if case == "masked processor" else contextlib.nullcontext() as shared:
        if shared is not None:
            shared.mask = chunk_causal_mask(3, 30, 1)
        per_layer = denoise(tiny)
        swiftdit.enable_efficient_attention(tiny.model, "sparse", **options)
        default = denoise(tiny)
    assert blocker in swiftdit.attention_session(tiny.model).denoisers[0].token_order_blocker
    assert torch.equal(default, per_layer)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_disable_removes_the_token_order_hooks(model):
    tiny = MODELS[model]()
    reference = denoise(tiny)
    swiftdit.enable_efficient_attention(tiny.model, "sparse", density=0.3, block_size=64)
    entry_module = tiny.model.proj_in if model == "ltx" else tiny.model.patch_embedding
    hooked = [entry_module, tiny.model.rope, tiny.model.proj_out]
    assert all(m._diffusers_hook.get_hook(TOKEN_ORDER_HOOK) is not None for m in hooked)
    swiftdit.disable_efficient_attention(tiny.model)
    assert all(m._diffusers_hook.get_hook(TOKEN_ORDER_HOOK) is None for m in hooked)
    assert torch.equal(denoise(tiny), reference)


def test_hold_token_order_is_validated():
    tiny = tiny_wan()
    with pytest.raises(TypeError, match="hold_token_order.*True or False"):
        swiftdit.enable_efficient_attention(tiny.model, "sparse", hold_token_order="yes")


@pytest.mark.parametrize("pattern_order,arrival", [("perm", "other"), ("perm", None), (None, "other"),
                                                   ("perm", "perm"), (None, None)])
def test_reorder_and_restore_between_any_two_orders(pattern_order, arrival):
    """Rows arriving in one order reach the pattern's order and come back, whichever of them is raster."""
    from swiftdit.pattern import BlockPattern

    n = 40
    generator = torch.Generator().manual_seed(0)
    perms = {"perm": torch.randperm(n, generator=generator), "other": torch.randperm(n, generator=generator)}
    order, arrived_in = perms.get(pattern_order), perms.get(arrival)
    raster = torch.randn(1, 2, n, 3, generator=generator)
    arrived = raster if arrived_in is None else raster[:, :, arrived_in]
    in_pattern_order = blocking.reorder_tokens(arrived, order, arrived_in)
    torch.testing.assert_close(in_pattern_order, raster if order is None else raster[:, :, order])
    pattern = BlockPattern(torch.ones(1, 1, 3, 3, dtype=torch.bool), 16, n, token_order=order)
    torch.testing.assert_close(blocking.restore_token_order(in_pattern_order, pattern, arrived_in), arrived)
    scale = torch.rand(1, 2, n, generator=generator)
    restored = blocking.restore_token_order(in_pattern_order, pattern, arrived_in, row_scale=scale, addend=arrived)
    torch.testing.assert_close(restored, arrived * scale[..., None] + arrived)
