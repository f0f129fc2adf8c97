"""stream_video on a tiny random chunk-causal Wan inside MovingShapesPipeline: equivalence with the pipeline's
chunk-by-chunk generation, bounded cache, RoPE positions past the table, prompt switch re-cache (scheduled and
live), options."""

import threading
import types

import numpy as np
import pytest
import torch

import swiftdit
from swiftdit.pipelines import MovingShapesPipeline, stream_video
from swiftdit.pipelines import kv_cache
from swiftdit.pipelines.embedded_model import EmbeddedModelConfig, build_scheduler, build_text_encoder, build_tokenizer
from swiftdit.pipelines.kv_cache import RollingKVCache, kv_cached_self_attention
from swiftdit.pipelines.rolling import StreamConfig, VideoStream
from tiny_models import tiny_wan

ROPE_TABLE = 16  # latent frames the tiny model's RoPE table holds
CHUNK = 2  # latent frames per chunk; the temporal patch makes a chunk 4 video frames
SIZE = 16  # pixels: 8 x 8 tokens per latent frame
PROMPT = "a red circle moving right on a black background"
OTHER_PROMPT = "a blue square moving left on a gray background"


def tiny_pipeline() -> MovingShapesPipeline:
    config = EmbeddedModelConfig(text_dim=32, text_layers=1, text_heads=2, text_ffn_dim=32, chunk_latent_frames=CHUNK)
    tokenizer = build_tokenizer(config)
    torch.manual_seed(0)
    text_encoder = build_text_encoder(config, len(tokenizer)).eval()
    transformer = tiny_wan(patch_size=(2, 2, 2), in_channels=3, out_channels=3, text_dim=config.text_dim,
                           rope_max_seq_len=ROPE_TABLE).model
    return MovingShapesPipeline(tokenizer, text_encoder, transformer, build_scheduler(config), CHUNK)


def stream(pipe, prompt=PROMPT, **options) -> VideoStream:
    options = dict(dict(num_frames=16, chunk_frames=CHUNK, window_frames=None, sink_frames=0,
                        num_inference_steps=3, guidance_scale=3.0, height=SIZE, width=SIZE), **options)
    return VideoStream(pipe, prompt, StreamConfig(**options), generator=torch.Generator().manual_seed(7))


def chunkwise_noise(pipe, num_chunks: int) -> torch.Tensor:
    """The noise a stream draws: one chunk at a time from its generator."""
    generator = torch.Generator().manual_seed(7)
    chunk_shape = (1, 3, CHUNK * pipe.transformer.config.patch_size[0], SIZE, SIZE)
    return torch.cat([torch.randn(chunk_shape, generator=generator) for _ in range(num_chunks)], dim=2)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_unbounded_chunked_stream_equals_chunk_causal_generation(pipe, guidance_scale):
    video_stream = stream(pipe, guidance_scale=guidance_scale)
    streamed = torch.cat(list(video_stream._finished_chunks()), dim=2)
    reference = pipe(PROMPT, num_frames=16, height=SIZE, width=SIZE, num_inference_steps=3,
                     guidance_scale=guidance_scale, latents=chunkwise_noise(pipe, 4), generation_mode="chunked",
                     output_type="latent").frames
    torch.testing.assert_close(streamed, reference, rtol=1e-4, atol=1e-4)


def test_frames_are_uint8_images_and_stop_at_num_frames(pipe):
    frames = list(stream_video(pipe, PROMPT, num_frames=10, window_frames=4, height=SIZE, width=SIZE,
                               generator=torch.Generator().manual_seed(7)))
    assert len(frames) == 10
    assert all(frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8 for frame in frames)


@pytest.mark.parametrize("schedule", ["chunked", "rolling"])
def test_bounded_window_keeps_sink_and_never_exceeds_capacity(pipe, schedule):
    sink, window = CHUNK, 2 * CHUNK
    video_stream = stream(pipe, num_frames=48, sink_frames=sink, window_frames=window, schedule=schedule)
    cache = video_stream.cache
    patch_t = cache.patch_frames
    first_chunk = None
    sizes = []
    for chunk in video_stream._finished_chunks():
        first_chunk = chunk if first_chunk is None else first_chunk
        sizes.append(cache.num_frames)
        assert cache.num_frames <= sink + window
        assert all(layer.num_tokens <= (sink + window) * cache.frame_tokens for layer in cache.layers.values())
        torch.testing.assert_close(cache.latents[:, :, :sink * patch_t], first_chunk[:, :, :sink * patch_t],
                                   rtol=0, atol=0)
    assert max(sizes) == sink + window  # the window did fill, and then stayed at capacity
    assert len(cache.layers) == len(pipe.transformer.blocks)


