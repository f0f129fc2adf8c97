"""`stream_video`: video of any length from a chunk-causal Wan model, with a KV cache of sink + window frames.

Two schedules share one loop over "chunks in flight" (see `VideoStream._finished_chunks`):
- "chunked" (Self-Forcing): one chunk in flight; it takes every denoising step, then joins the cache;
- "rolling" (Rolling Forcing): `rolling_chunks` chunks in flight at staggered noise levels, denoised
  jointly (chunk-causally inside the window, the way the model was trained), each forward advancing every
  chunk by one step; whenever the oldest is clean it joins the cache and a fresh noise chunk enters.
Both step the flow-matching ODE with the scheduler's own sigmas, one Euler step per chunk per forward, so
with one chunk in flight the result is the pipeline's chunk-by-chunk generation.

Frames are counted in latent frames of the transformer's grid (after the VAE and the temporal patch), except
`num_frames` and the prompt switch frames, which count output video frames.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import threading
from typing import Iterator, Sequence

import numpy as np
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
from diffusers.utils.torch_utils import randn_tensor

from swiftdit.api import attention_session
from swiftdit.pipelines.chunk_causal import per_token_timesteps, tokens_per_latent_frame
from swiftdit.pipelines.kv_cache import RollingKVCache, kv_cached_self_attention
from swiftdit.pipelines.pipeline_moving_shapes import MovingShapesPipeline
from swiftdit.validation import check_choice, check_float, check_int

SCHEDULES = ("chunked", "rolling")
OWNER = "stream_video"

Prompt = str | torch.Tensor  # text, or its embeddings (1, text tokens, text_dim) as the transformer takes them


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """Sizes of a stream, validated against each other (the model-dependent checks are in `VideoStream`)."""

    num_frames: int
    chunk_frames: int
    window_frames: int | None  # None: unbounded, every finished frame stays in the cache
    sink_frames: int
    schedule: str = "chunked"
    rolling_chunks: int | None = None  # chunks in flight under "rolling"; None: one per denoising step
    num_inference_steps: int = 4
    guidance_scale: float = 1.0
    height: int = 64
    width: int = 64
    # Noise level in [0, 1) at which the cached frames are re-cached after a prompt switch (0: clean, as in
    # LongLive). A chunk-causally trained model follows clean context closely, so the old object carries on
    # after a switch; context re-cached partly noised (a situation its per-chunk noise training covers) binds
    # it less. 0.8: the new colour and direction within 2 chunks in 22 of 24 switches on the embedded model,
    # against 17 clean (CPU; BENCHMARKS.md, rolling generation).
    switch_context_noise: float = 0.8

    def __post_init__(self):
        check_int(OWNER, "num_frames", self.num_frames, minimum=1)
        check_int(OWNER, "chunk_frames", self.chunk_frames, minimum=1)
        check_int(OWNER, "sink_frames", self.sink_frames, minimum=0)
        check_choice(OWNER, "schedule", self.schedule, SCHEDULES)
        check_int(OWNER, "num_inference_steps", self.num_inference_steps, minimum=1)
        check_float(OWNER, "guidance_scale", self.guidance_scale, minimum=0.0)
        check_int(OWNER, "height", self.height, minimum=1)
        check_int(OWNER, "width", self.width, minimum=1)
        # 1 would be pure noise: no context left to re-cache.
        check_float(OWNER, "switch_context_noise", self.switch_context_noise, minimum=0.0, maximum=1.0,
                    exclusive_maximum=True)
        # The cache gains and loses whole chunks, so that every forward feeds whole chunks.
        self._check_whole_chunks("sink_frames", self.sink_frames)
        if self.window_frames is not None:
            check_int(OWNER, "window_frames", self.window_frames, minimum=1)
            if self.window_frames < self.chunk_frames:
                raise ValueError(f"{OWNER}: option 'window_frames' ({self.window_frames}) is smaller than a chunk "
                                 f"('chunk_frames' = {self.chunk_frames}): the newest finished chunk must fit")
            self._check_whole_chunks("window_frames", self.window_frames)
            if self.sink_frames > self.window_frames:
                raise ValueError(f"{OWNER}: option 'sink_frames' ({self.sink_frames}) is larger than the window "
                                 f"('window_frames' = {self.window_frames})")
        if self.rolling_chunks is not None:
            if self.schedule != "rolling":
                raise ValueError(f"{OWNER}: option 'rolling_chunks' only applies to schedule='rolling'")
            check_int(OWNER, "rolling_chunks", self.rolling_chunks, minimum=1)
        if self.num_inference_steps % self.chunks_in_flight:
            raise ValueError(f"{OWNER}: option 'rolling_chunks' ({self.chunks_in_flight}) must divide "
                             f"'num_inference_steps' ({self.num_inference_steps}) so that chunks in flight sit "
                             "at evenly spaced steps")

    def _check_whole_chunks(self, name: str, value: int) -> None:
        if value % self.chunk_frames:
            raise ValueError(f"{OWNER}: option '{name}' ({value}) must be a multiple of 'chunk_frames' "
                             f"({self.chunk_frames})")

    @property
    def chunks_in_flight(self) -> int:
        if self.schedule == "chunked":
            return 1
        return self.num_inference_steps if self.rolling_chunks is None else self.rolling_chunks

    @property
    def steps_between_entries(self) -> int:
        """Steps the newest chunk takes before the next one enters the window."""
        return self.num_inference_steps // self.chunks_in_flight

    def largest_forward_frames(self, total_latent_frames: int) -> int:
        """Most latent frames one forward spans (cached + fed): what must fit in the RoPE table."""
        if self.window_frames is None:
            return total_latent_frames
        return self.sink_frames + self.window_frames + self.chunks_in_flight * self.chunk_frames


def prompt_schedule(prompt: Prompt | Sequence[tuple[int, Prompt]], num_frames: int) -> list[tuple[int, Prompt]]:
    """[(start_frame, prompt)], starting at frame 0, strictly increasing, every start inside the video."""
    if isinstance(prompt, (str, torch.Tensor)):
        return [(0, prompt)]
    schedule = list(prompt)
    if not schedule:
        raise ValueError(f"{OWNER}: option 'prompt' is an empty list; pass a prompt or (start_frame, prompt) pairs")
    for entry in schedule:
        if (not isinstance(entry, tuple) or len(entry) != 2 or not isinstance(entry[1], (str, torch.Tensor))):
            raise ValueError(f"{OWNER}: option 'prompt' must be a prompt or a list of (start_frame, prompt) pairs, "
                             f"got the entry {entry!r}")
        check_int(OWNER, "prompt start_frame", entry[0], minimum=0, maximum=num_frames - 1)
    starts = [start for start, _ in schedule]
    if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
        raise ValueError(f"{OWNER}: option 'prompt' switch frames must start at 0 and increase, got {starts}")
    return schedule


class DecodedChunk:
    """One chunk's (F, H, W, 3) uint8 frames, decoded or still decoding on the GPU."""

    def __init__(self, frames: torch.Tensor | np.ndarray, done: torch.cuda.Event | None = None):
        self._frames = frames  # a pinned host tensor that the GPU fills by `done`, or the frames themselves
        self._done = done

    @property
    def on_gpu(self) -> bool:
        """Whether the frames are still being decoded on the GPU (or may be)."""
        return self._done is not None

    def frames(self) -> np.ndarray:
        if self._done is not None:
            self._done.synchronize()
        return self._frames.numpy() if isinstance(self._frames, torch.Tensor) else self._frames


def uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """(3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8, as diffusers' video postprocessing followed by rounding."""
    return ((video.float() / 2 + 0.5).clamp(0.0, 1.0) * 255).round().to(torch.uint8).permute(1, 2, 3, 0)


class PixelFrames:
    """Output of a pixel-space denoiser (the embedded model): samples in [-1, 1] are the frames."""

    def __init__(self, pipe):  # the same constructor as WanVaeFrames; the pipeline holds nothing it needs
        pass

    def video_frames(self, sample_frames: int) -> int:
        return sample_frames

    def start_decode(self, samples: torch.Tensor) -> DecodedChunk:
        return DecodedChunk(uint8_frames(samples[0]).cpu().numpy())


class WanVaeFrames:
    """Decodes Wan latents chunk by chunk with the causal VAE's feature cache carried from chunk to chunk, so
    that the streamed frames are the ones a whole-video decode gives (first latent frame: 1 frame, then 4).

    diffusers' `AutoencoderKLWan._decode` clears that cache at every call, hence the frame-by-frame loop on
    its decoder here, with the same private cache fields.

    On CUDA a chunk decodes on a stream of its own while the next chunk's forwards run on the main one (the
    decode is about as long as the forwards at Wan2.1's size: BENCHMARKS.md, rolling generation), and its
    frames come back to the host through pinned memory without stopping the queue of forwards.
    """

    def __init__(self, pipe):
        self.vae = pipe.vae
        self.temporal_factor = self.vae.config.scale_factor_temporal
        z_dim = self.vae.config.z_dim
        self.latents_mean = torch.tensor(self.vae.config.latents_mean, device=self.vae.device).view(1, z_dim, 1, 1, 1)
        self.latents_std = torch.tensor(self.vae.config.latents_std, device=self.vae.device).view(1, z_dim, 1, 1, 1)
        self.first_frame = True
        self.vae.clear_cache()
        self.stream = torch.cuda.Stream(self.vae.device) if self.vae.device.type == "cuda" else None

    def video_frames(self, sample_frames: int) -> int:
        return 1 + self.temporal_factor * (sample_frames - 1) if sample_frames else 0

    def start_decode(self, samples: torch.Tensor) -> DecodedChunk:
        if self.stream is None:
            return DecodedChunk(self.decode(samples).cpu().numpy())
        self.stream.wait_stream(torch.cuda.current_stream(samples.device))  # the forwards that made `samples`
        with torch.cuda.stream(self.stream):
            frames = self.decode(samples)
            host = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
            host.copy_(frames, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        samples.record_stream(self.stream)  # the main stream must not reuse its memory before the decode read it
        return DecodedChunk(host, done)

    @torch.no_grad()
    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """(F, H, W, 3) uint8 frames on the VAE's device, F = 4 per latent frame (1 for the video's first)."""
        vae = self.vae
        samples = samples.to(self.latents_std) * self.latents_std + self.latents_mean
        features = vae.post_quant_conv(samples.to(vae.dtype))
        decoded = []
        for index in range(features.shape[2]):
            vae._conv_idx = [0]
            decoded.append(vae.decoder(features[:, :, index:index + 1], feat_cache=vae._feat_map,
                                       feat_idx=vae._conv_idx, first_chunk=self.first_frame))
            self.first_frame = False
        return uint8_frames(torch.cat(decoded, dim=2)[0])


def streamable_transformer(pipe) -> WanTransformer3DModel:
    """The pipeline's chunk-causal Wan denoiser, or a ValueError that says why the pipeline cannot stream."""
    transformer = getattr(pipe, "transformer", None)
    if not isinstance(transformer, WanTransformer3DModel):
        raise ValueError(f"{OWNER}: {type(pipe).__name__} cannot be streamed: it needs a WanTransformer3DModel "
                         f"denoiser (got {type(transformer).__name__})")
    if getattr(pipe, "transformer_2", None) is not None:
        raise ValueError(f"{OWNER}: {type(pipe).__name__} cannot be streamed: it switches between two experts "
                         "by noise level, while a rolling window holds chunks at several levels at once")
    if transformer.config.image_dim is not None:
        raise ValueError(f"{OWNER}: {type(pipe).__name__} cannot be streamed: image-conditioned Wan models "
                         "(image tokens in cross-attention) are not supported")
    if not isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler):
        raise ValueError(f"{OWNER}: {type(pipe).__name__} cannot be streamed with a "
                         f"{type(pipe.scheduler).__name__}: chunks at different noise levels take their own Euler "
                         "steps, which needs FlowMatchEulerDiscreteScheduler's sigmas")
    return transformer


