"""Chunk-causal self-attention and per-chunk noise levels for a `WanTransformer3DModel`.

A clip's latent frames are cut into chunks of `chunk_frames` frames. Under the chunk-causal mask a token
sees every token of its own chunk and of earlier chunks, never a later one, so the features of chunk c do
not depend on what follows it: chunks can be generated one after another, each attending to the finished
ones (recomputed here, kept as a KV cache by rolling generation). Wan's blocks call self-attention with no
mask and its `attention_kwargs` never reach the processors, so the mask travels through a shared
`SelfAttentionMask` that a `MaskedWanAttnProcessor` on every `attn1` reads.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from swiftdit.validation import check_int


class SelfAttentionMask:
    """The mask the self-attention layers apply during the current forward (None: full attention)."""

    def __init__(self):
        self.mask: torch.Tensor | None = None

    @contextlib.contextmanager
    def applied(self, mask: torch.Tensor | None) -> Iterator[None]:
        previous, self.mask = self.mask, mask
        try:
            yield
        finally:
            self.mask = previous


class MaskedWanAttnProcessor(WanAttnProcessor):
    """Wan's own processor, with the shared mask as the attention mask when the caller passes none."""

    def __init__(self, shared_mask: SelfAttentionMask):
        super().__init__()
        self.shared_mask = shared_mask

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if attention_mask is None:
            attention_mask = self.shared_mask.mask
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)


def tokens_per_latent_frame(transformer: WanTransformer3DModel, height: int, width: int) -> int:
    """Tokens one latent frame of a `height` x `width` input becomes after patching."""
    _, patch_h, patch_w = transformer.config.patch_size
    return (height // patch_h) * (width // patch_w)


def chunk_causal_mask(num_latent_frames: int, frame_tokens: int, chunk_frames: int,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean (S, S) mask, True where query token i may attend to key token j (chunk(j) <= chunk(i))."""
    check_int("chunk_causal_mask", "chunk_frames", chunk_frames, minimum=1)
    if num_latent_frames % chunk_frames:
        raise ValueError(
            f"chunk_causal_mask: option 'chunk_frames' ({chunk_frames}) must divide the number of latent "
            f"frames ({num_latent_frames})"
        )
    chunk_of_token = torch.arange(num_latent_frames * frame_tokens, device=device) // (frame_tokens * chunk_frames)
    return chunk_of_token[:, None] >= chunk_of_token[None, :]


def per_token_timesteps(chunk_timesteps: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
    """(B, num_chunks) timesteps -> (B, S) per-token timesteps, the form Wan's forward accepts for
    diffusion forcing (each token is embedded with its own chunk's noise level)."""
    return chunk_timesteps.repeat_interleave(chunk_tokens, dim=1)


@contextlib.contextmanager
def masked_self_attention(transformer: WanTransformer3DModel) -> Iterator[SelfAttentionMask]:
    """Give every self-attention layer a `MaskedWanAttnProcessor` for the duration of the block.

    Only Wan's own processor is replaced (its backend and parallel settings carried over), so that the
    mask is never silently dropped by a processor that does not know about it.
    """
    shared_mask = SelfAttentionMask()
    originals = transformer.attn_processors
    replaced = {}
    for name, processor in originals.items():
        if ".attn1." not in name:
            continue
        if type(processor) is not WanAttnProcessor and not isinstance(processor, MaskedWanAttnProcessor):
            raise ValueError(
                f"chunk-causal attention needs Wan's own self-attention processor, but {name} is "
                f"{type(processor).__name__}; disable other attention replacements first"
            )
        masked = MaskedWanAttnProcessor(shared_mask)
        masked._attention_backend = processor._attention_backend
        masked._parallel_config = processor._parallel_config
        replaced[name] = masked
    transformer.set_attn_processor({**originals, **replaced})
    try:
        yield shared_mask
    finally:
        transformer.set_attn_processor(dict(originals))
