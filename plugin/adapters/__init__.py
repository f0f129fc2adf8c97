"""One adapter per model family. Importing this package registers them all."""

from . import cogvideox, flux, hunyuan_video, ltx, mochi, pixart, qwenimage, stable_diffusion3, wan  # noqa: F401
from .base import AttentionModuleInfo, ModelAdapter
from .registry import adapter_for, supported_model_classes

__all__ = ["AttentionModuleInfo", "ModelAdapter", "adapter_for", "supported_model_classes"]
