"""Text-to-video pipeline of the embedded model, called like diffusers' video pipelines.

It follows `WanPipeline`'s denoising loop (two forwards per step under `cache_context("cond")` and
`cache_context("uncond")` with the step index, `_num_timesteps`, `current_timestep`) so that step-aware
attention replacements see the same signals as on a real Wan model. There is no autoencoder: the denoiser
works on pixels in [-1, 1].

Two generation modes share the weights:
- "full": every frame is denoised together with full attention, the usual way;
- "chunked": chunks of `chunk_latent_frames` latent frames are generated one after another under the
  chunk-causal mask; while chunk c is denoised the finished chunks are fed alongside it at timestep 0 and
  recomputed at each step (rolling generation keeps their keys and values in a cache instead).
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor
from transformers import PreTrainedTokenizerBase, T5EncoderModel

from swiftdit.pipelines.chunk_causal import (
    chunk_causal_mask, masked_self_attention, per_token_timesteps, tokens_per_latent_frame,
)
from swiftdit.pipelines.embedded_model import encode_prompts
from swiftdit.validation import check_choice, check_float, check_int

GENERATION_MODES = ("full", "chunked")
OUTPUT_TYPES = ("np", "pt", "pil", "latent")


class MovingShapesPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->transformer"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, text_encoder: T5EncoderModel,
                 transformer: WanTransformer3DModel, scheduler: FlowMatchEulerDiscreteScheduler,
                 chunk_latent_frames: int = 2):
        super().__init__()
        check_int("MovingShapesPipeline", "chunk_latent_frames", chunk_latent_frames, minimum=1)
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer,
                              scheduler=scheduler)
        self.register_to_config(chunk_latent_frames=chunk_latent_frames)
        self.video_processor = VideoProcessor(vae_scale_factor=1)
        self._current_timestep = None
        self._num_timesteps = None

    @property
    def num_timesteps(self):
        return self._num_timesteps

    @property
    def current_timestep(self):
        return self._current_timestep

    def encode_prompt(self, prompt: str | list[str], device: torch.device) -> torch.Tensor:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        return encode_prompts(self.tokenizer, self.text_encoder, prompts, self.tokenizer.model_max_length, device)

    def prepare_latents(self, shape: tuple[int, ...], generator: torch.Generator | list[torch.Generator] | None,
                        device: torch.device, latents: torch.Tensor | None = None) -> torch.Tensor:
        """The initial noise, float32 on `device` (or the given `latents`, checked and moved there).

        As in diffusers' pipelines, a list of generators holds one per video (prompts x num_videos_per_prompt)
        and video i's noise is drawn from generator i alone (`randn_tensor`), so a video of a batched call
        starts from the noise an unbatched call with the same generator state draws.
        """
        if isinstance(generator, list) and len(generator) != shape[0]:
            raise ValueError(f"option 'generator' is a list of {len(generator)} generators for {shape[0]} videos "
                             "(prompts x num_videos_per_prompt); pass one generator per video or a single one")
        if latents is None:
            return randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        if tuple(latents.shape) != tuple(shape):
            raise ValueError(f"option 'latents' must be shaped {tuple(shape)}, got {tuple(latents.shape)}")
        return latents.to(device=device, dtype=torch.float32)

    def check_inputs(self, num_frames, height, width, num_inference_steps, guidance_scale, generation_mode,
                     output_type):
        owner = type(self).__name__
        check_choice(owner, "generation_mode", generation_mode, GENERATION_MODES)
        check_choice(owner, "output_type", output_type, OUTPUT_TYPES)
        check_int(owner, "num_inference_steps", num_inference_steps, minimum=1)
        check_float(owner, "guidance_scale", guidance_scale, minimum=0.0)
        patch_t, patch_h, patch_w = self.transformer.config.patch_size
        frame_multiple = patch_t * (self.config.chunk_latent_frames if generation_mode == "chunked" else 1)
        for name, value, multiple in (("num_frames", num_frames, frame_multiple), ("height", height, patch_h),
                                      ("width", width, patch_w)):
            check_int(owner, name, value, minimum=multiple)
            if value % multiple:
                raise ValueError(f"{owner}: option '{name}' must be a multiple of {multiple} "
                                 f"(generation_mode={generation_mode!r}), got {value}")

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_frames: int = 16,
        height: int = 64,
        width: int = 64,
        num_inference_steps: int = 30,
        guidance_scale: float = 4.0,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        generation_mode: str = "full",
        output_type: str = "np",
        return_dict: bool = True,
    ):
        self.check_inputs(num_frames, height, width, num_inference_steps, guidance_scale, generation_mode,
                          output_type)
        check_int(type(self).__name__, "num_videos_per_prompt", num_videos_per_prompt, minimum=1)
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("pass exactly one of 'prompt' and 'prompt_embeds'")
        device = self._execution_device
        use_guidance = guidance_scale > 1.0

        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt(prompt, device)
        if use_guidance and negative_prompt_embeds is None:
            negative = "" if negative_prompt is None else negative_prompt
            if isinstance(negative, str):
                negative = [negative] * prompt_embeds.shape[0]
            negative_prompt_embeds = self.encode_prompt(negative, device)
        dtype = self.transformer.dtype
        prompt_embeds = prompt_embeds.repeat_interleave(num_videos_per_prompt, dim=0).to(dtype)
        if use_guidance:
            negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_videos_per_prompt, dim=0).to(dtype)

        shape = (prompt_embeds.shape[0], self.transformer.config.in_channels, num_frames, height, width)
        latents = self.prepare_latents(shape, generator, device, latents)

        self._guidance_scale = guidance_scale
        guidance = guidance_scale if use_guidance else None
        total_steps = num_inference_steps
        if generation_mode == "chunked":
            chunk_video_frames = self.config.chunk_latent_frames * self.transformer.config.patch_size[0]
            total_steps *= num_frames // chunk_video_frames
        with self.progress_bar(total=total_steps) as progress_bar:
            if generation_mode == "full":
                video = self._denoise(latents, None, prompt_embeds, negative_prompt_embeds, guidance,
                                      num_inference_steps, None, progress_bar)
            else:
                video = self._generate_chunks(latents, prompt_embeds, negative_prompt_embeds, guidance,
                                              num_inference_steps, progress_bar)
        self._current_timestep = None

        if output_type != "latent":
            video = self.video_processor.postprocess_video(video, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (video,)
        return WanPipelineOutput(frames=video)

    def _generate_chunks(self, latents, prompt_embeds, negative_prompt_embeds, guidance, num_inference_steps,
                         progress_bar):
        chunk_frames = self.config.chunk_latent_frames
        chunk_video_frames = chunk_frames * self.transformer.config.patch_size[0]
        frame_tokens = tokens_per_latent_frame(self.transformer, latents.shape[3], latents.shape[4])
        finished = latents[:, :, :0]
        with masked_self_attention(self.transformer) as shared_mask:
            for start in range(0, latents.shape[2], chunk_video_frames):
                noise = latents[:, :, start:start + chunk_video_frames]
                num_latent_frames = (start + chunk_video_frames) // self.transformer.config.patch_size[0]
                mask = chunk_causal_mask(num_latent_frames, frame_tokens, chunk_frames, latents.device)
                with shared_mask.applied(mask):
                    chunk = self._denoise(noise, finished, prompt_embeds, negative_prompt_embeds, guidance,
                                          num_inference_steps, frame_tokens * chunk_frames, progress_bar)
                finished = torch.cat([finished, chunk], dim=2)
        return finished

    def _denoise(self, sample, context, prompt_embeds, negative_prompt_embeds, guidance, num_inference_steps,
                 chunk_tokens, progress_bar):
        """Run the sampler on `sample`; `context` (finished frames, or None) is fed in front at timestep 0."""
        self.scheduler.set_timesteps(num_inference_steps, device=sample.device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        self.scheduler.set_begin_index(0)
        dtype = self.transformer.dtype
        batch_size = sample.shape[0]
        for i, t in enumerate(timesteps):
            self._current_timestep = t
            if context is None:
                model_input = sample
                timestep = t.expand(batch_size)
            else:
                model_input = torch.cat([context, sample], dim=2)
                # `sample` is exactly one chunk, so the input holds this many chunks.
                num_chunks = model_input.shape[2] // sample.shape[2]
                chunk_timesteps = torch.zeros(batch_size, num_chunks, device=sample.device)
                chunk_timesteps[:, -1] = t
                timestep = per_token_timesteps(chunk_timesteps, chunk_tokens)
            model_input = model_input.to(dtype)
            cache_context_kwargs = {"step_index": i, "sigma": float(self.scheduler.sigmas[i]),
                                    "num_inference_steps": self._num_timesteps}
            with self.transformer.cache_context("cond", **cache_context_kwargs):
                velocity = self.transformer(hidden_states=model_input, timestep=timestep,
                                            encoder_hidden_states=prompt_embeds, return_dict=False)[0]
            if guidance is not None:
                with self.transformer.cache_context("uncond", **cache_context_kwargs):
                    velocity_uncond = self.transformer(hidden_states=model_input, timestep=timestep,
                                                       encoder_hidden_states=negative_prompt_embeds,
                                                       return_dict=False)[0]
                velocity = velocity_uncond + guidance * (velocity - velocity_uncond)
            velocity = velocity[:, :, -sample.shape[2]:].float()
            sample = self.scheduler.step(velocity, t, sample, return_dict=False)[0]
            progress_bar.update()
        return sample

