"""Flux.1 (dev, schnell, Kontext, Fill).

Joint attention with text tokens first in both double- and single-stream blocks. The latent arrives
packed; the image grid is read from img_ids (row, column in columns 1 and 2). Packed ids that do not
form one rectangle (Kontext's reference image) are treated as a single row of tokens.
"""

from __future__ import annotations

from .base import ModelAdapter
from .registry import register_adapter


@register_adapter
class FluxAdapter(ModelAdapter):
    family = "flux"
    model_class_names = ("FluxTransformer2DModel",)
    attention_call = "dispatcher"
    self_attention_pattern = r"^(single_)?transformer_blocks\.\d+\.attn$"
    text_position = "first"

    def grid(self, arguments):
        ids = arguments["img_ids"]
        ids = ids[0] if ids.dim() == 3 else ids
        num_tokens = ids.shape[0]
        height, width = int(ids[:, 1].max()) + 1, int(ids[:, 2].max()) + 1
        if height * width != num_tokens:
            return 1, 1, num_tokens
        return 1, height, width
