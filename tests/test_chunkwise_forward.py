"""The per-chunk-timestep forward used in training computes what Wan's own forward computes with per-token
timesteps: outputs and every parameter's gradient, with and without the chunk-causal mask."""

import pytest
import torch

from swiftdit.pipelines.chunk_causal import (
    chunk_causal_mask, masked_self_attention, per_token_timesteps, tokens_per_latent_frame,
)
from swiftdit.pipelines.chunkwise_forward import chunkwise_forward
from swiftdit.pipelines.embedded_model import EmbeddedModelConfig, build_transformer

TINY_MODEL = EmbeddedModelConfig(hidden_dim=48, num_heads=2, num_layers=2, ffn_dim=32, text_dim=16, text_heads=2,
                                 text_layers=1, text_ffn_dim=16)


@pytest.fixture(scope="module")
def tiny_transformer():
    torch.manual_seed(0)
    transformer = build_transformer(TINY_MODEL)
    with torch.no_grad():  # Wan zero-initialises nothing here, but make the output modulation non-trivial too
        transformer.scale_shift_table.normal_()
    return transformer


def _inputs(batch_size=2):
    generator = torch.Generator().manual_seed(1)
    video = torch.randn(batch_size, 3, 8, 16, 16, generator=generator)
    text = torch.randn(batch_size, 5, TINY_MODEL.text_dim, generator=generator)
    levels = torch.rand(batch_size, 2, generator=generator) * 1000  # 4 latent frames in 2 chunks
    return video, text, levels


def _output_and_gradients(transformer, run):
    transformer.zero_grad(set_to_none=True)
    output = run()
    (output * torch.linspace(-1, 1, output.numel()).view_as(output)).sum().backward()
    return output.detach(), {name: p.grad.clone() for name, p in transformer.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("causal", [False, True])
def test_matches_the_stock_forward_with_per_token_timesteps(tiny_transformer, causal):
    video, text, levels = _inputs()
    frame_tokens = tokens_per_latent_frame(tiny_transformer, 16, 16)
    chunk_tokens = frame_tokens * TINY_MODEL.chunk_latent_frames
    mask = chunk_causal_mask(4, frame_tokens, TINY_MODEL.chunk_latent_frames) if causal else None
    with masked_self_attention(tiny_transformer) as shared_mask, shared_mask.applied(mask):
        stock, stock_grads = _output_and_gradients(tiny_transformer, lambda: tiny_transformer(
            video, per_token_timesteps(levels, chunk_tokens), text, return_dict=False)[0])
        ours, our_grads = _output_and_gradients(
            tiny_transformer, lambda: chunkwise_forward(tiny_transformer, video, levels, text))
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-5)
    assert our_grads.keys() == stock_grads.keys() and len(our_grads) == len(list(tiny_transformer.parameters()))
    for name in stock_grads:
        torch.testing.assert_close(our_grads[name], stock_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_one_chunk_equals_one_timestep_per_sample(tiny_transformer):
    video, text, levels = _inputs()
    with torch.no_grad():
        ours = chunkwise_forward(tiny_transformer, video, levels[:, :1], text)
        stock = tiny_transformer(video, levels[:, 0], text, return_dict=False)[0]
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-5)


def test_chunks_that_do_not_divide_the_frames_are_rejected(tiny_transformer):
    video, text, _ = _inputs()
    with pytest.raises(ValueError, match="number of chunks \\(3\\)"):
        chunkwise_forward(tiny_transformer, video, torch.zeros(2, 3), text)
    with pytest.raises(ValueError, match="'chunk_timesteps' must have shape"):
        chunkwise_forward(tiny_transformer, video, torch.zeros(2), text)
