"""What the active method knows about the attention call it is serving.

The runtime fills an `AttentionCall` for each self-attention call (layer from the per-module hook, step
and branch from the transformer hook, layout from the adapter) and hands it to the method's `plan` and
`attend`. It is plain data so that plans can be keyed by it and tests can check it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .layout import TokenLayout


@dataclass(frozen=True)
class StepInfo:
    """Where the denoising loop is when a transformer forward runs.

    step_index: 0-based denoising step within the current pipeline call.
    num_steps: total denoising steps of the call, or None when unknown (transformer called directly).
    branch: the classifier-free-guidance branch: the pipeline's cache-context name ("cond", "uncond",
        "cond_uncond") when it sets one, else "pass0", "pass1", ... for the n-th forward of the step.
    model_key: which denoiser runs ("transformer" or "transformer_2" for Wan 2.2's two experts).
    """

    step_index: int
    num_steps: int | None
    branch: str
    model_key: str = "transformer"


@dataclass(frozen=True)
class AttentionCall:
    """One attention call as the method sees it."""

    layer_name: str  # module path, e.g. "blocks.3.attn1"
    layer_index: int  # index among the model's swappable self-attention layers
    num_layers: int
    is_cross: bool
    step: StepInfo
    layout: TokenLayout
    # The order the visual rows of q and k arrive in (raster indices per position), when the runtime holds the
    # method's token order through the forward; None: raster. Not part of equality (tensors).
    token_order: torch.Tensor | None = field(default=None, compare=False)

    @property
    def cache_key(self) -> tuple:
        """Key for per-call caches: one pattern per denoiser, layer and CFG branch."""
        return (self.step.model_key, self.layer_name, self.step.branch)