def frame_decoder(pipe) -> PixelFrames | WanVaeFrames:
    return frame_decoder_class(pipe)(pipe)


def frame_decoder_class(pipe) -> type[PixelFrames] | type[WanVaeFrames]:
    """How the pipeline's samples become frames, or a ValueError that says why the pipeline cannot stream."""
    vae = getattr(pipe, "vae", None)
    if vae is None and hasattr(pipe, "video_processor"):
        return PixelFrames
    if isinstance(vae, AutoencoderKLWan):
        return WanVaeFrames
    raise ValueError(f"{OWNER}: {type(pipe).__name__} cannot be streamed: its frames are decoded by "
                     f"{type(vae).__name__}, not AutoencoderKLWan or a pixel-space model")


def encode_prompt(pipe, prompt: Prompt, device: torch.device) -> torch.Tensor:
    """(1, text tokens, text_dim) embeddings; text goes through the pipeline's own encoder."""
    if isinstance(prompt, torch.Tensor):
        return prompt.to(device)
    if isinstance(pipe, MovingShapesPipeline):
        return pipe.encode_prompt(prompt, device)
    return pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device=device)[0]


@dataclasses.dataclass
class ChunkInFlight:
    samples: torch.Tensor  # (1, C, chunk sample frames, h, w), float32, at the noise level of `steps_done`
    steps_done: int = 0


