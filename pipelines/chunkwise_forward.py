"""A `WanTransformer3DModel` forward that takes one timestep per chunk of latent frames.

Wan accepts per-token timesteps (B, S) for diffusion forcing, and then embeds and stores a float32 (6, dim)
modulation table for every token of every layer: at the embedded model's training batch (64 x 2,048 tokens)
that is 805 MB written and read again per layer, forward and backward, and it made the training step
elementwise-bound (benchmarks/model_training_speed.py). Within a chunk all tokens share one timestep, so this
forward embeds each chunk's timestep once and broadcasts the modulation over the chunk's tokens: the same
arithmetic on every element (tests compare it with the stock forward and its gradients), a fraction of the
memory traffic.

It calls the model's own submodules (patch embedding, RoPE, condition embedder, blocks' attention and
feed-forward, output norm and projection), so attention processors still apply (the chunk-causal mask of
training, for one). It bypasses the transformer's `forward`, and with it any diffusers hook registered there,
which is why only training uses it: the pipelines and rolling generation go through `transformer(...)`, where
the plugin's hooks read the denoising step.
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanTransformerBlock


def _per_chunk(tokens: torch.Tensor, num_chunks: int) -> torch.Tensor:
    """(B, S, D) -> (B, num_chunks, S / num_chunks, D), a view."""
    return tokens.unflatten(1, (num_chunks, -1))


def _modulated_norm(norm: torch.nn.Module, hidden_states: torch.Tensor, shift: torch.Tensor,
                    scale: torch.Tensor) -> torch.Tensor:
    """`norm(x) * (1 + scale) + shift` in float32 with (B, chunks, 1, D) shift and scale, in x's dtype."""
    normed = _per_chunk(norm(hidden_states.float()), shift.shape[1])
    return (normed * (1 + scale) + shift).flatten(1, 2).type_as(hidden_states)


def _gated_residual(hidden_states: torch.Tensor, update: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """`x + update * gate` in float32 with a (B, chunks, 1, D) gate, in x's dtype."""
    num_chunks = gate.shape[1]
    summed = _per_chunk(hidden_states.float(), num_chunks) + _per_chunk(update.float(), num_chunks) * gate
    return summed.flatten(1, 2).type_as(hidden_states)


def chunkwise_block(block: WanTransformerBlock, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                    modulation: torch.Tensor, rotary_emb) -> torch.Tensor:
    """`WanTransformerBlock.forward` with a (B, chunks, 6, D) modulation instead of a (B, S, 6, D) one."""
    shift, scale, gate, ffn_shift, ffn_scale, ffn_gate = (
        block.scale_shift_table.unsqueeze(0) + modulation.float()
    ).chunk(6, dim=2)  # each (B, chunks, 1, D), which broadcasts over a chunk's tokens
    attended = block.attn1(_modulated_norm(block.norm1, hidden_states, shift, scale), None, None, rotary_emb)
    hidden_states = _gated_residual(hidden_states, attended, gate)
    cross_input = block.norm2(hidden_states.float()).type_as(hidden_states)
    hidden_states = hidden_states + block.attn2(cross_input, encoder_hidden_states, None, None)
    fed_forward = block.ffn(_modulated_norm(block.norm3, hidden_states, ffn_shift, ffn_scale))
    return _gated_residual(hidden_states, fed_forward, ffn_gate)


def chunkwise_forward(transformer: WanTransformer3DModel, hidden_states: torch.Tensor, chunk_timesteps: torch.Tensor,
                      encoder_hidden_states: torch.Tensor) -> torch.Tensor:
    """The velocity `transformer(hidden_states, per_token_timesteps(chunk_timesteps, chunk_tokens),
    encoder_hidden_states)` would predict, with each chunk's timestep embedded once.

    hidden_states: (B, C, F, H, W); chunk_timesteps: (B, num_chunks), chunks of equal length in latent frames.
    """
    batch_size, _, num_frames, height, width = hidden_states.shape
    p_t, p_h, p_w = transformer.config.patch_size
    latent_frames, latent_height, latent_width = num_frames // p_t, height // p_h, width // p_w
    if chunk_timesteps.ndim != 2 or chunk_timesteps.shape[0] != batch_size:
        raise ValueError(f"chunkwise_forward: 'chunk_timesteps' must have shape (batch {batch_size}, chunks), "
                         f"got {tuple(chunk_timesteps.shape)}")
    num_chunks = chunk_timesteps.shape[1]
    if num_chunks < 1 or latent_frames % num_chunks:
        raise ValueError(f"chunkwise_forward: the number of chunks ({num_chunks}) must divide the number of "
                         f"latent frames ({latent_frames})")

    rotary_emb = transformer.rope(hidden_states)
    tokens = transformer.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()
    temb, modulation, encoder_hidden_states, _ = transformer.condition_embedder(
        chunk_timesteps.flatten(), encoder_hidden_states, None, timestep_seq_len=num_chunks
    )
    modulation = modulation.unflatten(2, (6, -1))  # (B, chunks, 6, D)
    for block in transformer.blocks:
        tokens = chunkwise_block(block, tokens, encoder_hidden_states, modulation, rotary_emb)

    shift, scale = (transformer.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
    tokens = transformer.proj_out(_modulated_norm(transformer.norm_out, tokens, shift, scale))
    # Unpatchify, as Wan's forward does.
    tokens = tokens.reshape(batch_size, latent_frames, latent_height, latent_width, p_t, p_h, p_w, -1)
    return tokens.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
