"""PixArt-alpha / sigma.

attn1 is self-attention among image tokens, attn2 cross-attention to text; AttnProcessor2_0 calls
F.scaled_dot_product_attention directly. The latent (B, C, H, W) is patchified by patch_size.
"""

from __future__ import annotations

from .base import ModelAdapter
from .registry import register_adapter


@register_adapter
class PixArtAdapter(ModelAdapter):
    family = "pixart"
    model_class_names = ("PixArtTransformer2DModel",)
    attention_call = "sdpa"
    self_attention_pattern = r"^transformer_blocks\.\d+\.attn1$"
    dense_reasons = ((r"\.attn2$", "cross-attention to text"),)

    def grid(self, arguments):
        _, _, height, width = arguments["hidden_states"].shape
        p = self.model.config.patch_size
        return self.patchified_grid(1, height, width, 1, p, p)
