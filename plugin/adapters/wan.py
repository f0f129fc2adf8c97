"""Wan 2.1/2.2 (T2V, I2V, TI2V, both A14B experts), WanVACE, WanAnimate and SkyReels-V2.

attn1 is self-attention among video tokens (RoPE applied inside the processor); attn2 is
cross-attention to text (and, for I2V, image tokens), which stays exact. Processors call diffusers'
dispatcher. The latent (B, C, F, H, W) is patchified by a Conv3d with stride (p_t, p_h, p_w).
"""

from __future__ import annotations

from .base import ModelAdapter
from .registry import register_adapter


@register_adapter
class WanAdapter(ModelAdapter):
    family = "wan"
    model_class_names = (
        "WanTransformer3DModel",
        "WanVACETransformer3DModel",
        "WanAnimateTransformer3DModel",
        "SkyReelsV2Transformer3DModel",
    )
    attention_call = "dispatcher"
    self_attention_pattern = r"^(vace_)?blocks\.\d+\.attn1$"
    dense_reasons = ((r"\.attn2$", "cross-attention to text/image"), (r"face", "face-adapter attention"))
    token_order_modules = {"patch_embedding": "grid_in", "rope": "positions", "proj_out": "tokens_out"}
    token_order_models = ("WanTransformer3DModel",)
    token_order_processors = ("WanAttnProcessor", "WanAttnProcessor2_0")

    def grid(self, arguments):
        _, _, frames, height, width = arguments["hidden_states"].shape
        p_t, p_h, p_w = self.model.config.patch_size
        return self.patchified_grid(frames, height, width, p_t, p_h, p_w)
