"""Architecture of the embedded model: a small Wan denoiser in pixel space and a tiny T5 text encoder over a
word-level vocabulary of the moving-shapes captions.

Pixel space, no autoencoder: with a (2, 4, 4) patch a 16x64x64 RGB clip becomes 8x16x16 = 2,048 tokens of
96 values each, which the patch embedding handles directly; an autoencoder would add a second model to
train inside the same device budget and a decoder to run at every generation.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast, T5Config, T5EncoderModel

from swiftdit.pipelines.moving_shapes import BACKGROUNDS, COLORS, DIRECTIONS, SHAPES, SIZES
from swiftdit.validation import check_float, check_int

PAD_TOKEN, END_TOKEN, UNKNOWN_TOKEN = "<pad>", "</s>", "<unk>"
TEMPLATE_WORDS = ("a", "moving", "on", "background")


@dataclasses.dataclass(frozen=True)
class EmbeddedModelConfig:
    """Sizes of the denoiser and the text encoder, and the chunking of the chunk-causal mode."""

    hidden_dim: int = 256
    num_heads: int = 4
    num_layers: int = 6
    ffn_dim: int = 768
    patch_size: tuple[int, int, int] = (2, 4, 4)
    text_dim: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_ffn_dim: int = 256
    max_text_tokens: int = 16
    chunk_latent_frames: int = 2
    scheduler_shift: float = 2.0

    def __post_init__(self):
        owner = "EmbeddedModelConfig"
        for name in ("hidden_dim", "num_heads", "num_layers", "ffn_dim", "text_dim", "text_layers", "text_heads",
                     "text_ffn_dim", "max_text_tokens", "chunk_latent_frames"):
            check_int(owner, name, getattr(self, name), minimum=1)
        check_float(owner, "scheduler_shift", self.scheduler_shift, minimum=0.0, exclusive_minimum=True)
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"{owner}: option 'hidden_dim' ({self.hidden_dim}) must be a multiple of "
                             f"'num_heads' ({self.num_heads})")
        if self.text_dim % self.text_heads:
            raise ValueError(f"{owner}: option 'text_dim' ({self.text_dim}) must be a multiple of "
                             f"'text_heads' ({self.text_heads})")
        if len(self.patch_size) != 3 or any(not isinstance(p, int) or p < 1 for p in self.patch_size):
            raise ValueError(f"{owner}: option 'patch_size' must be three positive ints (t, h, w), "
                             f"got {self.patch_size!r}")


def caption_vocabulary() -> list[str]:
    """Every word a caption can contain, specials first so that their ids are fixed (pad 0, end 1, unk 2)."""
    words = [*TEMPLATE_WORDS, *(s for s in SIZES if s), *COLORS, *SHAPES, *DIRECTIONS, *BACKGROUNDS]
    return [PAD_TOKEN, END_TOKEN, UNKNOWN_TOKEN, *sorted(set(words))]


def build_tokenizer(config: EmbeddedModelConfig) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: lower-cased whitespace words, unknown words to <unk>, </s> appended."""
    vocabulary = {word: index for index, word in enumerate(caption_vocabulary())}
    tokenizer = Tokenizer(models.WordLevel(vocabulary, unk_token=UNKNOWN_TOKEN))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {END_TOKEN}", special_tokens=[(END_TOKEN, vocabulary[END_TOKEN])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD_TOKEN, eos_token=END_TOKEN,
                                   unk_token=UNKNOWN_TOKEN, model_max_length=config.max_text_tokens)


def build_text_encoder(config: EmbeddedModelConfig, vocab_size: int) -> T5EncoderModel:
    t5_config = T5Config(vocab_size=vocab_size, d_model=config.text_dim, d_kv=config.text_dim // config.text_heads,
                         d_ff=config.text_ffn_dim, num_layers=config.text_layers, num_heads=config.text_heads,
                         dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(t5_config)


def build_transformer(config: EmbeddedModelConfig) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=config.patch_size, num_attention_heads=config.num_heads,
        attention_head_dim=config.hidden_dim // config.num_heads, in_channels=3, out_channels=3,
        text_dim=config.text_dim, freq_dim=256, ffn_dim=config.ffn_dim, num_layers=config.num_layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=1024,
    )


def build_scheduler(config: EmbeddedModelConfig) -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(shift=config.scheduler_shift)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, text_encoder: T5EncoderModel, prompts: list[str],
                   max_length: int, device: torch.device | str) -> torch.Tensor:
    """(B, max_length, text_dim) prompt embeddings with padded positions zeroed, as Wan's pipeline does, so
    that the denoiser's cross-attention sees the same thing in training and in generation."""
    tokens = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                       return_tensors="pt").to(device)
    hidden = text_encoder(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
    return hidden * tokens.attention_mask.unsqueeze(-1).to(hidden.dtype)