def test_rope_positions_stay_in_the_table_past_its_length(pipe, monkeypatch):
    largest_positions = []
    original = kv_cache.rope_tables

    def recording_rope_tables(rope, frame_positions, *args):
        if frame_positions.numel():
            largest_positions.append(int(frame_positions.max()))
        return original(rope, frame_positions, *args)

    monkeypatch.setattr(kv_cache, "rope_tables", recording_rope_tables)
    num_frames = 3 * ROPE_TABLE * pipe.transformer.config.patch_size[0]  # three tables' worth of latent frames
    video_stream = stream(pipe, num_frames=num_frames, sink_frames=CHUNK, window_frames=2 * CHUNK,
                          schedule="rolling", rolling_chunks=3, guidance_scale=1.0)
    frames = list(video_stream.frames())
    assert len(frames) == num_frames
    assert max(largest_positions) < ROPE_TABLE
    assert max(largest_positions) == video_stream.config.largest_forward_frames(3 * ROPE_TABLE) - 1


def prefill_keys(pipe, video_stream: VideoStream, latents: torch.Tensor, prompt: str) -> dict[str, torch.Tensor]:
    """Keys every layer gets when `latents` are written in one chunk-causal forward at t=0 under `prompt`."""
    cache = RollingKVCache(0, None, CHUNK, video_stream.cache.frame_tokens, video_stream.cache.patch_frames)
    cache.add_finished(latents)
    embeddings = video_stream._embeddings(prompt)
    tokens = SIZE // pipe.transformer.config.patch_size[1]
    with torch.no_grad(), kv_cached_self_attention(pipe.transformer, cache), \
            cache.forward(cache.num_frames, tokens, tokens):
        pipe.transformer(hidden_states=latents.expand(embeddings.shape[0], -1, -1, -1, -1),
                         timestep=torch.zeros(embeddings.shape[0]), encoder_hidden_states=embeddings)
    return {name: layer.keys for name, layer in cache.layers.items()}


def written_keys(video_stream: VideoStream) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    cache = video_stream.cache
    latents = cache.latents[:, :, :cache.written_frames * cache.patch_frames]
    return latents, {name: layer.keys for name, layer in cache.layers.items()}


def assert_cache_written_under(pipe, video_stream: VideoStream, prompt: str) -> None:
    latents, keys = written_keys(video_stream)
    for name, expected in prefill_keys(pipe, video_stream, latents, prompt).items():
        torch.testing.assert_close(keys[name], expected, rtol=1e-4, atol=1e-4)


def test_prompt_switch_rebuilds_the_cache_under_the_new_prompt(pipe):
    switch_frame = 8  # the start of chunk 2
    plain = stream(pipe)
    # switch_context_noise=0: LongLive's clean re-cache, whose keys a clean prefill reproduces.
    switched = stream(pipe, prompt=[(0, PROMPT), (switch_frame, OTHER_PROMPT)], switch_context_noise=0.0)
    plain_frames, switched_frames = list(plain.frames()), list(switched.frames())
    np.testing.assert_array_equal(np.stack(plain_frames[:switch_frame]), np.stack(switched_frames[:switch_frame]))
    assert not np.array_equal(np.stack(plain_frames[switch_frame:]), np.stack(switched_frames[switch_frame:]))

    for video_stream, prompt in ((plain, PROMPT), (switched, OTHER_PROMPT)):
        assert_cache_written_under(pipe, video_stream, prompt)
    latents, keys = written_keys(switched)
    stale = prefill_keys(pipe, switched, latents, PROMPT)
    # The first layer's keys come before any cross-attention, so only later layers can tell the prompts apart.
    assert not all(torch.allclose(keys[name], stale[name], atol=1e-4) for name in keys)


