"""Validation helpers for frozen option dataclasses: every error names the option and what is allowed."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable


def check_int(owner: str, name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: option '{name}' must be an int, got {type(value).__name__} {value!r}")
    _check_range(owner, name, value, minimum, maximum)


def check_float(owner: str, name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                exclusive_minimum: bool = False, exclusive_maximum: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: option '{name}' must be a number, got {type(value).__name__} {value!r}")
    if exclusive_minimum and minimum is not None and value <= minimum:
        raise ValueError(f"{owner}: option '{name}' must be > {minimum}, got {value!r}")
    if exclusive_maximum and maximum is not None and value >= maximum:
        raise ValueError(f"{owner}: option '{name}' must be < {maximum}, got {value!r}")
    _check_range(owner, name, value, minimum, maximum)


def check_choice(owner: str, name: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{owner}: option '{name}' must be one of {list(allowed)}, got {value!r}")


def check_bool(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: option '{name}' must be True or False, got {value!r}")


def _check_range(owner: str, name: str, value, minimum, maximum) -> None:
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        lo = "-inf" if minimum is None else minimum
        hi = "inf" if maximum is None else maximum
        raise ValueError(f"{owner}: option '{name}' must be in [{lo}, {hi}], got {value!r}")


def build_config(config_class: type, owner: str, options: dict[str, Any]):
    """Instantiate a frozen config dataclass from user keyword options, rejecting unknown names."""
    fields = {f.name for f in dataclasses.fields(config_class) if f.init}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"{owner}: unknown option(s) {unknown}; allowed options are {sorted(fields)}")
    return config_class(**options)
