"""Public entry points: enable / disable efficient attention on a pipeline or a transformer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .adapters import adapter_for, supported_model_classes
from .adapters.registry import find_adapter
from .methods import build_method
from .runtime import EfficientAttentionSession, wrap_pipeline_call

_SESSION_ATTR = "_swiftdit_session"


@dataclass
class DenoiserReport:
    component: str
    model_class: str
    family: str
    swapped: list[str]
    dense_layers: list[str]  # swapped modules that the config keeps dense (dense_layers)
    kept: dict[str, str]  # module -> why it is never swapped


@dataclass
class EnableReport:
    """What `enable_efficient_attention` changed, as printed for the user."""

    method: str
    options: dict[str, Any]
    denoisers: list[DenoiserReport] = field(default_factory=list)

    @property
    def num_swapped(self) -> int:
        return sum(len(d.swapped) - len(d.dense_layers) for d in self.denoisers)

    def __str__(self) -> str:
        lines = [f"swiftdit: method '{self.method}' with {self.options}"]
        for d in self.denoisers:
            lines.append(f"  {d.component} ({d.model_class}, adapter '{d.family}'):")
            sparse = [name for name in d.swapped if name not in d.dense_layers]
            lines.append(f"    efficient attention in {len(sparse)} self-attention layer(s): {_compact(sparse)}")
            if d.dense_layers:
                lines.append(f"    dense by dense_layers: {_compact(d.dense_layers)}")
            reasons: dict[str, list[str]] = {}
            for name, reason in d.kept.items():
                reasons.setdefault(reason, []).append(name)
            for reason, names in reasons.items():
                lines.append(f"    kept exact ({reason}): {_compact(names)}")
        dense_steps = self.options.get("dense_steps", 0)
        dense_last = self.options.get("dense_last_steps", 0)
        if dense_steps or dense_last:
            lines.append(f"  dense steps: first {dense_steps}, last {dense_last}")
        return "\n".join(lines)


def _compact(names: list[str], limit: int = 4) -> str:
    if len(names) <= limit:
        return ", ".join(names) or "-"
    return ", ".join(names[:limit]) + f", ... ({len(names)} in all)"


def _denoisers(target) -> tuple[list[tuple[str, torch.nn.Module]], object | None]:
    """(component name, transformer) pairs to patch, and the pipeline (None for a bare transformer)."""
    from diffusers import DiffusionPipeline

    if isinstance(target, DiffusionPipeline):
        components = {name: c for name, c in target.components.items() if isinstance(c, torch.nn.Module)}
        found = [(name, c) for name, c in components.items() if find_adapter(c) is not None]
        if found:
            return found, target
        named_transformers = [name for name in components if "transformer" in name]
        if named_transformers:
            classes = sorted({type(components[n]).__name__ for n in named_transformers})
            raise ValueError(
                f"{type(target).__name__}: unsupported model class(es) {classes}; supported classes are "
                f"{supported_model_classes()}"
            )
        raise ValueError(
            f"{type(target).__name__} has no transformer to patch (components: {sorted(target.components)}); "
            "swiftdit works on Diffusion Transformer pipelines"
        )
    if isinstance(target, torch.nn.Module):
        adapter_for(target)  # raises with the supported classes listed
        return [("transformer", target)], None
    raise TypeError(
        f"enable_efficient_attention expects a diffusers DiffusionPipeline or a transformer model, got "
        f"{type(target).__name__}"
    )


def enable_efficient_attention(target, method: str = "radial", **options) -> EnableReport:
    """Swap the self-attention of `target` (a pipeline or a transformer) for `method`.

    Everything is validated before anything is patched; enabling again replaces the previous
    configuration. Returns a report of which attention modules were swapped and which stay exact.
    """
    attention_method = build_method(method, options)
    denoisers, pipeline = _denoisers(target)
    adapters = [(name, model, adapter_for(model)) for name, model in denoisers]

    disable_efficient_attention(target)
    session = EfficientAttentionSession(attention_method, pipeline)
    report = EnableReport(method, attention_method.config.options())
    try:
        for name, model, adapter in adapters:
            entry = session.install(name, model, adapter)
            swapped = [n for n, _ in entry.swapped]
            report.denoisers.append(DenoiserReport(
                component=name, model_class=type(model).__name__, family=adapter.family, swapped=swapped,
                dense_layers=[n for i, n in enumerate(swapped) if attention_method.config.is_dense_layer(i)],
                kept={info.name: info.reason for info in entry.modules if not info.swapped},
            ))
            _set_session(model, session)
        if pipeline is not None:
            wrap_pipeline_call(type(pipeline))
            _set_session(pipeline, session)
    except BaseException:
        session.uninstall()
        for _, model, _ in adapters:
            _set_session(model, None)
        raise
    session.report = report
    return report


def disable_efficient_attention(target) -> None:
    """Remove everything `enable_efficient_attention` installed; a no-op when nothing is installed."""
    sessions = {id(s): s for s in [_get_session(target)] if s is not None}
    if not sessions and hasattr(target, "components"):
        for component in target.components.values():
            session = _get_session(component)
            if session is not None:
                sessions[id(session)] = session
    for session in sessions.values():
        for entry in session.denoisers:
            _set_session(entry.model, None)
        pipeline = session._pipeline_ref() if session._pipeline_ref is not None else None
        if pipeline is not None:
            _set_session(pipeline, None)
        session.uninstall()
    _set_session(target, None)


def attention_session(target) -> EfficientAttentionSession | None:
    """The active session of a pipeline or transformer (densities, pattern cache), or None."""
    return _get_session(target)


def _get_session(obj) -> EfficientAttentionSession | None:
    return getattr(obj, "__dict__", {}).get(_SESSION_ATTR)


def _set_session(obj, session) -> None:
    if session is None:
        obj.__dict__.pop(_SESSION_ATTR, None)
    else:
        obj.__dict__[_SESSION_ATTR] = session

