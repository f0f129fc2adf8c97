"""The KV cache alone: RoPE tables at arbitrary positions, eviction that keeps the sink, re-cache marking."""

import pytest
import torch

from swiftdit.pipelines.kv_cache import LayerKV, RollingKVCache, apply_rope, kv_cached_self_attention, rope_tables
from tiny_models import tiny_wan


def test_rope_tables_match_the_model_and_shift_with_positions():
    transformer = tiny_wan(rope_max_seq_len=32).model
    latents = torch.zeros(1, 4, 5, 12, 10)  # grid (5, 6, 5)
    model_cos, model_sin = transformer.rope(latents)
    cos, sin = rope_tables(transformer.rope, torch.arange(5), 6, 5)
    torch.testing.assert_close(cos, model_cos.float())
    torch.testing.assert_close(sin, model_sin.float())
    # Frames at positions 3..7 get the model's tables of frames 3..7 (what a cache offset of 3 gives).
    shifted_cos, _ = rope_tables(transformer.rope, torch.arange(3, 8), 6, 5)
    longer_cos, _ = rope_tables(transformer.rope, torch.arange(8), 6, 5)
    torch.testing.assert_close(shifted_cos, longer_cos[:, 3 * 30:])
    with pytest.raises(ValueError, match="RoPE table of 32"):
        rope_tables(transformer.rope, torch.arange(30, 33), 6, 5)


def test_rotation_preserves_attention_scores_under_a_common_shift():
    """Relative RoPE: shifting queries and keys together leaves q.k unchanged, which is what makes
    re-indexing the cache from position 0 harmless."""
    transformer = tiny_wan(rope_max_seq_len=32).model
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(2, 1, 3 * 30, 2, 12, generator=generator)
    scores = []
    for offset in (0, 9):
        tables = rope_tables(transformer.rope, torch.arange(offset, offset + 3), 6, 5)
        scores.append(torch.einsum("bqhd,bkhd->bhqk", apply_rope(query, tables), apply_rope(key, tables)))
    torch.testing.assert_close(scores[0], scores[1], rtol=1e-4, atol=1e-4)


def filled_cache(sink: int, window: int | None, chunks: int, frame_tokens: int = 3) -> RollingKVCache:
    """A cache fed `chunks` one-frame chunks; chunk i's latents and keys are all equal to i."""
    cache = RollingKVCache(sink, window, 1, frame_tokens, 1)
    for index in range(chunks):
        cache.add_finished(torch.full((1, 1, 1, 1, 1), float(index)))
        kv = torch.full((1, frame_tokens * cache.pending_frames, 1, 1), float(index))
        cache.layer("blocks.0.attn1.processor").append(kv, kv)
        cache.written_frames = cache.num_frames
    return cache


def test_eviction_keeps_the_sink_and_the_newest_frames():
    cache = filled_cache(sink=2, window=3, chunks=9)
    assert cache.latents.flatten().tolist() == [0, 1, 6, 7, 8]
    keys = cache.layer("blocks.0.attn1.processor").keys
    assert keys.shape[1] == 5 * cache.frame_tokens
    assert keys[0, ::cache.frame_tokens, 0, 0].tolist() == [0, 1, 6, 7, 8]


def test_unbounded_cache_keeps_everything_and_recache_marks_all_pending():
    cache = filled_cache(sink=0, window=None, chunks=6)
    assert cache.num_frames == 6 and cache.pending_frames == 0
    cache.mark_all_pending()
    assert cache.pending_frames == 6
    assert cache.layer("blocks.0.attn1.processor").keys is None
    assert cache.pending_latents().flatten().tolist() == list(range(6))


def test_rotated_keys_are_recomputed_only_when_the_cache_changes():
    layer = LayerKV()
    transformer = tiny_wan(rope_max_seq_len=32).model
    tables = rope_tables(transformer.rope, torch.arange(1), 6, 5)
    keys = torch.randn(1, 30, 2, 12)
    layer.append(keys, keys)
    first = layer.rotated_keys(tables)
    assert layer.rotated_keys(tables) is first
    layer.drop(0, 30)
    assert layer.num_tokens == 0


def test_kv_cached_transformer_takes_the_plan_tables_and_gets_its_rope_back():
    transformer = tiny_wan(rope_max_seq_len=32).model
    model_rope = transformer.rope
    cache = RollingKVCache(1, 2, 1, 30, 1)
    with kv_cached_self_attention(transformer, cache):
        assert transformer.rope is not model_rope and cache.rope is model_rope
        with pytest.raises(RuntimeError, match="outside RollingKVCache.forward"):
            transformer.rope(torch.zeros(1))
        with cache.forward(1, 6, 5):
            assert transformer.rope(torch.zeros(1)) is cache.plan.fed_rope  # what the blocks get as rotary_emb
    assert transformer.rope is model_rope and cache.rope is None
    with pytest.raises(RuntimeError, match="inside kv_cached_self_attention"):
        with cache.forward(1, 6, 5):
            pass


def test_a_failure_inside_the_cache_context_restores_the_transformer():
    transformer = tiny_wan(rope_max_seq_len=32).model
    model_rope, processors = transformer.rope, transformer.attn_processors
    with pytest.raises(KeyError):
        with kv_cached_self_attention(transformer, RollingKVCache(1, 2, 1, 30, 1)):
            raise KeyError("failed mid-stream")
    assert transformer.rope is model_rope
    assert {name: type(p) for name, p in transformer.attn_processors.items()} == \
        {name: type(p) for name, p in processors.items()}
