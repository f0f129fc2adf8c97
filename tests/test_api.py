"""Public API: validation before patching, report, replace-not-stack, atomic failure."""

import pytest
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler

import swiftdit
from tiny_models import tiny_wan
from tiny_pipelines import TINY_PIPELINES, run


def hook_names(model):
    registry = getattr(model, "_diffusers_hook", None)
    return set(registry.hooks) if registry is not None else set()


def processor_backends(model):
    return {name: p._attention_backend for name, p in model.attn_processors.items()}


def test_available_methods_and_pipeline_methods_exist():
    assert {"dense", "sparse"} <= set(swiftdit.available_methods())
    assert hasattr(DiffusionPipeline, "enable_efficient_attention")
    assert hasattr(DiffusionPipeline, "disable_efficient_attention")


@pytest.mark.parametrize(
    "method, options, message",
    [
        ("nope", {}, "unknown attention method 'nope'; available methods are"),
        ("sparse", {"densty": 0.5}, "unknown option(s) ['densty']; allowed options are"),
        ("sparse", {"density": 1.5}, "option 'density' must be in"),
        ("sparse", {"block_size": 100}, "option 'block_size' must be one of [64, 128]"),
        ("dense", {"dense_steps": -1}, "option 'dense_steps' must be in [0, inf]"),
        ("dense", {"refresh_every": 0}, "option 'refresh_every' must be in [1, inf]"),
    ],
)
def test_bad_options_are_rejected_before_anything_is_patched(method, options, message):
    tiny = TINY_PIPELINES["wan"]()
    tiny.pipe.enable_efficient_attention("dense")  # a previous configuration must survive a failed enable
    hooks_before = hook_names(tiny.pipe.transformer)
    backends_before = processor_backends(tiny.pipe.transformer)
    with pytest.raises(ValueError) as error:
        tiny.pipe.enable_efficient_attention(method, **options)
    assert message in str(error.value)
    assert hook_names(tiny.pipe.transformer) == hooks_before
    assert processor_backends(tiny.pipe.transformer) == backends_before
    assert swiftdit.attention_session(tiny.pipe).method.name == "dense"


def test_wrong_types_raise_type_error():
    tiny = TINY_PIPELINES["wan"]()
    with pytest.raises(TypeError, match="option 'dense_steps' must be an int"):
        tiny.pipe.enable_efficient_attention("dense", dense_steps=1.5)
    with pytest.raises(TypeError, match="method must be a string"):
        tiny.pipe.enable_efficient_attention(3)
    with pytest.raises(TypeError, match="expects a diffusers DiffusionPipeline or a transformer"):
        swiftdit.enable_efficient_attention("not a pipeline", "dense")


def test_unsupported_model_lists_supported_classes():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="does not support the model class Linear; supported classes are .*WanTransformer3DModel"):
        swiftdit.enable_efficient_attention(model, "dense")


def test_pipeline_without_transformer():
    class NoTransformerPipeline(DiffusionPipeline):
        def __init__(self, scheduler):
            super().__init__()
            self.register_modules(scheduler=scheduler)

    pipe = NoTransformerPipeline(FlowMatchEulerDiscreteScheduler())
    with pytest.raises(ValueError, match="has no transformer to patch"):
        pipe.enable_efficient_attention("dense")


def test_enabling_twice_replaces_instead_of_stacking():
    tiny = TINY_PIPELINES["wan"]()
    reference = run(tiny)
    tiny.pipe.enable_efficient_attention("sparse", density=0.5)
    tiny.pipe.enable_efficient_attention("dense")
    model = tiny.pipe.transformer
    assert [h for h in hook_names(model) if h.startswith("swiftdit")] == ["swiftdit_denoiser"]
    layer_hooks = [n for n, m in model.named_modules() if "swiftdit_attention_layer" in hook_names(m)]
    assert layer_hooks == ["blocks.0.attn1", "blocks.1.attn1"]
    assert torch.equal(run(tiny), reference)


def test_failed_install_rolls_back(monkeypatch):
    tiny = TINY_PIPELINES["wan22"]()
    reference = run(tiny)
    backends = processor_backends(tiny.pipe.transformer)
    from swiftdit import runtime

    original_install = runtime.EfficientAttentionSession.install

    def install_then_fail_on_second(self, key, model, adapter):
        entry = original_install(self, key, model, adapter)
        if key == "transformer_2":
            raise RuntimeError("simulated failure while patching the second expert")
        return entry

    monkeypatch.setattr(runtime.EfficientAttentionSession, "install", install_then_fail_on_second)
    with pytest.raises(RuntimeError, match="simulated failure"):
        tiny.pipe.enable_efficient_attention("sparse", density=0.5)
    for model in (tiny.pipe.transformer, tiny.pipe.transformer_2):
        assert not any(h.startswith("swiftdit") for h in hook_names(model))
        assert not any(h.startswith("swiftdit") for m in model.modules() for h in hook_names(m))
    assert processor_backends(tiny.pipe.transformer) == backends
    assert swiftdit.attention_session(tiny.pipe) is None
    assert torch.equal(run(tiny), reference)


def test_report_lists_swapped_and_kept_modules():
    tiny = TINY_PIPELINES["wan"]()
    report = tiny.pipe.enable_efficient_attention("sparse", density=0.5, dense_layers=1)
    (denoiser,) = report.denoisers
    assert denoiser.swapped == ["blocks.0.attn1", "blocks.1.attn1"]
    assert denoiser.dense_layers == ["blocks.0.attn1"]
    assert denoiser.kept == {"blocks.0.attn2": "cross-attention to text/image", "blocks.1.attn2": "cross-attention to text/image"}
    text = str(report)
    assert "method 'sparse'" in text and "blocks.1.attn1" in text and "cross-attention" in text


def test_transformer_can_be_enabled_directly():
    tiny = tiny_wan()
    report = swiftdit.enable_efficient_attention(tiny.model, "dense")
    assert report.denoisers[0].component == "transformer"
    swiftdit.disable_efficient_attention(tiny.model)
    assert not any(h.startswith("swiftdit") for h in hook_names(tiny.model))


def test_user_backend_still_applies_to_dense_calls():
    """A backend chosen with set_attention_backend after enabling becomes the dense fallback."""
    from diffusers.models import attention_dispatch

    tiny = TINY_PIPELINES["wan"]()
    tiny.pipe.enable_efficient_attention("sparse", density=0.5, dense_steps=3)
    seen = []
    native = attention_dispatch._AttentionBackendRegistry._backends[attention_dispatch.AttentionBackendName._NATIVE_MATH]

    def spy(*args, **kwargs):
        seen.append(1)
        return native(*args, **kwargs)

    registry = attention_dispatch._AttentionBackendRegistry
    original = registry._backends[attention_dispatch.AttentionBackendName._NATIVE_MATH]
    registry._backends[attention_dispatch.AttentionBackendName._NATIVE_MATH] = spy
    try:
        tiny.pipe.transformer.set_attention_backend("_native_math")
        run(tiny)
        swapped = {p._attention_backend for n, p in tiny.pipe.transformer.attn_processors.items() if "attn1" in n}
    finally:
        registry._backends[attention_dispatch.AttentionBackendName._NATIVE_MATH] = original
        tiny.pipe.transformer.reset_attention_backend()
        registry.set_active_backend(attention_dispatch.AttentionBackendName.NATIVE)
    # 3 dense steps x 2 branches x 2 blocks x (self + cross attention) all reach the user's backend.
    assert len(seen) == 3 * 2 * 2 * 2
    assert swapped == {"swiftdit"}  # the plugin took its layers back for the sparse steps
