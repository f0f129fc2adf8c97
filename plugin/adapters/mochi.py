"""Mochi 1.

Joint attention: video tokens first, then the sample's valid text tokens (the processor loops over
the batch and drops padded text, so the text length varies per call). The processor calls
F.scaled_dot_product_attention directly. Only space is patchified.
"""

from __future__ import annotations

from .base import ModelAdapter
from .registry import register_adapter


@register_adapter
class MochiAdapter(ModelAdapter):
    family = "mochi"
    model_class_names = ("MochiTransformer3DModel",)
    attention_call = "sdpa"
    self_attention_pattern = r"^transformer_blocks\.\d+\.attn1$"
    text_position = "last"

    def grid(self, arguments):
        _, _, frames, height, width = arguments["hidden_states"].shape
        p = self.model.config.patch_size
        return self.patchified_grid(frames, height, width, 1, p, p)
