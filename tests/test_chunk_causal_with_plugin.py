"""The embedded pipeline's chunk-causal mask reaches the efficient path as an exact visual mask."""

import pytest
import torch

from recording import recorded_calls
from swiftdit.pipelines.chunk_causal import chunk_causal_mask
from test_rolling_stream import CHUNK, PROMPT, SIZE, tiny_pipeline


@pytest.mark.parametrize("mode", ["full", "chunked"])
def test_all_blocks_kept_equals_dense_in_both_generation_modes(mode):
    pipe = tiny_pipeline()

    def generate():
        return pipe(PROMPT, num_frames=8, height=SIZE, width=SIZE, num_inference_steps=2, guidance_scale=3.0,
                    generator=torch.Generator().manual_seed(0), generation_mode=mode, output_type="latent").frames

    reference = generate()
    pipe.enable_efficient_attention("_recording")
    try:
        recorded_calls()
        efficient = generate()
        calls = recorded_calls()
        fallbacks = dict(pipe.__dict__["_swiftdit_session"].stats.dense_fallbacks)
    finally:
        pipe.disable_efficient_attention()
    assert calls and not fallbacks
    torch.testing.assert_close(efficient, reference, rtol=1e-4, atol=1e-4)


def test_chunk_causal_mask_is_applied_on_the_sparse_path():
    """If the mask were dropped, later chunks would leak into earlier ones and the output would change."""
    pipe = tiny_pipeline()
    pipe.enable_efficient_attention("_recording")
    try:
        recorded_calls()
        pipe(PROMPT, num_frames=8, height=SIZE, width=SIZE, num_inference_steps=1, guidance_scale=1.0,
             generator=torch.Generator().manual_seed(0), generation_mode="chunked", output_type="latent")
        from recording import RecordingAttention

        masks = [inputs.visual_mask for inputs in RecordingAttention.inputs]
    finally:
        recorded_calls()
        pipe.disable_efficient_attention()
    masked = [m for m in masks if m is not None]
    assert masked, "the chunk-causal mask never reached the method"
    mask = masked[-1][0, 0]
    frame_tokens = (SIZE // 2) ** 2  # the tiny model patches 2 x 2 pixels
    expected = chunk_causal_mask(mask.shape[0] // frame_tokens, frame_tokens, CHUNK)
    assert not mask.all() and torch.equal(mask, expected)
