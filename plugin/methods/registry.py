"""Name -> method class. Methods register themselves with `@register_method` at import."""

from __future__ import annotations

from typing import Any

from ..validation import build_config
from .base import AttentionMethod

_METHODS: dict[str, type[AttentionMethod]] = {}


def register_method(cls: type[AttentionMethod]) -> type[AttentionMethod]:
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"attention method '{cls.name}' is registered twice")
    _METHODS[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    return sorted(_METHODS)


def method_class(name: str) -> type[AttentionMethod]:
    if not isinstance(name, str):
        raise TypeError(f"method must be a string, one of {available_methods()}; got {type(name).__name__}")
    if name not in _METHODS:
        raise ValueError(f"unknown attention method {name!r}; available methods are {available_methods()}")
    return _METHODS[name]


def build_method(name: str, options: dict[str, Any]) -> AttentionMethod:
    """Validate the options against the method's config dataclass and build the method."""
    cls = method_class(name)
    config = build_config(cls.Config, f"method '{name}'", options)
    return cls(config)
