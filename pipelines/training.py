"""Training of the embedded model: flow matching with per-chunk noise levels and a chunk-causal mode.

Each sample of a batch is a freshly drawn moving-shapes clip. Its latent frames are cut into chunks and:
- each chunk gets its own noise level (diffusion forcing) for some samples, one shared level for the rest,
  so the model denoises both a whole clip at one level and windows of chunks at different levels;
- some samples attend chunk-causally, and for some of those the chunks before a random one are left clean
  (noise level 0) and out of the loss, which is the situation of chunk-by-chunk generation: finished
  chunks as context, the next one being denoised.
The objective is rectified flow: x_s = (1 - s) x_0 + s e, the model predicts e - x_0 at timestep 1000 s.

Run with accelerate (bf16 on a GPU), seeded, and resumable: `accelerator.save_state` writes the weights,
optimizer, learning-rate schedule, EMA, data-stream and random-number state, and a rerun with the same
output folder continues where it stopped and makes the same batches as an uninterrupted run.

    python -m swiftdit.pipelines.training --output-dir runs/embedded --time-limit-s 480
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from torch import nn

from swiftdit.pipelines.chunk_causal import SelfAttentionMask, chunk_causal_mask, masked_self_attention
from swiftdit.pipelines.chunkwise_forward import chunkwise_forward
from swiftdit.pipelines.embedded_model import (
    EmbeddedModelConfig, build_scheduler, build_text_encoder, build_tokenizer, build_transformer, encode_prompts,
)
from swiftdit.pipelines.moving_shapes import render_clips, sample_clips
from swiftdit.pipelines.pipeline_moving_shapes import MovingShapesPipeline
from swiftdit.validation import check_bool, check_choice, check_float, check_int

CHECKPOINT_FOLDER = "checkpoint"
TRAINING_LOG_FILE = "training_log.json"
# Weight files are cut below the 16 MiB the device machine hands back per file.
MAX_SHARD_SIZE = "15MB"


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    model: EmbeddedModelConfig = EmbeddedModelConfig()
    seed: int = 0
    batch_size: int = 64
    learning_rate: float = 4e-4
    warmup_steps: int = 200
    lr_decay_steps: int = 0  # the rate falls linearly to zero over this many steps before max_steps (0: constant)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # empty captions teach the unconditional branch of classifier-free guidance
    chunk_causal_fraction: float = 0.5
    independent_chunk_noise_fraction: float = 0.5
    clean_context_fraction: float = 0.5  # of the chunk-causal samples
    pixel_noise_std: float = 0.02
    num_frames: int = 16
    height: int = 64
    width: int = 64
    log_every: int = 50
    checkpoint_every: int = 1000
    mixed_precision: str = "bf16"
    compile: bool = False  # torch.compile the denoiser's forward (worth it on a GPU; see model_training_speed.py)

    def __post_init__(self):
        owner = "TrainingConfig"
        for name in ("batch_size", "log_every", "checkpoint_every", "num_frames", "height", "width"):
            check_int(owner, name, getattr(self, name), minimum=1)
        check_int(owner, "seed", self.seed, minimum=0)
        check_int(owner, "warmup_steps", self.warmup_steps, minimum=0)
        check_int(owner, "lr_decay_steps", self.lr_decay_steps, minimum=0)
        check_float(owner, "learning_rate", self.learning_rate, minimum=0.0, exclusive_minimum=True)
        for name in ("weight_decay", "max_grad_norm", "pixel_noise_std"):
            check_float(owner, name, getattr(self, name), minimum=0.0)
        for name in ("ema_decay", "caption_dropout", "chunk_causal_fraction", "independent_chunk_noise_fraction",
                     "clean_context_fraction"):
            check_float(owner, name, getattr(self, name), minimum=0.0, maximum=1.0)
        check_choice(owner, "mixed_precision", self.mixed_precision, ("no", "bf16", "fp16"))
        check_bool(owner, "compile", self.compile)
        patch_t, patch_h, patch_w = self.model.patch_size
        chunk_video_frames = patch_t * self.model.chunk_latent_frames
        for name, value, multiple in (("num_frames", self.num_frames, chunk_video_frames),
                                      ("height", self.height, patch_h), ("width", self.width, patch_w)):
            if value % multiple:
                raise ValueError(f"{owner}: option '{name}' must be a multiple of {multiple}, got {value}")


class TextToVideoModel(nn.Module):
    """Text encoder and denoiser as one module, so one optimizer, one EMA and one `prepare` cover both."""

    def __init__(self, text_encoder: nn.Module, transformer: nn.Module):
        super().__init__()
        self.text_encoder = text_encoder
        self.transformer = transformer


class ClipStream:
    """Endless, seeded stream of training batches; its generator states are part of the checkpoint."""

    def __init__(self, config: TrainingConfig, device: torch.device, seed: int):
        self.config = config
        self.device = device
        self.clip_generator = torch.Generator().manual_seed(seed)
        self.device_generator = torch.Generator(device).manual_seed(seed + 1)

    def next_batch(self) -> tuple[torch.Tensor, list[str]]:
        """(B, 3, F, H, W) clips in [-1, 1] and their captions (some emptied for guidance training)."""
        config = self.config
        clips = sample_clips(config.batch_size, self.clip_generator, frame_size=config.width)
        dropped = (torch.rand(config.batch_size, generator=self.clip_generator) < config.caption_dropout).tolist()
        captions = ["" if drop else clip.caption for clip, drop in zip(clips, dropped)]
        video = render_clips(clips, config.num_frames, config.height, config.width, config.pixel_noise_std,
                             self.device_generator, self.device)
        return video.permute(0, 4, 1, 2, 3) * 2 - 1, captions

    def state_dict(self) -> dict:
        return {"clip_generator": self.clip_generator.get_state(),
                "device_generator": self.device_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.clip_generator.set_state(state["clip_generator"])
        self.device_generator.set_state(state["device_generator"].cpu())


@dataclasses.dataclass
class TrainingProgress:
    """Mutable run record, checkpointed with the model: steps done, seconds trained, the loss curve."""

    step: int = 0
    train_seconds: float = 0.0
    loss_curve: list = dataclasses.field(default_factory=list)  # [step, mean loss since the last entry]

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, state[field.name])


def sample_noise_levels(config: TrainingConfig, batch_size: int, num_chunks: int,
                        generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-chunk noise levels (B, num_chunks) in [0, 1) and the per-sample chunk-causal flags (B,).

    Levels are logit-normal, which concentrates training on the middle of the path where the content of
    the clip is decided; shared or independent per chunk; zero on the clean context of some causal samples.
    """
    def uniform(*shape):
        return torch.rand(shape, generator=generator, device=device)

    def logit_normal(*shape):
        return torch.sigmoid(torch.randn(shape, generator=generator, device=device))

    independent = uniform(batch_size, 1) < config.independent_chunk_noise_fraction
    levels = torch.where(independent, logit_normal(batch_size, num_chunks),
                         logit_normal(batch_size, 1).expand(batch_size, num_chunks))
    causal = uniform(batch_size) < config.chunk_causal_fraction
    clean_context = causal & (uniform(batch_size) < config.clean_context_fraction)
    first_noisy_chunk = torch.randint(1, max(num_chunks, 2), (batch_size, 1), generator=generator, device=device)
    is_context = torch.arange(num_chunks, device=device) < first_noisy_chunk
    levels = torch.where(clean_context[:, None] & is_context, torch.zeros_like(levels), levels)
    return levels, causal


