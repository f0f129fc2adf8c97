"""A self-attention KV cache with attention sinks for a chunk-causal `WanTransformer3DModel`.

The cache holds the clean latent frames of finished chunks: the first `sink_frames` frames for ever (the
attention sink, StreamingLLM / LongLive) and the most recent `window_frames` frames after them; older frames
are evicted chunk by chunk. Every self-attention layer keeps the keys and values of the cached frames.

Positions are relative to the cache (StreamingLLM's re-indexing, LongLive's "infinity" RoPE): keys are
stored before RoPE, and at every forward the cached frames take temporal positions 0..W-1 and the frames
being fed take W, W+1, ... So the largest position is bounded by sink + window + the frames of one forward,
never by the length of the video, and the model's RoPE table is never outrun.

A frame enters the cache *pending*: its latents are kept, its keys and values are not computed yet. The
next forward feeds pending frames in front of the noisy chunks at timestep 0 and stores their keys and
values (Self-Forcing's clean cache write, merged into the next denoising call instead of a forward of its
own). A prompt switch marks every cached frame pending again, which is LongLive's re-cache under the new
prompt.

Within one forward, queries are always the *trailing* keys: keys are [cached frames | fed frames] in time
order, queries are the fed frames, and attention is chunk-causal over the fed frames (all cached keys
visible). Chunk-causal with queries trailing means that each fed chunk sees a *prefix* of the keys, so a
forward that feeds several chunks makes one unmasked attention call per chunk against its prefix rather
than one masked call, so that SDPA can pick its fastest kernels (flash takes no mask at all). Each
call is the rectangular layout an efficient-attention backend sees through the processor's
`_attention_backend`.

Nothing here reads a GPU value on the host, so a stream's forwards are queued without waiting on the GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Iterator

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, WanRotaryPosEmbed, _get_qkv_projections


def rope_tables(rope: WanRotaryPosEmbed, frame_positions: torch.Tensor, height_tokens: int,
                width_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Wan's (cos, sin) tables, each (1, F*h*w, 1, head_dim), for frames at arbitrary temporal positions.

    Same layout as `WanRotaryPosEmbed.forward`, whose frames always sit at 0..F-1. Tables come out in
    float32: Wan keeps them in float64, which only costs time at the precisions the cache runs in.
    """
    largest = max(int(frame_positions.max()) if frame_positions.numel() else 0, height_tokens - 1, width_tokens - 1)
    frame_positions = frame_positions.to(rope.freqs_cos.device)
    if largest >= rope.max_seq_len:
        raise ValueError(f"position {largest} is past the model's RoPE table of {rope.max_seq_len} positions")
    num_frames = len(frame_positions)
    grid = (num_frames, height_tokens, width_tokens)
    tables = []
    for freqs in (rope.freqs_cos, rope.freqs_sin):
        time, height, width = freqs.float().split([rope.t_dim, rope.h_dim, rope.w_dim], dim=1)
        table = torch.cat([
            time[frame_positions].view(num_frames, 1, 1, rope.t_dim).expand(*grid, -1),
            height[:height_tokens].view(1, height_tokens, 1, rope.h_dim).expand(*grid, -1),
            width[:width_tokens].view(1, 1, width_tokens, rope.w_dim).expand(*grid, -1),
        ], dim=-1)
        tables.append(table.reshape(1, num_frames * height_tokens * width_tokens, 1, table.shape[-1]))
    return tables[0], tables[1]


def apply_rope(hidden_states: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Wan's interleaved rotary embedding on (B, S, H, D) queries or keys (WanAttnProcessor's inner helper)."""
    cos, sin = tables
    x1, x2 = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(hidden_states)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


@functools.cache
def compiled_apply_rope():
    return torch.compile(apply_rope, dynamic=False)


class LayerKV:
    """One self-attention layer's cached keys (before RoPE) and values, each (B, tokens, heads, head_dim)."""

    def __init__(self):
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        # Cached keys rotated to positions 0..W-1. They depend only on the cached content (the cache always
        # starts at position 0), so they are computed once per change of the cache, not once per forward.
        self._rotated_keys: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return 0 if self.keys is None else self.keys.shape[1]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        if keys.shape[1] == 0:
            return
        self.keys = keys if self.keys is None else torch.cat([self.keys, keys], dim=1)
        self.values = values if self.values is None else torch.cat([self.values, values], dim=1)
        self._rotated_keys = None

    def drop(self, start: int, stop: int) -> None:
        """Remove tokens [start, stop) (eviction from the window; the sink before `start` stays)."""
        if self.keys is None or start >= stop:
            return
        self.keys = torch.cat([self.keys[:, :start], self.keys[:, stop:]], dim=1)
        self.values = torch.cat([self.values[:, :start], self.values[:, stop:]], dim=1)
        self._rotated_keys = None

    def clear(self) -> None:
        self.keys = self.values = self._rotated_keys = None

    def rotated_keys(self, tables: tuple[torch.Tensor, torch.Tensor], rotate=apply_rope) -> torch.Tensor | None:
        if self.keys is not None and self._rotated_keys is None:
            self._rotated_keys = rotate(self.keys, tables)
        return self._rotated_keys


