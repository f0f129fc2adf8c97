"""Composition with the rest of the diffusers toolbox: cache hooks, CPU offload, LoRA, torch.compile."""

import pytest
import torch
from diffusers import FirstBlockCacheConfig, TaylorSeerCacheConfig
from torch._dynamo.utils import counters

import swiftdit  # noqa: F401  (importing it gives pipelines enable_efficient_attention)
from tiny_pipelines import TINY_PIPELINES, run


@pytest.mark.parametrize("config", [FirstBlockCacheConfig(threshold=0.05), TaylorSeerCacheConfig()],
                         ids=["first_block_cache", "taylorseer"])
def test_diffusers_cache_hooks(config):
    tiny = TINY_PIPELINES["wan"]()
    tiny.pipe.transformer.enable_cache(config)
    reference = run(tiny)
    tiny.pipe.enable_efficient_attention("dense")
    assert torch.equal(run(tiny), reference)
    tiny.pipe.enable_efficient_attention("sparse", density=1.0)
    torch.testing.assert_close(run(tiny), reference, rtol=1e-4, atol=1e-4)
    tiny.pipe.disable_efficient_attention()
    assert torch.equal(run(tiny), reference)


@pytest.mark.parametrize("offload_first", [True, False], ids=["offload_then_enable", "enable_then_offload"])
def test_model_cpu_offload(offload_first):
    tiny = TINY_PIPELINES["wan"]()
    reference = run(tiny)
    if offload_first:
        tiny.pipe.enable_model_cpu_offload(device="cpu")
        tiny.pipe.enable_efficient_attention("dense")
    else:
        tiny.pipe.enable_efficient_attention("dense")
        tiny.pipe.enable_model_cpu_offload(device="cpu")
    assert torch.equal(run(tiny), reference)
    tiny.pipe.disable_efficient_attention()
    assert torch.equal(run(tiny), reference)
    assert hasattr(tiny.pipe.transformer, "_hf_hook"), "disabling swiftdit removed accelerate's offload hook"


def test_lora_adapter():
    peft = pytest.importorskip("peft")
    tiny = TINY_PIPELINES["wan"]()
    tiny.pipe.transformer.add_adapter(peft.LoraConfig(
        r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    reference = run(tiny)
    tiny.pipe.enable_efficient_attention("dense")
    assert torch.equal(run(tiny), reference)
    tiny.pipe.disable_efficient_attention()
    assert torch.equal(run(tiny), reference)


def test_torch_compile_does_not_recompile_per_step():
    tiny = TINY_PIPELINES["wan"]()
    tiny.call_kwargs.update(num_inference_steps=4)
    tiny.pipe.enable_efficient_attention("sparse", density=0.5, dense_steps=1)
    eager = run(tiny)
    tiny.pipe.transformer.compile(backend="eager")
    counters.clear()
    compiled = run(tiny)  # first call compiles (dense step 0, sparse steps 1-3)
    frames_after_first_call = counters["frames"]["total"]
    assert frames_after_first_call > 0
    tiny.call_kwargs.update(num_inference_steps=6)
    again = run(tiny)
    assert counters["frames"]["total"] == frames_after_first_call, "a new step or call triggered a recompile"
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    assert again.shape == compiled.shape
