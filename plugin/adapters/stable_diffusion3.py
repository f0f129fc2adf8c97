"""Stable Diffusion 3 / 3.5.

Joint attention with image tokens first and text last (JointAttnProcessor2_0, which calls
F.scaled_dot_product_attention directly); SD3.5's dual-attention layers add attn2, image-only
self-attention. The latent (B, C, H, W) is patchified by patch_size.
"""

from __future__ import annotations

from .base import ModelAdapter
from .registry import register_adapter


@register_adapter
class SD3Adapter(ModelAdapter):
    family = "sd3"
    model_class_names = ("SD3Transformer2DModel",)
    attention_call = "sdpa"
    self_attention_pattern = r"^transformer_blocks\.\d+\.attn2?$"
    visual_only_pattern = r"\.attn2$"
    text_position = "last"

    def grid(self, arguments):
        _, _, height, width = arguments["hidden_states"].shape
        p = self.model.config.patch_size
        return self.patchified_grid(1, height, width, 1, p, p)
