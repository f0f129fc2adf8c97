"""Attention methods. Importing this package registers every method by name."""

from . import clear, dense, draft, radial, rectified, sla, sparse  # noqa: F401  (registration side effects)
from .base import AttentionMethod, MethodConfig, VisualAttentionInputs, attend_with_pattern
from .registry import available_methods, build_method, method_class, register_method

__all__ = [
    "AttentionMethod",
    "MethodConfig",
    "VisualAttentionInputs",
    "attend_with_pattern",
    "available_methods",
    "build_method",
    "method_class",
    "register_method",
]
