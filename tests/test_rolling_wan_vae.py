"""Streaming a latent-space Wan pipeline: the VAE decodes chunk by chunk with its causal cache carried over, and
the frames equal a whole-video decode of the same latents; on CUDA the decode overlaps the next chunk on a
stream of its own and gives the same frames; `compile_for_streaming` keeps them."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline

from swiftdit.pipelines.rolling import StreamConfig, VideoStream, WanVaeFrames, compile_for_streaming
from tiny_models import tiny_wan

TEXT_DIM = 32
SIZE = 24  # pixels: the VAE halves them, the patch halves them again, 6 x 6 tokens per latent frame
CHUNK = 2  # latent frames per chunk
LATENT_FRAMES = 6
NUM_FRAMES = 1 + 2 * (LATENT_FRAMES - 1)  # the tiny VAE doubles the frames after the first


def tiny_vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[True],
                            latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.0, 2.0, 0.5, 1.5],
                            scale_factor_temporal=2, scale_factor_spatial=2).eval()


def tiny_wan_pipeline(device="cpu") -> WanPipeline:
    transformer = tiny_wan(in_channels=4, out_channels=4, text_dim=TEXT_DIM).model
    return WanPipeline(tokenizer=None, text_encoder=None, vae=tiny_vae(), transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0)).to(device)


def open_tiny_stream(pipe) -> VideoStream:
    config = StreamConfig(num_frames=NUM_FRAMES, chunk_frames=CHUNK, window_frames=CHUNK, sink_frames=CHUNK,
                          num_inference_steps=2, height=SIZE, width=SIZE)
    embeddings = torch.randn(1, 7, TEXT_DIM, generator=torch.Generator().manual_seed(3)).to(pipe.device)
    return VideoStream(pipe, embeddings, config, generator=torch.Generator(pipe.device).manual_seed(5))


def whole_video_uint8(vae: AutoencoderKLWan, latents: torch.Tensor) -> np.ndarray:
    """What diffusers' WanPipeline does with the whole latent video, as (F, H, W, 3) uint8 frames."""
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
    with torch.no_grad():
        video = vae.decode(latents * std + mean).sample[0].float().clamp(-1, 1)
    return ((video / 2 + 0.5) * 255).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


@pytest.fixture(scope="module")
def pipe():
    return tiny_wan_pipeline()


def test_chunk_by_chunk_decode_equals_whole_video_decode(pipe):
    latents = torch.randn(1, 4, LATENT_FRAMES, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(1))
    decoder = WanVaeFrames(pipe)
    chunks = [decoder.start_decode(chunk).frames() for chunk in latents.split([1, 2, 3], dim=2)]
    assert [len(chunk) for chunk in chunks] == [1, 4, 6]  # the first latent frame is one video frame
    streamed = np.concatenate(chunks)
    assert streamed.dtype == np.uint8 and streamed.shape == (NUM_FRAMES, SIZE, SIZE, 3)
    np.testing.assert_allclose(streamed.astype(int), whole_video_uint8(pipe.vae, latents).astype(int), atol=1)


def test_streamed_frames_are_the_decode_of_the_streamed_latents(pipe):
    frames = np.stack(list(open_tiny_stream(pipe).frames()))
    latents = torch.cat(list(open_tiny_stream(pipe)._finished_chunks()), dim=2)
    assert frames.shape == (NUM_FRAMES, SIZE, SIZE, 3)
    np.testing.assert_allclose(frames.astype(int), whole_video_uint8(pipe.vae, latents).astype(int), atol=1)


def test_compiled_stream_gives_the_eager_frames():
    eager = tiny_wan_pipeline()
    compiled = tiny_wan_pipeline()
    compile_for_streaming(compiled)
    assert all(block._compiled_call_impl is not None for block in compiled.transformer.blocks)
    assert compiled.vae.decoder._compiled_call_impl is not None
    assert compiled.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last_3d)
    reference = np.stack(list(open_tiny_stream(eager).frames()))
    frames = np.stack(list(open_tiny_stream(compiled).frames()))
    np.testing.assert_allclose(frames.astype(int), reference.astype(int), atol=1)


def test_compile_for_streaming_rejects_a_pipeline_it_cannot_stream():
    not_streamable = type("OtherPipeline", (), {"transformer": torch.nn.Linear(2, 2)})()
    with pytest.raises(ValueError, match="OtherPipeline cannot be streamed"):
        compile_for_streaming(not_streamable)


def test_compile_for_streaming_compiles_nothing_when_the_decoder_cannot_stream():
    transformer = tiny_wan(in_channels=4, out_channels=4, text_dim=TEXT_DIM).model
    other_vae = type("OtherVaePipeline", (), {"transformer": transformer, "vae": torch.nn.Identity(),
                                              "scheduler": FlowMatchEulerDiscreteScheduler()})()
    with pytest.raises(ValueError, match="OtherVaePipeline cannot be streamed: its frames are decoded by Identity"):
        compile_for_streaming(other_vae)
    assert all(block._compiled_call_impl is None for block in transformer.blocks)


@pytest.mark.gpu
def test_overlapped_decode_on_cuda_gives_the_synchronous_frames():
    pipe = tiny_wan_pipeline("cuda")
    overlapped = open_tiny_stream(pipe)
    assert overlapped.decoder.stream is not None
    frames = np.stack(list(overlapped.frames()))
    synchronous = open_tiny_stream(pipe)
    synchronous.decoder.stream = None
    np.testing.assert_array_equal(frames, np.stack(list(synchronous.frames())))
