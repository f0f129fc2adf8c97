"""What a model adapter knows: where the self-attention modules are, how attention is computed, how to
read the latent token grid from the forward arguments, and where text tokens sit.

Everything model-specific lives in one adapter file per family; the runtime is model-agnostic.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from ..layout import TextPosition

AttentionCallKind = Literal["dispatcher", "sdpa"]


@dataclass(frozen=True)
class AttentionModuleInfo:
    """One attention module of a model, as the report shows it."""

    name: str
    swapped: bool
    reason: str  # why it is kept dense when not swapped ("cross-attention", "text refiner", ...)
    text_position: TextPosition = "none"


class ModelAdapter:
    """Base adapter. Subclasses set the class attributes and implement `grid`."""

    family: ClassVar[str]
    model_class_names: ClassVar[tuple[str, ...]]
    # "dispatcher": processors call diffusers' dispatch_attention_fn (a plugin backend is injected);
    # "sdpa": processors call F.scaled_dot_product_attention directly (intercepted per module).
    attention_call: ClassVar[AttentionCallKind]
    # Regex on module names of visual self-attention layers, and the text position inside each.
    self_attention_pattern: ClassVar[str]
    text_position: ClassVar[TextPosition] = "none"
    # Module names matching this regex are self-attention among visual tokens only, even in a joint
    # attention model (SD3.5's attn2).
    visual_only_pattern: ClassVar[str | None] = None
    # Reasons shown in the report for attention modules that stay dense, by regex on the name.
    dense_reasons: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Holding a method's token order through a whole forward (runtime.TokenOrderHook): the submodules whose
    # outputs carry the visual tokens, by role. Everything between them must treat tokens one by one, except
    # the swapped self-attention. Roles:
    #   "grid_in": output (B, C, T, H, W) that the model flattens into raster tokens (a patch embedding);
    #   "tokens_in": output (B, N, C), raster tokens on dim 1 (a projection of already packed latents);
    #   "positions": output tensor (or tuple of tensors) with the tokens on dim 1 (the rotary table);
    #   "tokens_out": output (B, N, C), tokens on dim 1, that leaves the model (put back in raster order).
    # Empty: the attention layers reorder q, k, v and the output themselves.
    token_order_modules: ClassVar[dict[str, str]] = {}
    # Model classes for which `token_order_modules` is known to be complete (variants that add token streams,
    # such as control hints, are left out), and the self-attention processors known to pass neither an
    # attention mask nor cached keys (a mask or a cache in raster order cannot meet reordered tokens).
    token_order_models: ClassVar[tuple[str, ...]] = ()
    token_order_processors: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._forward_signature = inspect.signature(type(model).forward)

    @classmethod
    def handles(cls, model: torch.nn.Module) -> bool:
        return type(model).__name__ in cls.model_class_names

    # -- attention modules -------------------------------------------------------------------------
    def attention_modules(self) -> list[tuple[str, torch.nn.Module, AttentionModuleInfo]]:
        """Every attention module with whether it is swapped and why not."""
        from diffusers.hooks._common import _ATTENTION_CLASSES

        found = []
        for name, module in self.model.named_modules():
            if not isinstance(module, _ATTENTION_CLASSES):
                continue
            if re.search(self.self_attention_pattern, name):
                position = self.text_position
                if self.visual_only_pattern and re.search(self.visual_only_pattern, name):
                    position = "none"
                found.append((name, module, AttentionModuleInfo(name, True, "", position)))
            else:
                found.append((name, module, AttentionModuleInfo(name, False, self._dense_reason(name))))
        return found

    def _dense_reason(self, name: str) -> str:
        for pattern, reason in self.dense_reasons:
            if re.search(pattern, name):
                return reason
        return "not visual self-attention"

    # -- forward arguments -------------------------------------------------------------------------
    def bind_forward_arguments(self, args: tuple, kwargs: dict) -> dict[str, Any]:
        return self._forward_signature.bind_partial(self.model, *args, **kwargs).arguments

    def grid(self, arguments: dict[str, Any]) -> tuple[int, int, int]:
        """Latent token grid (T, H, W) after patchify, from the bound forward arguments."""
        raise NotImplementedError

    def timestep(self, arguments: dict[str, Any]) -> torch.Tensor | None:
        return arguments.get("timestep")

    def token_device(self, arguments: dict[str, Any]) -> torch.device:
        """Where the forward's tokens live (the held token order is built there)."""
        return arguments["hidden_states"].device

    def token_order_blocker(self, arguments: dict[str, Any], self_attention: list[torch.nn.Module]) -> str | None:
        """Why this forward cannot hold a token order (None: it can). `self_attention`: the swapped modules."""
        if not self.token_order_modules or type(self.model).__name__ not in self.token_order_models:
            return f"{type(self.model).__name__} has no token-order hooks"
        if getattr(self.model, "_parallel_config", None) is not None:
            return "context parallelism splits the tokens"
        timestep = self.timestep(arguments)
        if timestep is not None and timestep.dim() > 1 and timestep[0].numel() > 1:
            return "per-token timesteps are laid out in raster order"
        for module in self_attention:
            processor = type(getattr(module, "processor", None)).__name__
            if processor not in self.token_order_processors:
                return f"self-attention processor {processor} may pass a mask or cached keys"
        return None

    # -- helpers shared by adapters ----------------------------------------------------------------
    @staticmethod
    def patchified_grid(frames: int, height: int, width: int, patch_t: int, patch_h: int, patch_w: int):
        return frames // patch_t, height // patch_h, width // patch_w
