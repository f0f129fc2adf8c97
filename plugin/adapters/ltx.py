"""LTX-Video.

attn1 is self-attention among video tokens, attn2 cross-attention to text. The latent arrives packed
(B, S, C); the forward's num_frames/height/width are the latent sizes, patchified by patch_size(_t).
"""

from __future__ import annotations

from .base import ModelAdapter
from .registry import register_adapter


@register_adapter
class LTXVideoAdapter(ModelAdapter):
    family = "ltx"
    model_class_names = ("LTXVideoTransformer3DModel",)
    attention_call = "dispatcher"
    self_attention_pattern = r"^transformer_blocks\.\d+\.attn1$"
    dense_reasons = ((r"\.attn2$", "cross-attention to text"),)
    token_order_modules = {"proj_in": "tokens_in", "rope": "positions", "proj_out": "tokens_out"}
    token_order_models = ("LTXVideoTransformer3DModel",)
    token_order_processors = ("LTXVideoAttnProcessor", "LTXVideoAttentionProcessor2_0")

    def grid(self, arguments):
        p, p_t = self.model.config.patch_size, self.model.config.patch_size_t
        return self.patchified_grid(arguments["num_frames"], arguments["height"], arguments["width"], p_t, p, p)
