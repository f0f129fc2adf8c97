"""HunyuanVideo and HunyuanVideo 1.5.

Joint attention: video tokens first, text tokens last, in both dual- and single-stream blocks; the
padded text tokens are masked with a key mask (HunyuanVideo) or a dense (B, 1, S, S) mask built from it
(1.5). The token refiner attends among text tokens only and stays exact. Processors call the dispatcher.
"""

from __future__ import annotations

from .base import ModelAdapter
from .registry import register_adapter


@register_adapter
class HunyuanVideoAdapter(ModelAdapter):
    family = "hunyuan_video"
    model_class_names = ("HunyuanVideoTransformer3DModel", "HunyuanVideo15Transformer3DModel")
    attention_call = "dispatcher"
    self_attention_pattern = r"^(single_)?transformer_blocks\.\d+\.attn$"
    text_position = "last"
    dense_reasons = ((r"token_refiner", "text token refiner (text tokens only)"),)

    def grid(self, arguments):
        _, _, frames, height, width = arguments["hidden_states"].shape
        p, p_t = self.model.config.patch_size, self.model.config.patch_size_t
        return self.patchified_grid(frames, height, width, p_t, p, p)