def test_switch_context_noise_recaches_noised_context_only_at_the_switch(pipe):
    """The frames before the switch are untouched; the re-cache forward sees the cached latents noised to the
    level and embedded at that timestep; the frames after the switch differ from a clean re-cache."""
    switch_frame = 8  # the start of chunk 2
    prompts = [(0, PROMPT), (switch_frame, OTHER_PROMPT)]
    clean = stream(pipe, prompt=prompts, switch_context_noise=0.0)
    noised = stream(pipe, prompt=prompts, switch_context_noise=0.5)
    fed_timesteps = []
    forward = pipe.transformer.forward

    def recording_forward(*args, **kwargs):
        fed_timesteps.append(kwargs["timestep"].flatten().unique().tolist())
        return forward(*args, **kwargs)

    clean_frames = np.stack(list(clean.frames()))
    pipe.transformer.forward = recording_forward
    try:
        noised_frames = np.stack(list(noised.frames()))
    finally:
        del pipe.transformer.forward
    np.testing.assert_array_equal(clean_frames[:switch_frame], noised_frames[:switch_frame])
    assert not np.array_equal(clean_frames[switch_frame:], noised_frames[switch_frame:])
    re_cache = [steps for steps in fed_timesteps if 500.0 in steps]
    assert len(re_cache) == 1 and 0.0 not in re_cache[0]  # one forward, every cached frame at t = 500


def test_rolling_switch_drains_the_chunks_in_flight_first(pipe):
    """Under "rolling" the chunks started before a switch finish under the old prompt (bit-identical to a
    stream without the switch) and the new prompt starts from a re-cached history."""
    switch_frame = 8  # the start of chunk 2, entering while chunks 0 and 1 are still in flight
    plain = stream(pipe, schedule="rolling")
    switched = stream(pipe, prompt=[(0, PROMPT), (switch_frame, OTHER_PROMPT)], schedule="rolling",
                      switch_context_noise=0.0)
    plain_frames, switched_frames = np.stack(list(plain.frames())), np.stack(list(switched.frames()))
    np.testing.assert_array_equal(plain_frames[:switch_frame], switched_frames[:switch_frame])
    assert not np.array_equal(plain_frames[switch_frame:], switched_frames[switch_frame:])
    assert switched.applied_prompts == [(0, PROMPT), (switch_frame, OTHER_PROMPT)]
    assert_cache_written_under(pipe, switched, OTHER_PROMPT)


def test_live_prompt_switch_acts_as_a_scheduled_switch_at_the_next_chunk(pipe):
    switch_frame = 8  # the start of chunk 2, the next to enter while chunk 1's frames are handed out
    scheduled = stream(pipe, prompt=[(0, PROMPT), (switch_frame, OTHER_PROMPT)])
    live = stream(pipe)
    live_frames = []
    for frame in live.frames():
        live_frames.append(frame)
        if len(live_frames) == switch_frame - 2:  # mid-chunk 1, from another thread as a UI's handler would
            switcher = threading.Thread(target=live.switch_prompt, args=(OTHER_PROMPT,))
            switcher.start()
            switcher.join()
    np.testing.assert_array_equal(np.stack(live_frames), np.stack(list(scheduled.frames())))
    assert live.applied_prompts == scheduled.applied_prompts == [(0, PROMPT), (switch_frame, OTHER_PROMPT)]
    (_, live_keys), (_, scheduled_keys) = written_keys(live), written_keys(scheduled)
    assert live_keys.keys() == scheduled_keys.keys()
    for name in live_keys:  # the same re-cache (noised, by default) as the scheduled switch's
        torch.testing.assert_close(live_keys[name], scheduled_keys[name], rtol=0, atol=0)


@pytest.mark.parametrize("schedule", ["chunked", "rolling"])
def test_efficient_attention_runs_inside_the_window(pipe, schedule):
    """KV-cache calls (queries = the frames in flight, keys = cache + those frames) reach the method with the
    key grid; keeping every block reproduces the dense stream."""
    from recording import recorded_calls

    options = dict(num_frames=12, sink_frames=CHUNK, window_frames=CHUNK, schedule=schedule)
    reference = np.stack(list(stream(pipe, **options).frames()))
    pipe.enable_efficient_attention("_recording")
    try:
        recorded_calls()
        frames = np.stack(list(stream(pipe, **options).frames()))
        calls = recorded_calls()
        fallbacks = dict(swiftdit.attention_session(pipe).stats.dense_fallbacks)
    finally:
        pipe.disable_efficient_attention()
    assert not fallbacks
    assert max(call.layout.grid[0] for call, _ in calls) > CHUNK  # the cached frames are part of the key grid
    np.testing.assert_allclose(frames.astype(int), reference.astype(int), atol=1)


