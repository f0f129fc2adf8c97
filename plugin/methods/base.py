"""The method interface: a frozen, validated config plus two steps, `plan` and `attend`.

plan(q, k, call) -> BlockPattern | None
    Decide which key blocks each query block needs, from the visual queries/keys of this call (dynamic
    methods) or from the layout alone (static methods). Patterns are cached by the runtime: a plan is
    reused for `refresh_every` steps per (denoiser, layer, CFG branch).
attend(inputs, pattern, call) -> Tensor
    Compute attention of the visual queries with that pattern. Text keys (joint-attention models) are
    always attended in full; text query rows are computed exactly by the runtime, never by a method.

The runtime (swiftdit.runtime) decides which calls reach a method at all: cross-attention, dense steps
and dense layers go through diffusers' own dispatcher untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from ..context import AttentionCall
from ..pattern import BlockPattern
from ..validation import check_bool, check_int
from swiftdit.kernels.block_sparse_attention import LocalWindowMask, block_sparse_attention
from .blocking import reorder_tokens, restore_token_order


@dataclass(frozen=True)
class MethodConfig:
    """Options every method shares.

    dense_steps: the first N denoising steps run dense attention (warm-up; the layout of the video is
        decided early).
    dense_last_steps: the last N denoising steps run dense attention (fine detail).
    dense_layers: an int N keeps the first N self-attention layers dense, or a tuple of explicit layer
        indices to keep dense.
    refresh_every: re-plan the pattern every k sparse steps and reuse it in between (1 = plan every step).
    hold_token_order: for methods that reorder tokens into blocks, put the tokens in that order once per
        transformer forward (the tokens entering the blocks, the rotary table, and back after the output
        projection) instead of gathering q, k, v and the output in every layer. Only where the model's adapter
        can (Wan and LTX-Video, without per-token timesteps or attention masks); the output is the same up to
        rounding.
    """

    dense_steps: int = 0
    dense_last_steps: int = 0
    dense_layers: int | tuple[int, ...] = 0
    refresh_every: int = 1
    hold_token_order: bool = True

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_int(owner, "dense_steps", self.dense_steps, minimum=0)
        check_int(owner, "dense_last_steps", self.dense_last_steps, minimum=0)
        check_int(owner, "refresh_every", self.refresh_every, minimum=1)
        check_bool(owner, "hold_token_order", self.hold_token_order)
        layers = self.dense_layers
        if isinstance(layers, list):
            object.__setattr__(self, "dense_layers", tuple(layers))
            layers = self.dense_layers
        if isinstance(layers, tuple):
            for index in layers:
                check_int(owner, "dense_layers[i]", index, minimum=0)
        else:
            check_int(owner, "dense_layers", layers, minimum=0)

    def is_dense_layer(self, layer_index: int) -> bool:
        if isinstance(self.dense_layers, tuple):
            return layer_index in self.dense_layers
        return layer_index < self.dense_layers

    def is_dense_step(self, step_index: int, num_steps: int | None) -> bool:
        if step_index < self.dense_steps:
            return True
        return num_steps is not None and step_index >= num_steps - self.dense_last_steps

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class VisualAttentionInputs:
    """The visual rows of one attention call, in (B, H, N, D) layout.

    text_k, text_v: (B, H, L, D) text keys/values every visual query attends to (None without text).
    text_key_mask: (B, L) bool, False marks padded text tokens.
    visual_mask: (B|1, H|1, N, N) bool element mask the model itself imposes among visual tokens
        (e.g. SkyReels' block-causal diffusion-forcing mask), in raster order; None when it imposes none.
    token_order: the order the rows of q, k, v arrive in (raster indices per position; None: raster). The
        output is returned in the same order.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    scale: float
    text_k: torch.Tensor | None = None
    text_v: torch.Tensor | None = None
    text_key_mask: torch.Tensor | None = None
    visual_mask: torch.Tensor | None = None
    token_order: torch.Tensor | None = None


class AttentionMethod:
    """Base class: subclasses set `name`, `Config`, `summary`, `paper` and implement `plan`."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    # True when the pattern depends only on the layout (radial, CLEAR): planned once per layout.
    static_pattern: ClassVar[bool] = False
    # False for methods that never change attention (dense).
    sparsifies: ClassVar[bool] = True

    def __init__(self, config: MethodConfig):
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config
        self._token_orders: dict[tuple, torch.Tensor | None] = {}

    def token_order(self, grid: tuple[int, int, int], device) -> torch.Tensor | None:
        """The token order of this method's patterns for a grid (None: raster), one cached tensor per grid and
        device: the runtime may hold it through a whole forward, and tokens already in a pattern's order are
        recognised by that identity."""
        key = (tuple(grid), str(torch.device(device)))
        if key not in self._token_orders:
            self._token_orders[key] = self.build_token_order(tuple(grid), device)
        return self._token_orders[key]

    def build_token_order(self, grid: tuple[int, int, int], device) -> torch.Tensor | None:
        """Methods that reorder tokens into blocks override this; see `token_order`."""
        return None

    def plan(self, q: torch.Tensor, k: torch.Tensor, call: AttentionCall) -> BlockPattern | None:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget state kept across the steps of one pipeline call; the runtime calls it at each call's start.

        Per-call state belongs on the method keyed by `call.cache_key`, or in the pattern's `extras` when it
        lives exactly as long as a cached plan (Re-ttention's history). Learned weights (SLA's projections)
        are not per-call state and survive a reset.
        """

    def supports_kv_cache_calls(self) -> bool:
        """Whether calls whose queries are only the last frames of the keys (rolling generation's KV cache) may
        reach `attend`: they get a fresh, restricted copy of the cached pattern every time."""
        return True

    def computed_density(self, pattern: BlockPattern, inputs: VisualAttentionInputs) -> torch.Tensor:
        """Visual query-key pairs that `attend` will compute for these inputs with this pattern, as a share of
        all pairs, per (batch, head); the runtime records it for every call. The pattern's density, unless the
        method computes more (Re-ttention's refresh steps compute every pair, some twice: it can exceed 1)."""
        return pattern.density_per_head()

    def attend(self, inputs: VisualAttentionInputs, pattern: BlockPattern, call: AttentionCall) -> torch.Tensor:
        """Block-sparse attention with the pattern (tokens reordered first if the pattern says so)."""
        return attend_with_pattern(inputs, pattern, return_lse=False)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def attend_with_pattern(inputs: VisualAttentionInputs, pattern: BlockPattern, *, return_lse: bool = True,
                        estimate_dropped: bool = False, output_scale: torch.Tensor | None = None,
                        output_addend: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run block-sparse attention for a pattern; returns (out, lse) in the original token order.

    With return_lse=False the LSE may be None, which lets the CPU path use PyTorch's fused SDPA.
    estimate_dropped: also attend each dropped key block's pooled column (`rectified`), blocks taken in the
    pattern's token order.
    The tokens arrive, and the output returns, in `inputs.token_order`.
    output_scale (B, H, N) and output_addend (B, H, N, D), in that order: out becomes
    output_scale * out + output_addend, fused into the pass that restores the token order (`rectified`'s cached
    corrections); the LSE is the attention's own.
    """
    q, k, v, visual_mask = inputs.q, inputs.k, inputs.v, inputs.visual_mask
    order = pattern.token_order
    q, k, v = (reorder_tokens(x, order, inputs.token_order) for x in (q, k, v))
    if visual_mask is not None and order is not None:  # the model's mask is in raster order
        visual_mask = visual_mask[:, :, order][:, :, :, order]
    element_mask = pattern.element_mask
    if visual_mask is not None:
        if isinstance(element_mask, LocalWindowMask):
            # A per-call mask on visual tokens (rare) has to be combined pair by pair: the window goes dense.
            element_mask = element_mask.to_dense(visual_mask.device)
        element_mask = visual_mask if element_mask is None else element_mask & visual_mask
    kv_indices, kv_counts = pattern.to_index_table()
    out, lse = block_sparse_attention(
        q, k, v, kv_indices, kv_counts, pattern.block_size,
        text_k=inputs.text_k, text_v=inputs.text_v, text_key_mask=inputs.text_key_mask,
        element_mask=element_mask, scale=inputs.scale, return_lse=return_lse, estimate_dropped=estimate_dropped,
    )
    out = restore_token_order(out, pattern, inputs.token_order, row_scale=output_scale, addend=output_addend)
    lse = None if lse is None else restore_token_order(lse, pattern, inputs.token_order)
    return out, lse


def default_scale(head_dim: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