def flow_matching_loss(model: TextToVideoModel, tokenizer, config: TrainingConfig, clips: torch.Tensor,
                       captions: list[str], shared_mask, generator: torch.Generator,
                       denoiser_forward=chunkwise_forward) -> torch.Tensor:
    """Mean squared error of the predicted velocity over the chunks that carry noise.

    `denoiser_forward(transformer, noisy, chunk_timesteps, text_embeddings)` is `chunkwise_forward` or a
    compiled copy of it: Wan's forward with one embedded timestep per chunk rather than per token."""
    transformer = model.transformer
    patch_t, patch_h, patch_w = config.model.patch_size
    batch_size, _, num_frames, height, width = clips.shape
    num_latent_frames = num_frames // patch_t
    num_chunks = num_latent_frames // config.model.chunk_latent_frames
    frame_tokens = (height // patch_h) * (width // patch_w)
    levels, causal = sample_noise_levels(config, batch_size, num_chunks, generator, clips.device)

    noise = torch.randn(clips.shape, generator=generator, device=clips.device)
    frame_levels = levels.repeat_interleave(num_frames // num_chunks, dim=1).view(batch_size, 1, num_frames, 1, 1)
    noisy = (1 - frame_levels) * clips + frame_levels * noise
    causal_mask = chunk_causal_mask(num_latent_frames, frame_tokens, config.model.chunk_latent_frames, clips.device)
    mask = causal_mask | ~causal.view(batch_size, 1, 1, 1)

    embeddings = encode_prompts(tokenizer, model.text_encoder, captions, config.model.max_text_tokens, clips.device)
    with shared_mask.applied(mask):
        prediction = denoiser_forward(transformer, noisy, levels * 1000, embeddings)
    squared_error = (prediction.float() - (noise - clips)) ** 2
    has_noise = (frame_levels > 0).float()
    return (squared_error * has_noise).sum() / (has_noise.sum() * squared_error[0, :, 0].numel()).clamp(min=1)


def learning_rate_factor(config: TrainingConfig, run_step: int, step: int, max_steps: int) -> float:
    """Linear warm-up over the first steps of this optimizer's life (a warm start begins a fresh optimizer,
    so `run_step` counts from it), then constant, then a linear decay to zero ending at `max_steps`."""
    warmup = min(1.0, (run_step + 1) / (config.warmup_steps + 1))
    if config.lr_decay_steps == 0:
        return warmup
    return min(warmup, max(0.0, (max_steps - step) / config.lr_decay_steps))


def build_model(config: TrainingConfig):
    tokenizer = build_tokenizer(config.model)
    model = TextToVideoModel(build_text_encoder(config.model, len(tokenizer)), build_transformer(config.model))
    return tokenizer, model


def export_pipeline(model: TextToVideoModel, ema: EMAModel, tokenizer, config: TrainingConfig,
                    export_dir: Path) -> MovingShapesPipeline:
    """Save the EMA weights as a `MovingShapesPipeline` (sharded safetensors) in `export_dir`."""
    averaged = copy.deepcopy(model).float().cpu()
    ema.copy_to(averaged.parameters())
    pipe = MovingShapesPipeline(tokenizer, averaged.text_encoder, averaged.transformer, build_scheduler(config.model),
                                chunk_latent_frames=config.model.chunk_latent_frames)
    pipe.save_pretrained(export_dir, max_shard_size=MAX_SHARD_SIZE)
    return pipe


def warm_start(model: TextToVideoModel, progress: TrainingProgress, pipeline_dir: Path) -> None:
    """Continue from an exported pipeline (its EMA weights and training log) when the full checkpoint could not
    travel: the device machine hands back 64 MiB per run, less than weights, EMA and optimizer state together.
    The optimizer and learning-rate warm-up start afresh; the step count and loss curve carry on."""
    exported = MovingShapesPipeline.from_pretrained(pipeline_dir, local_files_only=True)
    model.text_encoder.load_state_dict(exported.text_encoder.state_dict())
    model.transformer.load_state_dict(exported.transformer.state_dict())
    log = json.loads((pipeline_dir / TRAINING_LOG_FILE).read_text())
    progress.load_state_dict({field.name: log[field.name] for field in dataclasses.fields(progress)})


class TrainingRun:
    """Model, optimizer, schedule, EMA and data stream of one run, prepared by accelerate; `step()` is one
    optimizer step of the training loop (shared by `train` and benchmarks/model_training_speed.py)."""

    def __init__(self, config: TrainingConfig, max_steps: int, init_from: Path | None = None):
        self.config = config
        self.progress = progress = TrainingProgress()
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision if torch.cuda.is_available() else "no")
        torch.manual_seed(config.seed)
        self.tokenizer, model = build_model(config)
        if init_from is not None:
            warm_start(model, progress, Path(init_from))
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, betas=(0.9, 0.99),
                                      weight_decay=config.weight_decay)
        # `progress.step` is read live: the global step, right after a resume and after a warm start alike.
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda run_step: learning_rate_factor(config, run_step, progress.step, max_steps)
        )
        self.model, self.optimizer, self.schedule = self.accelerator.prepare(model, optimizer, schedule)
        self.unwrapped = self.accelerator.unwrap_model(self.model)
        self.ema = EMAModel(self.unwrapped.parameters(), decay=config.ema_decay, foreach=True)
        self.ema.to(self.accelerator.device)
        # A warm start continues at a later step; seeding by it keeps its batches apart from the first run's.
        self.stream = ClipStream(config, self.accelerator.device, seed=config.seed + progress.step)
        for stateful in (self.ema, self.stream, progress):
            self.accelerator.register_for_checkpointing(stateful)
        self.denoiser_forward = torch.compile(chunkwise_forward, dynamic=False) if config.compile else chunkwise_forward

    def resume(self, checkpoint_dir: Path) -> None:
        self.accelerator.load_state(str(checkpoint_dir))
        self.ema.to(self.accelerator.device)  # the EMA's saved state loads onto the CPU

    def step(self, shared_mask: SelfAttentionMask) -> torch.Tensor:
        """One optimizer step; returns the batch's loss as a detached device tensor (no host sync)."""
        clips, captions = self.stream.next_batch()
        with self.accelerator.autocast():
            loss = flow_matching_loss(self.unwrapped, self.tokenizer, self.config, clips, captions, shared_mask,
                                      self.stream.device_generator, self.denoiser_forward)
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self.unwrapped.parameters())
        return loss.detach().float()


