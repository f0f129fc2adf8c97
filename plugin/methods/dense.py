"""`dense`: attention exactly as the model computes it. Proves the mechanism is a no-op when it should be."""

from __future__ import annotations

from .base import AttentionMethod, MethodConfig
from .registry import register_method


@register_method
class DenseAttention(AttentionMethod):
    name = "dense"
    Config = MethodConfig
    summary = "Exact attention through diffusers' own dispatcher (reference and warm-up path)."
    paper = "-"
    sparsifies = False

    def plan(self, q, k, call):  # never called: the runtime routes every dense call to the dispatcher
        return None
