"""Per-step pattern reuse.

Attention patterns drift slowly across denoising steps, so a plan can be reused for `refresh_every`
steps per (denoiser, layer, CFG branch, call within the layer). Dynamic patterns live for one pipeline
call (`clear()` at each call's start); static patterns (radial, CLEAR) depend only on the layout and are
kept for the session, shared by all layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable

import torch

from .kernels.block_sparse_attention import LocalWindowMask
from .pattern import BlockPattern


@dataclass
class _Entry:
    pattern: BlockPattern
    planned_step: int


class PatternCache:
    def __init__(self, refresh_every: int):
        self.refresh_every = refresh_every
        self._dynamic: dict[Hashable, _Entry] = {}
        self._static: dict[Hashable, BlockPattern] = {}
        self.plans = 0  # plans computed since the last clear()
        self.reuses = 0  # cached plans served since the last clear()

    def get_or_plan(self, key: Hashable, step_index: int, plan: Callable[[], BlockPattern]) -> BlockPattern:
        entry = self._dynamic.get(key)
        if entry is not None and 0 <= step_index - entry.planned_step < self.refresh_every:
            self.reuses += 1
            return entry.pattern
        pattern = plan()
        self._dynamic[key] = _Entry(pattern, step_index)
        self.plans += 1
        return pattern

    def get_or_plan_static(self, key: Hashable, plan: Callable[[], BlockPattern]) -> BlockPattern:
        pattern = self._static.get(key)
        if pattern is not None:
            self.reuses += 1
            return pattern
        pattern = plan()
        self._static[key] = pattern
        self.plans += 1
        return pattern

    def clear(self) -> None:
        """Forget the dynamic patterns (start of a pipeline call); static ones stay valid."""
        self._dynamic.clear()
        self.plans = 0
        self.reuses = 0

    def memory_bytes(self) -> int:
        patterns = [e.pattern for e in self._dynamic.values()] + list(self._static.values())
        return sum(_pattern_bytes(p) for p in patterns)


def _pattern_bytes(pattern: BlockPattern) -> int:
    tensors = [pattern.block_mask, pattern.token_order]
    window_bytes = 0
    if isinstance(pattern.element_mask, LocalWindowMask):
        window_bytes = pattern.element_mask.nbytes()
    else:
        tensors.append(pattern.element_mask)
    tensors += [v for v in (pattern.extras or {}).values() if isinstance(v, torch.Tensor)]
    return window_bytes + sum(t.numel() * t.element_size() for t in tensors if t is not None)
