"""Model class -> adapter. Adapters register themselves with `@register_adapter` at import."""

from __future__ import annotations

import torch

from .base import ModelAdapter

_ADAPTERS: list[type[ModelAdapter]] = []


def register_adapter(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    _ADAPTERS.append(cls)
    return cls


def supported_model_classes() -> list[str]:
    return sorted(name for cls in _ADAPTERS for name in cls.model_class_names)


def find_adapter(model: torch.nn.Module) -> type[ModelAdapter] | None:
    for cls in _ADAPTERS:
        if cls.handles(model):
            return cls
    return None


def adapter_for(model: torch.nn.Module) -> ModelAdapter:
    cls = find_adapter(model)
    if cls is not None:
        return cls(model)
    raise ValueError(
        f"swiftdit does not support the model class {type(model).__name__}; supported classes are "
        f"{supported_model_classes()}"
    )