def train(config: TrainingConfig, output_dir: Path, *, max_steps: int, time_limit_s: float = math.inf,
          export_dir: Path | None = None, init_from: Path | None = None) -> TrainingProgress:
    """Train until `max_steps` in total or `time_limit_s` in this call, resuming from `output_dir` if it holds a
    checkpoint (else warm-starting from the pipeline in `init_from`, if given); then checkpoint, write the
    training log and export the pipeline with its log (default: output_dir/pipeline)."""
    check_int("train", "max_steps", max_steps, minimum=1)
    output_dir = Path(output_dir)
    checkpoint_dir = output_dir / CHECKPOINT_FOLDER
    run = TrainingRun(config, max_steps, init_from=None if checkpoint_dir.is_dir() else init_from)
    progress, accelerator = run.progress, run.accelerator
    if checkpoint_dir.is_dir():
        run.resume(checkpoint_dir)
        accelerator.print(f"resumed at step {progress.step} after {progress.train_seconds:.0f} s of training")

    started = time.monotonic()
    seconds_at_start = progress.train_seconds
    # The loss is summed on the device and read at log time only, so the host never waits on a step.
    running_loss, running_count = torch.zeros((), device=accelerator.device), 0
    with masked_self_attention(run.unwrapped.transformer) as shared_mask:
        while progress.step < max_steps and time.monotonic() - started < time_limit_s:
            running_loss, running_count = running_loss + run.step(shared_mask), running_count + 1
            progress.step += 1
            progress.train_seconds = seconds_at_start + time.monotonic() - started
            if progress.step % config.log_every == 0:
                mean_loss = running_loss.item() / running_count
                progress.loss_curve.append([progress.step, mean_loss])
                accelerator.print(f"step {progress.step} loss {mean_loss:.4f} {progress.train_seconds:.0f} s",
                                  flush=True)
                running_loss, running_count = torch.zeros_like(running_loss), 0
            if progress.step % config.checkpoint_every == 0:
                accelerator.save_state(str(checkpoint_dir))

    accelerator.save_state(str(checkpoint_dir))
    log = {"config": dataclasses.asdict(config), **progress.state_dict(), "warm_started_from": init_from is not None,
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    export_dir = Path(export_dir or output_dir / "pipeline")
    export_pipeline(run.unwrapped, run.ema, run.tokenizer, config, export_dir)
    (export_dir / TRAINING_LOG_FILE).write_text(json.dumps(log, indent=1))
    return progress


# Recipe options a run may change from the command line (a warm-started fine-tune reweights the training modes).
COMMAND_LINE_OPTIONS = ("seed", "batch_size", "learning_rate", "warmup_steps", "lr_decay_steps",
                        "chunk_causal_fraction", "independent_chunk_noise_fraction", "clean_context_fraction",
                        "compile")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True, help="checkpoint, log and exported pipeline")
    parser.add_argument("--export-dir", type=Path, default=None,
                        help="where the pipeline goes (default: OUTPUT/pipeline)")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="exported pipeline to warm-start from when OUTPUT holds no checkpoint")
    parser.add_argument("--max-steps", type=int, default=1_000_000)
    parser.add_argument("--time-limit-s", type=float, default=math.inf, help="stop after this long in this run")
    for name in COMMAND_LINE_OPTIONS:
        default = getattr(TrainingConfig, name)
        if isinstance(default, bool):
            parser.add_argument("--" + name.replace("_", "-"), action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    args = parser.parse_args()
    config = TrainingConfig(**{name: getattr(args, name) for name in COMMAND_LINE_OPTIONS})
    train(config, args.output_dir, max_steps=args.max_steps, time_limit_s=args.time_limit_s,
          export_dir=args.export_dir, init_from=args.init_from)


if __name__ == "__main__":
    main()
