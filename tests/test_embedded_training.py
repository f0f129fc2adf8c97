"""Chunk-causal attention, per-chunk timesteps and resumable training, on tiny configurations."""

import json

import pytest
import torch
from safetensors.torch import load_file

from swiftdit.pipelines.chunk_causal import (
    chunk_causal_mask, masked_self_attention, per_token_timesteps, tokens_per_latent_frame,
)
from swiftdit.pipelines.embedded_model import EmbeddedModelConfig, build_transformer
from swiftdit.pipelines.training import TRAINING_LOG_FILE, TrainingConfig, learning_rate_factor, train

TINY_MODEL = EmbeddedModelConfig(hidden_dim=48, num_heads=1, num_layers=2, ffn_dim=32, text_dim=16, text_heads=2,
                                 text_layers=1, text_ffn_dim=16)
TINY_TRAINING = TrainingConfig(model=TINY_MODEL, batch_size=2, num_frames=8, height=16, width=16, log_every=1,
                               warmup_steps=1, mixed_precision="no")


@pytest.fixture(scope="module")
def tiny_transformer():
    torch.manual_seed(0)
    return build_transformer(TINY_MODEL).eval()


def test_chunk_causal_mask_lets_tokens_see_their_chunk_and_earlier_ones():
    mask = chunk_causal_mask(num_latent_frames=4, frame_tokens=2, chunk_frames=2)
    chunk = torch.arange(8) // 4
    assert torch.equal(mask, chunk[:, None] >= chunk[None, :])
    with pytest.raises(ValueError, match="chunk_frames"):
        chunk_causal_mask(num_latent_frames=5, frame_tokens=2, chunk_frames=2)


def test_earlier_chunks_do_not_depend_on_later_frames_under_the_mask(tiny_transformer):
    video = torch.randn(1, 3, 8, 16, 16)
    changed = video.clone()
    changed[:, :, 4:] = torch.randn(1, 3, 4, 16, 16)  # the second chunk (latent frames 2-3)
    text = torch.randn(1, 4, TINY_MODEL.text_dim)
    frame_tokens = tokens_per_latent_frame(tiny_transformer, 16, 16)
    mask = chunk_causal_mask(4, frame_tokens, TINY_MODEL.chunk_latent_frames)
    timestep = torch.tensor([500.0])
    with torch.no_grad(), masked_self_attention(tiny_transformer) as shared_mask:
        with shared_mask.applied(mask):
            causal = [tiny_transformer(v, timestep, text, return_dict=False)[0] for v in (video, changed)]
        full = [tiny_transformer(v, timestep, text, return_dict=False)[0] for v in (video, changed)]
    torch.testing.assert_close(causal[0][:, :, :4], causal[1][:, :, :4])
    assert not torch.allclose(full[0][:, :, :4], full[1][:, :, :4])  # without the mask the future leaks in


def test_masked_processors_are_removed_afterwards(tiny_transformer):
    before = {name: type(p) for name, p in tiny_transformer.attn_processors.items()}
    with masked_self_attention(tiny_transformer):
        assert any(type(p).__name__ == "MaskedWanAttnProcessor" for p in tiny_transformer.attn_processors.values())
    assert {name: type(p) for name, p in tiny_transformer.attn_processors.items()} == before


def test_equal_per_token_timesteps_match_one_timestep_per_sample(tiny_transformer):
    video, text = torch.randn(2, 3, 8, 16, 16), torch.randn(2, 4, TINY_MODEL.text_dim)
    chunk_tokens = tokens_per_latent_frame(tiny_transformer, 16, 16) * TINY_MODEL.chunk_latent_frames
    levels = torch.tensor([[300.0, 300.0], [700.0, 700.0]])
    with torch.no_grad():
        per_token = tiny_transformer(video, per_token_timesteps(levels, chunk_tokens), text, return_dict=False)[0]
        per_sample = tiny_transformer(video, levels[:, 0], text, return_dict=False)[0]
    torch.testing.assert_close(per_token, per_sample, rtol=1e-4, atol=1e-5)


def test_resumed_training_equals_an_uninterrupted_run(tmp_path):
    train(TINY_TRAINING, tmp_path / "straight", max_steps=4)
    train(TINY_TRAINING, tmp_path / "resumed", max_steps=2)
    progress = train(TINY_TRAINING, tmp_path / "resumed", max_steps=4)
    assert progress.step == 4
    weights = "pipeline/transformer/diffusion_pytorch_model.safetensors"
    straight, resumed = load_file(tmp_path / "straight" / weights), load_file(tmp_path / "resumed" / weights)
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    log = json.loads((tmp_path / "resumed" / "pipeline" / TRAINING_LOG_FILE).read_text())
    assert [step for step, _ in log["loss_curve"]] == [1, 2, 3, 4]


def test_bad_training_options_name_the_option():
    with pytest.raises(ValueError, match="caption_dropout"):
        TrainingConfig(caption_dropout=1.5)
    with pytest.raises(ValueError, match="num_frames"):
        TrainingConfig(num_frames=6)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainingConfig(mixed_precision="fp8")
    with pytest.raises(TypeError, match="'compile' must be True or False"):
        TrainingConfig(compile="yes")


def test_learning_rate_warms_up_then_decays_to_zero_at_the_last_step():
    config = TrainingConfig(warmup_steps=3, lr_decay_steps=4)
    factors = [learning_rate_factor(config, run_step=s, step=s, max_steps=10) for s in range(11)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[6:] == [1.0, 0.75, 0.5, 0.25, 0.0]
    # After a warm start at step 8 the fresh optimizer warms up again, capped by the decay.
    assert learning_rate_factor(config, run_step=0, step=8, max_steps=10) == 0.25
