"""CogVideoX 1.0 and 1.5.

Joint attention with text tokens first. The processor calls F.scaled_dot_product_attention directly,
so the call is intercepted per module. The latent is (B, F, C, H, W); 1.5 also patches time
(patch_size_t = 2).
"""

from __future__ import annotations

from .base import ModelAdapter
from .registry import register_adapter


@register_adapter
class CogVideoXAdapter(ModelAdapter):
    family = "cogvideox"
    model_class_names = ("CogVideoXTransformer3DModel",)
    attention_call = "sdpa"
    self_attention_pattern = r"^transformer_blocks\.\d+\.attn1$"
    text_position = "first"

    def grid(self, arguments):
        _, frames, _, height, width = arguments["hidden_states"].shape
        p, p_t = self.model.config.patch_size, self.model.config.patch_size_t or 1
        return self.patchified_grid(frames, height, width, p_t, p, p)
