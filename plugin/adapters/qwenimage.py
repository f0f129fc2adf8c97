"""QwenImage (and QwenImage-Edit).

Joint attention with text tokens first. img_shapes lists per sample the (F, H, W) token grids of the
packed image tokens; several images of one size (edit references) are stacked along F, images of
different sizes are treated as a single row of tokens.
"""

from __future__ import annotations

from .base import ModelAdapter
from .registry import register_adapter


@register_adapter
class QwenImageAdapter(ModelAdapter):
    family = "qwenimage"
    model_class_names = ("QwenImageTransformer2DModel",)
    attention_call = "dispatcher"
    self_attention_pattern = r"^transformer_blocks\.\d+\.attn$"
    text_position = "first"

    def grid(self, arguments):
        shapes = arguments["img_shapes"]
        shapes = shapes[0] if isinstance(shapes[0], list) else shapes  # per-sample list; all samples alike
        shapes = [tuple(int(x) for x in s) for s in shapes]
        if len({s[1:] for s in shapes}) == 1:
            return sum(s[0] for s in shapes), shapes[0][1], shapes[0][2]
        return 1, 1, sum(f * h * w for f, h, w in shapes)