@dataclasses.dataclass(frozen=True)
class QuerySpan:
    """Fed tokens [start, stop) attend to keys [0, key_stop) of [cached | fed]."""

    start: int
    stop: int
    key_stop: int


@dataclasses.dataclass(frozen=True)
class ForwardPlan:
    """What every self-attention layer needs for the forward in progress (computed once, shared by layers)."""

    fed_rope: tuple[torch.Tensor, torch.Tensor]  # tables of the fed frames (positions W, W+1, ...)
    cached_rope: tuple[torch.Tensor, torch.Tensor]  # tables of the cached frames (positions 0..W-1)
    query_spans: tuple[QuerySpan, ...]  # one per fed chunk, or a single span when every key is visible
    pending_tokens: int  # the leading fed tokens whose keys and values are stored by this forward


class RollingKVCache:
    """Clean latent frames of finished chunks, their per-layer keys and values, sink and sliding window.

    Frames are counted in latent frames of the transformer's token grid (after the temporal patch);
    latents are kept in sample space, `patch_frames` sample frames per latent frame.
    """

    def __init__(self, sink_frames: int, window_frames: int | None, chunk_frames: int, frame_tokens: int,
                 patch_frames: int):
        self.sink_frames = sink_frames
        self.window_frames = window_frames
        self.chunk_frames = chunk_frames
        self.frame_tokens = frame_tokens
        self.patch_frames = patch_frames
        self.latents: torch.Tensor | None = None  # (B, C, cached frames * patch_frames, h, w)
        self.written_frames = 0  # the leading cached frames whose keys and values every layer holds
        self.layers: dict[str, LayerKV] = {}
        self.plan: ForwardPlan | None = None
        self.rope: WanRotaryPosEmbed | None = None  # the model's, bound by kv_cached_self_attention
        self.rotate_keys = apply_rope  # compiled when the transformer's blocks are (kv_cached_self_attention)
        # RoPE tables by (first position, frames, height tokens, width tokens): a stream cycles through a few
        # layouts, and building a table moves positions to the GPU, which would wait for the queued work.
        self._rope_tables: dict[tuple[int, int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def num_frames(self) -> int:
        return 0 if self.latents is None else self.latents.shape[2] // self.patch_frames

    @property
    def pending_frames(self) -> int:
        return self.num_frames - self.written_frames

    def layer(self, name: str) -> LayerKV:
        return self.layers.setdefault(name, LayerKV())

    def pending_latents(self) -> torch.Tensor | None:
        if self.latents is None:
            return None
        return self.latents[:, :, self.written_frames * self.patch_frames:]

    def add_finished(self, latents: torch.Tensor) -> None:
        """A finished chunk enters as pending; the oldest window frames leave if the cache is over capacity."""
        self.latents = latents if self.latents is None else torch.cat([self.latents, latents], dim=2)
        if self.window_frames is None:
            return
        excess = self.num_frames - self.sink_frames - self.window_frames
        if excess <= 0:
            return
        start, stop = self.sink_frames, self.sink_frames + excess
        self.latents = torch.cat([self.latents[:, :, :start * self.patch_frames],
                                  self.latents[:, :, stop * self.patch_frames:]], dim=2)
        written_evicted = min(max(self.written_frames - start, 0), excess)
        for layer in self.layers.values():
            layer.drop(start * self.frame_tokens, (start + written_evicted) * self.frame_tokens)
        self.written_frames -= written_evicted

    def mark_all_pending(self) -> None:
        """Forget every key and value so that the next forward recomputes them (re-cache on prompt switch)."""
        for layer in self.layers.values():
            layer.clear()
        self.written_frames = 0

    def _rope(self, first: int, frames: int, height_tokens: int, width_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (first, frames, height_tokens, width_tokens)
        if key not in self._rope_tables:
            if len(self._rope_tables) >= 32:  # a bound, in case the token grid keeps changing
                self._rope_tables.clear()
            self._rope_tables[key] = rope_tables(self.rope, torch.arange(first, first + frames), height_tokens,
                                                 width_tokens)
        return self._rope_tables[key]

    @contextlib.contextmanager
    def forward(self, fed_frames: int, height_tokens: int, width_tokens: int) -> Iterator[None]:
        """Plan one transformer forward on [pending frames | `fed_frames` - pending noisy frames].

        Inside the block the layers attend to the cache and store the pending frames' keys and values;
        afterwards those frames count as written.
        """
        if self.rope is None:
            raise RuntimeError("RollingKVCache.forward() runs inside kv_cached_self_attention(transformer, cache)")
        if fed_frames % self.chunk_frames:
            raise ValueError(f"a forward must feed whole chunks of {self.chunk_frames} frames, got {fed_frames}")
        cached = self.written_frames
        cached_tokens, chunk_tokens = cached * self.frame_tokens, self.chunk_frames * self.frame_tokens
        query_spans = tuple(QuerySpan(start, start + chunk_tokens, cached_tokens + start + chunk_tokens)
                            for start in range(0, fed_frames * self.frame_tokens, chunk_tokens))
        self.plan = ForwardPlan(
            fed_rope=self._rope(cached, fed_frames, height_tokens, width_tokens),
            cached_rope=self._rope(0, cached, height_tokens, width_tokens),
            query_spans=query_spans,
            pending_tokens=self.pending_frames * self.frame_tokens,
        )
        try:
            yield
        finally:
            self.plan = None
        self.written_frames = self.num_frames


class KVCacheWanAttnProcessor(WanAttnProcessor):
    """Wan self-attention against [cached keys | own keys], with positions relative to the cache.

    `rotary_emb` is the cache plan's tables of the fed frames (relative positions), given to the blocks
    by `CacheRelativeRope` in place of the model's absolute ones. Attention goes through diffusers'
    dispatcher with this processor's backend, so an efficient-attention backend set on the layer still
    receives the call.
    """

    def __init__(self, cache: RollingKVCache, layer_name: str):
        super().__init__()
        self.cache = cache
        self.layer_name = layer_name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        # Projections, norms and the rotation of the fed frames are plain tensor work that
        # `compile_for_streaming` compiles with the block (`rotary_emb` holds the plan's fed tables, through
        # `CacheRelativeRope`); only the part that reads and writes the cache stays eager.
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        out = self._attend_with_cache(apply_rope(query, rotary_emb), key, apply_rope(key, rotary_emb), value)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    # Left out of torch.compile: it reads and writes Python state (the cache's plan, the layer's tensors,
    # which change size as the window fills), which dynamo would guard on per layer and per cache layout.
    @torch.compiler.disable
    def _attend_with_cache(self, query: torch.Tensor, key: torch.Tensor, fed_keys: torch.Tensor,
                           value: torch.Tensor) -> torch.Tensor:
        """Rotated queries attend to [cached | fed] keys span by span; the pending frames' keys (unrotated:
        their positions change as the window slides) and values are stored."""
        plan = self.cache.plan
        if plan is None:
            raise RuntimeError("a KV-cached self-attention layer ran outside RollingKVCache.forward()")
        layer = self.cache.layer(self.layer_name)
        cached_keys = layer.rotated_keys(plan.cached_rope, self.cache.rotate_keys)
        keys = fed_keys if cached_keys is None else torch.cat([cached_keys, fed_keys], dim=1)
        values = value if layer.values is None else torch.cat([layer.values, value], dim=1)
        outs = [dispatch_attention_fn(query[:, span.start:span.stop], keys[:, :span.key_stop],
                                      values[:, :span.key_stop], backend=self._attention_backend)
                for span in plan.query_spans]
        layer.append(key[:, :plan.pending_tokens], value[:, :plan.pending_tokens])
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


class CacheRelativeRope(torch.nn.Module):
    """Stands in for a Wan transformer's `rope` while a KV cache is on: the blocks receive the RoPE tables of
    the fed frames at their positions relative to the cache (the plan's), not the absolute ones."""

    def __init__(self, cache: RollingKVCache):
        super().__init__()
        self.cache = cache

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache.plan is None:
            raise RuntimeError("a KV-cached transformer ran outside RollingKVCache.forward()")
        return self.cache.plan.fed_rope


@contextlib.contextmanager
def kv_cached_self_attention(transformer: WanTransformer3DModel, cache: RollingKVCache) -> Iterator[None]:
    """Give every self-attention layer a `KVCacheWanAttnProcessor` reading `cache`, and the transformer a
    `CacheRelativeRope`, for the block's duration; the cache plans its forwards with the model's RoPE."""
    originals = transformer.attn_processors
    cached = {}
    for name, processor in originals.items():
        if ".attn1." not in name:
            continue
        if type(processor) is not WanAttnProcessor:
            raise ValueError(f"a KV cache needs Wan's own self-attention processor, but {name} is "
                             f"{type(processor).__name__}; disable other attention replacements first")
        if processor._parallel_config is not None:
            raise ValueError("a KV cache does not run under context parallelism: every forward feeds one chunk "
                             f"window, too few tokens to split ({name} has a parallel config)")
        replacement = KVCacheWanAttnProcessor(cache, name)
        replacement._attention_backend = processor._attention_backend
        cached[name] = replacement
    model_rope = transformer.rope
    transformer.set_attn_processor({**originals, **cached})
    try:  # everything swapped in is put back, whatever fails
        cache.rope, transformer.rope = model_rope, CacheRelativeRope(cache)
        if any(block._compiled_call_impl is not None for block in transformer.blocks):
            # The cached keys' rotation (once per layer and chunk) runs in the eager part of the processor;
            # with compiled blocks it is compiled too, instead of six float32 passes over the cached keys.
            cache.rotate_keys = compiled_apply_rope()
        yield
    finally:
        transformer.rope, cache.rope = model_rope, None
        transformer.set_attn_processor(dict(originals))
