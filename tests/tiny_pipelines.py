"""Real diffusers pipeline classes around the tiny transformers of tiny_models.py, built offline.

No tokenizer or text encoder can be loaded without the Hub, so the pipelines are called with
precomputed (random, seeded) prompt embeddings, and with output_type="latent" and vae=None where the
pipeline allows it: the denoising loop, scheduler, CFG and cache-context calls are the real ones.
`TINY_PIPELINES[name]()` returns (pipeline, call kwargs, expected steps per call, CFG mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tiny_models import _randn, tiny_cogvideox, tiny_flux, tiny_hunyuan_video, tiny_wan


@dataclass
class TinyPipeline:
    pipe: object
    call_kwargs: dict
    num_steps: int
    # Branch names the pipeline gives its forwards within one step, in order.
    branches: tuple[str, ...]


def _generator_kwargs(kwargs: dict) -> dict:
    """Fresh seeded generator per call so that two calls see the same noise."""
    return {**kwargs, "generator": torch.Generator().manual_seed(0)}


def wan_pipeline(two_experts: bool = False) -> TinyPipeline:
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    transformer = tiny_wan().model
    extra = {}
    if two_experts:
        extra = {"transformer_2": tiny_wan().model, "boundary_ratio": 0.5}
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), **extra)
    kwargs = dict(prompt_embeds=_randn(1, 7, 32, seed=11), negative_prompt_embeds=_randn(1, 7, 32, seed=12),
                  height=96, width=80, num_frames=9, num_inference_steps=3, guidance_scale=5.0,
                  output_type="latent", return_dict=False)
    return TinyPipeline(pipe, kwargs, 3, ("cond", "uncond"))


def wan22_pipeline() -> TinyPipeline:
    return wan_pipeline(two_experts=True)


def flux_pipeline() -> TinyPipeline:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=tiny_flux().model)
    kwargs = dict(prompt_embeds=_randn(1, 7, 32, seed=11), pooled_prompt_embeds=_randn(1, 32, seed=12),
                  height=96, width=80, num_inference_steps=3, guidance_scale=3.5, output_type="latent",
                  return_dict=False)
    return TinyPipeline(pipe, kwargs, 3, ("cond",))


def cogvideox_pipeline() -> TinyPipeline:
    from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline

    pipe = CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=tiny_cogvideox().model,
                             scheduler=CogVideoXDDIMScheduler())
    kwargs = dict(prompt_embeds=_randn(1, 8, 8, seed=11), negative_prompt_embeds=_randn(1, 8, 8, seed=12),
                  height=96, width=80, num_frames=9, num_inference_steps=3, guidance_scale=6.0,
                  output_type="latent", return_dict=False)
    return TinyPipeline(pipe, kwargs, 3, ("cond_uncond",))


def hunyuan_video_pipeline() -> TinyPipeline:
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline

    pipe = HunyuanVideoPipeline(text_encoder=None, tokenizer=None, transformer=tiny_hunyuan_video().model, vae=None,
                                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=None,
                                tokenizer_2=None)
    mask = torch.ones(1, 9, dtype=torch.long)
    mask[:, 7:] = 0
    kwargs = dict(prompt_embeds=_randn(1, 9, 16, seed=11), pooled_prompt_embeds=_randn(1, 8, seed=12),
                  prompt_attention_mask=mask, height=48, width=48, num_frames=9, num_inference_steps=3,
                  output_type="latent", return_dict=False)
    return TinyPipeline(pipe, kwargs, 3, ("cond",))


TINY_PIPELINES: dict[str, Callable[[], TinyPipeline]] = {
    "wan": wan_pipeline,
    "wan22": wan22_pipeline,
    "flux": flux_pipeline,
    "cogvideox": cogvideox_pipeline,
    "hunyuan_video": hunyuan_video_pipeline,
}


def run(tiny: TinyPipeline) -> torch.Tensor:
    with torch.no_grad():
        out = tiny.pipe(**_generator_kwargs(tiny.call_kwargs))
    return out[0] if isinstance(out, tuple) else out