class VideoStream:
    """One stream's state: the KV cache, the chunks in flight, the prompt in force. `frames()` runs it;
    `switch_prompt` changes the prompt while it runs."""

    def __init__(self, pipe, prompt: Prompt | Sequence[tuple[int, Prompt]], config: StreamConfig,
                 negative_prompt: Prompt = "", generator: torch.Generator | None = None):
        self.pipe = pipe
        self.config = config
        self.transformer = streamable_transformer(pipe)
        self.decoder = frame_decoder(pipe)
        self.prompts = prompt_schedule(prompt, config.num_frames)
        self.applied_prompts: list[tuple[int, Prompt]] = []  # (start frame, prompt) of each prompt put in force
        self._live_prompt: Prompt | None = None  # the latest `switch_prompt` not yet in force
        self._recache_noise = 0.0  # noise level of the next forward's re-cached frames (set at a prompt switch)
        self._live_prompt_lock = threading.Lock()
        self.negative_prompt = negative_prompt
        self.generator = generator
        self.device = pipe._execution_device

        patch_frames, patch_h, patch_w = self.transformer.config.patch_size
        spatial_factor = getattr(pipe, "vae_scale_factor_spatial", 1)
        for name, value, multiple in (("height", config.height, spatial_factor * patch_h),
                                      ("width", config.width, spatial_factor * patch_w)):
            if value % multiple:
                raise ValueError(f"{OWNER}: option '{name}' ({value}) must be a multiple of {multiple}")
        self.sample_height, self.sample_width = config.height // spatial_factor, config.width // spatial_factor
        self.chunk_samples = config.chunk_frames * patch_frames
        self.num_chunks = 1
        while self.decoder.video_frames(self.num_chunks * self.chunk_samples) < config.num_frames:
            self.num_chunks += 1
        table = self.transformer.config.rope_max_seq_len
        span = config.largest_forward_frames(self.num_chunks * config.chunk_frames)
        if span > table:
            raise ValueError(
                f"{OWNER}: options 'sink_frames' + 'window_frames' + chunks in flight x 'chunk_frames' span {span} "
                f"latent frames, past the model's RoPE table of {table}"
                + (" (an unbounded window keeps the whole video: set 'window_frames')"
                   if config.window_frames is None else "")
            )
        self.cache = RollingKVCache(config.sink_frames, config.window_frames, config.chunk_frames,
                                    tokens_per_latent_frame(self.transformer, self.sample_height, self.sample_width),
                                    patch_frames)
        self.scheduler = pipe.scheduler
        self.scheduler.set_timesteps(config.num_inference_steps, device=self.device)
        self.use_guidance = config.guidance_scale > 1.0

    def frames(self) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 frames, each chunk's as soon as it is clean."""
        yield from itertools.islice(self._decoded_frames(), self.config.num_frames)

    def _decoded_frames(self) -> Iterator[np.ndarray]:
        decoding: list[DecodedChunk] = []
        for chunk in self._finished_chunks():
            decoding.append(self.decoder.start_decode(chunk))
            # A chunk decoding on the GPU is handed out once the next chunk has been queued: the host then waits
            # on the decode while the GPU runs both. Always then, not as soon as it happens to be done, so that
            # every chunk overlaps the next one the same way and chunks arrive at an even pace.
            while decoding and (len(decoding) > 1 or not decoding[0].on_gpu):
                yield from decoding.pop(0).frames()
        for decoded in decoding:
            yield from decoded.frames()

    def switch_prompt(self, prompt: Prompt) -> None:
        """Put `prompt` in force from the next chunk that enters, re-caching as a scheduled switch does.

        Safe to call from another thread while `frames()` runs (a UI's event handler); of several calls
        before the next chunk enters, the last wins. A live switch overrides scheduled switches due at that
        chunk; later scheduled ones still apply. After the last chunk has entered it has no effect.
        """
        with self._live_prompt_lock:
            self._live_prompt = prompt

    def _prompt_switch_at(self, first_frame: int, upcoming: list[tuple[int, Prompt]]) -> Prompt | None:
        """The prompt that takes effect at the chunk starting at `first_frame`, or None to keep the current
        one: the live switch if any, else the last scheduled entry due (popped from `upcoming`)."""
        switched_to = None
        while upcoming and upcoming[0][0] <= first_frame:
            _, switched_to = upcoming.pop(0)
        with self._live_prompt_lock:
            live, self._live_prompt = self._live_prompt, None
        return switched_to if live is None else live

    def _embeddings(self, prompt: Prompt) -> torch.Tensor:
        embeddings = encode_prompt(self.pipe, prompt, self.device)
        if self.use_guidance:  # one batched forward: [unconditional, conditional]
            negative = encode_prompt(self.pipe, self.negative_prompt, self.device)
            embeddings = torch.cat([negative, embeddings])
        return embeddings.to(self.transformer.dtype)

    @torch.no_grad()
    def _finished_chunks(self) -> Iterator[torch.Tensor]:
        session = attention_session(self.pipe)
        if session is not None:  # a stream is one generation for the efficient-attention session
            session.begin_pipeline_call()
        upcoming = list(self.prompts)
        in_flight: list[ChunkInFlight] = []
        entered = 0
        embeddings = None
        with kv_cached_self_attention(self.transformer, self.cache):
            while entered < self.num_chunks or in_flight:
                while self._may_enter(entered, in_flight, upcoming):
                    # A switch takes effect at the first chunk that starts at or after its frame.
                    first_frame = self.decoder.video_frames(entered * self.chunk_samples)
                    switched_to = self._prompt_switch_at(first_frame, upcoming)
                    if switched_to is not None:
                        if embeddings is not None:
                            self.cache.mark_all_pending()  # re-cache under the new prompt
                            self._recache_noise = self.config.switch_context_noise
                        embeddings = self._embeddings(switched_to)
                        self.applied_prompts.append((first_frame, switched_to))
                    in_flight.append(ChunkInFlight(self._noise()))
                    entered += 1
                self._denoise_step(in_flight, embeddings)
                if in_flight[0].steps_done == self.config.num_inference_steps:
                    finished = in_flight.pop(0).samples
                    self.cache.add_finished(finished)
                    yield finished

    def _may_enter(self, entered: int, in_flight: list[ChunkInFlight], upcoming: list[tuple[int, Prompt]]) -> bool:
        if entered >= self.num_chunks or len(in_flight) >= self.config.chunks_in_flight:
            return False
        if not in_flight:
            return True
        # A chunk that brings a prompt switch waits until the chunks in flight are clean. They were started
        # under the old prompt and condition the new chunk; left in flight, they would take the new prompt
        # half-way and carry the old motion across the switch (measured under "rolling": the new direction
        # within 2 chunks in 9 of 24 switches). Drained, every frame before the switch is the old prompt's
        # and the new chunk starts from a re-cached history, as under "chunked".
        if self._switch_due(self.decoder.video_frames(entered * self.chunk_samples), upcoming):
            return False
        return in_flight[-1].steps_done >= self.config.steps_between_entries

    def _switch_due(self, first_frame: int, upcoming: list[tuple[int, Prompt]]) -> bool:
        """Whether the chunk starting at `first_frame` brings a prompt switch (without taking it)."""
        with self._live_prompt_lock:
            live = self._live_prompt is not None
        return live or bool(upcoming and upcoming[0][0] <= first_frame)

    def _noise(self) -> torch.Tensor:
        """The next chunk's noise: drawn chunk by chunk, in order, from the stream's generator."""
        shape = (1, self.transformer.config.in_channels, self.chunk_samples, self.sample_height, self.sample_width)
        return randn_tensor(shape, generator=self.generator, device=self.device, dtype=torch.float32)

    def _denoise_step(self, in_flight: list[ChunkInFlight], embeddings: torch.Tensor) -> None:
        """One forward on [pending cache frames at t=0 | chunks in flight], one Euler step for each chunk.

        The first forward after a prompt switch feeds the re-cached frames at noise level
        `switch_context_noise` (their keys and values then stay so until they leave the window)."""
        config, scheduler = self.config, self.scheduler
        pending = self.cache.pending_latents()
        context_level, self._recache_noise = self._recache_noise, 0.0
        fed = [chunk.samples for chunk in in_flight]
        if pending is not None and pending.shape[2]:
            if context_level > 0:
                noise = randn_tensor(pending.shape, generator=self.generator, device=self.device,
                                     dtype=pending.dtype)
                pending = (1 - context_level) * pending + context_level * noise
            fed.insert(0, pending)
        model_input = torch.cat(fed, dim=2)
        num_pending_chunks = self.cache.pending_frames // config.chunk_frames
        chunk_timesteps = torch.cat([
            torch.full((num_pending_chunks,), context_level * 1000.0, device=self.device),
            torch.stack([scheduler.timesteps[chunk.steps_done] for chunk in in_flight]).float(),
        ])
        batch = embeddings.shape[0]
        model_input = model_input.expand(batch, -1, -1, -1, -1).to(self.transformer.dtype)
        # Decided on the host (a comparison of the device timesteps would wait for the queued forwards).
        if num_pending_chunks == 0 and len({chunk.steps_done for chunk in in_flight}) == 1:
            timestep = chunk_timesteps[:1].expand(batch)
        else:
            chunk_tokens = self.cache.frame_tokens * config.chunk_frames
            timestep = per_token_timesteps(chunk_timesteps.expand(batch, -1), chunk_tokens)
        # The plugin's step-aware options read the step from the cache context; under "rolling" one forward
        # holds every step at once, so it gets none.
        step_index = in_flight[0].steps_done if config.schedule == "chunked" else None
        branch = "cond_uncond" if self.use_guidance else "cond"
        with self.transformer.cache_context(branch, step_index=step_index,
                                            num_inference_steps=config.num_inference_steps), \
                self.cache.forward(model_input.shape[2] // self.cache.patch_frames,
                                   self.sample_height // self.transformer.config.patch_size[1],
                                   self.sample_width // self.transformer.config.patch_size[2]):
            velocity = self.transformer(hidden_states=model_input, timestep=timestep,
                                        encoder_hidden_states=embeddings, return_dict=False)[0].float()
        if self.use_guidance:
            unconditional, conditional = velocity.chunk(2)
            velocity = unconditional + config.guidance_scale * (conditional - unconditional)
        velocity = velocity[:, :, -len(in_flight) * self.chunk_samples:]
        for chunk, chunk_velocity in zip(in_flight, velocity.split(self.chunk_samples, dim=2)):
            sigma, next_sigma = scheduler.sigmas[chunk.steps_done], scheduler.sigmas[chunk.steps_done + 1]
            chunk.samples = chunk.samples + (next_sigma - sigma) * chunk_velocity
            chunk.steps_done += 1


def compile_for_streaming(pipe) -> None:
    """`torch.compile`, in place, what a stream spends its GPU time in: the transformer's blocks (diffusers'
    regional compilation; only the KV cache's reads and writes stay eager) and the Wan VAE's decoder, whose
    convolution weights it also stores channels-last (cuDNN's faster layout; the values are unchanged).

    The first chunks then take minutes while the compiler works; afterwards a chunk of Wan2.1-1.3B at
    480x832 takes 0.49 s instead of 0.75 (H100, BENCHMARKS.md, rolling generation). A second stream may
    still recompile parts of the decoder before its first frame (seen on the H100); later ones do not. The
    modules stay compiled for every later call, streamed or not, as after diffusers' own
    `compile_repeated_blocks`, and dynamo's recompile limit is raised to 64 for the process.
    """
    transformer = streamable_transformer(pipe)
    decodes_latents = frame_decoder_class(pipe) is WanVaeFrames  # checked before anything is compiled
    # Static shapes: a stream's layouts are few (the cache filling, then steady), each compiled once. The
    # VAE's blocks of several widths share code, so its decoder takes more compilations than dynamo's default
    # limit of 8 per function, past which dynamo leaves the function eager (seen on the H100: a chunk took
    # 0.65 s instead of 0.60).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    transformer.compile_repeated_blocks(dynamic=False)
    if decodes_latents:
        # cuDNN's convolutions run faster on channels-last weights: the compiled decode of a chunk of Wan2.1's
        # VAE at 480x832 went 0.194 -> 0.164 s with them
        # (H100, benchmarks/results/rolling-h100/session6/exploration/explore_decode_layout.py).
        to_channels_last(pipe.vae.decoder)
        pipe.vae.decoder.compile(dynamic=False)


def to_channels_last(module: torch.nn.Module) -> None:
    """Store the module's 5-D (conv3d) and 4-D (conv2d) weights channels-last, in place; values unchanged."""
    for parameter in module.parameters():
        if parameter.dim() in (4, 5):
            layout = torch.channels_last_3d if parameter.dim() == 5 else torch.channels_last
            parameter.data = parameter.data.contiguous(memory_format=layout)


def stream_video(pipe, prompt: Prompt | Sequence[tuple[int, Prompt]], num_frames: int,
                 **options) -> Iterator[np.ndarray]:
    """Generate `num_frames` video frames chunk by chunk, yielding (H, W, 3) uint8 frames as chunks finish.

    The options are `open_stream`'s; use `open_stream` to keep a handle on the stream (`switch_prompt`).
    The stream is set up, and its options checked, before the first frame is asked for.
    """
    return open_stream(pipe, prompt, num_frames, **options).frames()


def open_stream(pipe, prompt: Prompt | Sequence[tuple[int, Prompt]], num_frames: int, *,
                window_frames: int | None, sink_frames: int | None = None, chunk_frames: int | None = None,
                schedule: str = "chunked", rolling_chunks: int | None = None, num_inference_steps: int = 4,
                guidance_scale: float = 1.0, height: int | None = None, width: int | None = None,
                switch_context_noise: float = StreamConfig.switch_context_noise, negative_prompt: Prompt = "",
                generator: torch.Generator | None = None) -> VideoStream:
    """A `VideoStream` of `num_frames` video frames, with the options checked; `.frames()` runs it.

    prompt: a prompt (text or embeddings), or [(start_frame, prompt), ...] to switch prompts mid-stream; a
        switch takes effect at the first chunk starting at or after its frame, and the cache is recomputed
        under the new prompt (LongLive's re-cache). Under "rolling" the chunks in flight finish first, so the
        window drains and refills once per switch. `VideoStream.switch_prompt` switches while it runs.
    window_frames: latent frames kept after the sink, the newest finished chunk included (None: unbounded).
    sink_frames: the first latent frames, kept for ever (default: one chunk; 0 for a plain sliding window).
    chunk_frames: latent frames per chunk (default: the pipeline's `chunk_latent_frames`).
    schedule: "chunked" (Self-Forcing) or "rolling" (Rolling Forcing, `rolling_chunks` chunks in flight,
        default one per denoising step). Under "rolling" a forward attends over sink + window + every chunk in
        flight: keep that span near the clip length the model was trained on. The embedded model (trained on
        8 latent frames) followed the prompt to the end of 512 frames in 18 of 24 streams with 8 chunks in
        flight (a span of 22) and in 24 of 24 with `rolling_chunks=2` (a span of 10; BENCHMARKS.md).
    height, width: output size in pixels (default: 64 x 64 for the embedded model; required otherwise).
    switch_context_noise: noise level in [0, 1) of the frames re-cached at a prompt switch (default 0.8; 0:
        clean, as in LongLive); a higher level lets the new prompt take over sooner, at some cost in continuity.
    """
    if chunk_frames is None:
        chunk_frames = getattr(pipe.config, "chunk_latent_frames", None)
        if chunk_frames is None:
            raise ValueError(f"{OWNER}: option 'chunk_frames' is required for {type(pipe).__name__} (the latent "
                             "frames per chunk its model was trained with)")
    if height is None or width is None:
        if not isinstance(pipe, MovingShapesPipeline):
            raise ValueError(f"{OWNER}: options 'height' and 'width' are required for {type(pipe).__name__}")
        defaults = inspect.signature(MovingShapesPipeline.__call__).parameters
        height = defaults["height"].default if height is None else height
        width = defaults["width"].default if width is None else width
    config = StreamConfig(
        num_frames=num_frames, chunk_frames=chunk_frames, window_frames=window_frames,
        sink_frames=chunk_frames if sink_frames is None else sink_frames, schedule=schedule,
        rolling_chunks=rolling_chunks, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
        height=height, width=width, switch_context_noise=switch_context_noise,
    )
    return VideoStream(pipe, prompt, config, negative_prompt, generator)