def test_sparse_method_inside_the_window_computes_only_query_rows(pipe):
    pipe.enable_efficient_attention("sparse", block_size=64, density=0.3, neighbours=False, first_frame_sink=False,
                                    reorder="none")
    try:
        frames = list(stream(pipe, num_frames=12, sink_frames=CHUNK, window_frames=CHUNK).frames())
        session = swiftdit.attention_session(pipe)
        fallbacks = dict(session.stats.dense_fallbacks)
        records = session.stats.per_head()
    finally:
        pipe.disable_efficient_attention()
    assert len(frames) == 12 and not fallbacks
    # One frame is one 64-token block. Per query row, density 0.3 of the key blocks plus the diagonal is
    # kept, so a call never computes more than 3 of 4 key blocks; only the query rows are counted.
    cached_calls = [r for r in records if r["density"].numel() and float(r["density"].mean()) < 1.0]
    assert cached_calls, "no KV-cache call was sparsified"
    assert all(float(r["density"].max()) <= 0.75 for r in cached_calls)


def test_rectified_history_falls_back_to_dense_in_kv_cache_calls_and_says_why(pipe):
    pipe.enable_efficient_attention("rectified", rectify="history", refresh_every=2, block_size=64, density=0.3,
                                    neighbours=False, first_frame_sink=False)
    try:
        frames = list(stream(pipe, num_frames=12, sink_frames=CHUNK, window_frames=CHUNK).frames())
        fallbacks = dict(swiftdit.attention_session(pipe).stats.dense_fallbacks)
    finally:
        pipe.disable_efficient_attention()
    assert len(frames) == 12
    assert fallbacks and all("keeps a history per pattern" in reason for reason in fallbacks.values())


@pytest.mark.parametrize("options, option_name", [
    (dict(num_frames=0), "num_frames"),
    (dict(window_frames=CHUNK // 2, chunk_frames=CHUNK), "window_frames"),
    (dict(window_frames=2 * CHUNK, sink_frames=4 * CHUNK), "sink_frames"),
    (dict(window_frames=3, chunk_frames=CHUNK), "window_frames"),
    (dict(window_frames=2 * CHUNK, sink_frames=1), "sink_frames"),
    (dict(schedule="bidirectional"), "schedule"),
    (dict(schedule="rolling", rolling_chunks=2, num_inference_steps=3), "rolling_chunks"),
    (dict(rolling_chunks=2), "rolling_chunks"),
    (dict(window_frames=None, num_frames=4 * ROPE_TABLE), "window_frames"),
    (dict(window_frames=4 * ROPE_TABLE), "window_frames"),
    (dict(height=SIZE + 1), "height"),
    (dict(switch_context_noise=1.0), "switch_context_noise"),
    (dict(switch_context_noise=-0.1), "switch_context_noise"),
    (dict(prompt=[(4, PROMPT)]), "prompt"),
    (dict(prompt=[(0, PROMPT), (0, OTHER_PROMPT)]), "prompt"),
    (dict(prompt=[(0, PROMPT), (999, OTHER_PROMPT)]), "prompt start_frame"),
])
def test_invalid_options_are_rejected_by_name(pipe, options, option_name):
    options = dict(dict(prompt=PROMPT, num_frames=16, window_frames=2 * CHUNK, height=SIZE, width=SIZE), **options)
    with pytest.raises(ValueError, match=f"'{option_name}'"):
        stream_video(pipe, options.pop("prompt"), options.pop("num_frames"), **options)


def test_pipelines_that_cannot_stream_are_rejected():
    not_wan = types.SimpleNamespace(transformer=torch.nn.Linear(2, 2), config=types.SimpleNamespace())
    with pytest.raises(ValueError, match="cannot be streamed"):
        stream_video(not_wan, PROMPT, 8, window_frames=2, chunk_frames=1, height=SIZE, width=SIZE)
    with pytest.raises(ValueError, match="'chunk_frames' is required"):
        stream_video(not_wan, PROMPT, 8, window_frames=2, height=SIZE, width=SIZE)
    two_experts = tiny_pipeline()
    two_experts.transformer_2 = tiny_wan().model
    with pytest.raises(ValueError, match="two experts"):
        stream_video(two_experts, PROMPT, 8, window_frames=2 * CHUNK, height=SIZE, width=SIZE)
