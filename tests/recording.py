"""A test-only method that computes exact attention (all blocks kept) and records what it was told."""

from __future__ import annotations

import torch

from swiftdit.methods import AttentionMethod, MethodConfig, register_method
from swiftdit.methods.registry import available_methods
from swiftdit.pattern import BlockPattern, num_blocks


class RecordingAttention(AttentionMethod):
    name = "_recording"
    Config = MethodConfig
    summary = "test probe: full pattern, records every AttentionCall"
    calls: list = []

    def plan(self, q, k, call):
        type(self).calls.append((call, tuple(q.shape)))
        n = num_blocks(q.shape[2], 16)
        return BlockPattern(torch.ones(1, 1, n, n, dtype=torch.bool), 16, q.shape[2])

    def attend(self, inputs, pattern, call):
        type(self).inputs.append(inputs)
        return super().attend(inputs, pattern, call)

    inputs: list = []


if RecordingAttention.name not in available_methods():
    register_method(RecordingAttention)


def recorded_calls(clear: bool = True):
    calls = list(RecordingAttention.calls)
    if clear:
        RecordingAttention.calls.clear()
        RecordingAttention.inputs.clear()
    return calls
