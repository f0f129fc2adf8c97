"""The session: hooks that know step, layer and grid, and the path of one sparse attention call.

    pipe(...)                          class-level __call__ wrapper: session.begin_pipeline_call()
      transformer.forward              DenoiserHook: step index, CFG branch, latent grid, held token order
        patch embedding, rotary table  TokenOrderHook: tokens put in the method's order once per forward
        attention module forward       AttentionLayerHook: layer identity; dense or sparse at this step
          processor -> attention op    intercept.py: plugin backend or SDPA interception
            session.run_layer_attention(...)
              method.plan  (PatternCache: reused for refresh_every steps)
              method.attend (visual rows; text keys always attended)
              text rows: exact dense attention
        output projection              TokenOrderHook: tokens back to raster order

Hooks are diffusers `ModelHook`s so they compose with diffusers' own cache hooks and are removed
cleanly. Every Python-side decision runs outside torch.compile'd graphs (`torch._dynamo.disable`), so
changing steps never triggers a recompile.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from .adapters import ModelAdapter
from .adapters.base import AttentionModuleInfo
from .context import AttentionCall, StepInfo
from .intercept import (
    ACTIVE_LAYER,
    BACKEND_NAME,
    SdpaInterception,
    UnsupportedCall,
    as_4d_mask,
    boolean_mask,
    ensure_backend_registered,
    split_attention_mask,
    text_row_mask,
)
from .kernels.token_permutation import inverse_permutation
from .layout import TokenLayout
from .methods import AttentionMethod, VisualAttentionInputs
from .methods.base import default_scale
from .pattern import BlockPattern, block_sizes
from .pattern_cache import PatternCache

DENOISER_HOOK = "swiftdit_denoiser"
LAYER_HOOK = "swiftdit_attention_layer"
TOKEN_ORDER_HOOK = "swiftdit_token_order"


class StepTracker:
    """Derives the denoising step index from what each transformer forward sees.

    Wan passes `step_index` in its cache context and that wins. Every other pipeline is covered by
    counting distinct timesteps: a forward whose timestep differs from the previous forward's starts a
    new step; forwards with the same timestep (cond then uncond) share the step and are numbered as CFG
    passes. The tracker is shared by a pipeline's denoisers (Wan 2.2's two experts) and reset at the
    start of every pipeline call.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.step_index = -1
        self.pass_index = 0
        self._last_timestep_key = None

    def advance(self, timestep: torch.Tensor | None, explicit_step: int | None) -> tuple[int, int]:
        key = None
        if timestep is not None and explicit_step is None:  # reading the timestep is a device sync
            t = timestep.detach().flatten().float()
            # First value and sum: per-frame timesteps (diffusion forcing) change somewhere every step.
            key = tuple(torch.stack([t[0], t.sum()]).tolist())
        if explicit_step is not None:
            new_step = explicit_step != self.step_index
            self.step_index = explicit_step
        else:
            new_step = key is None or key != self._last_timestep_key or self.step_index < 0
            if new_step:
                self.step_index += 1
        self.pass_index = 0 if new_step else self.pass_index + 1
        self._last_timestep_key = key
        return self.step_index, self.pass_index


@dataclass
class ForwardState:
    step: StepInfo
    grid: tuple[int, int, int]
    # The method's token order, held from the patch embedding to the output projection (TokenOrderHook);
    # None: tokens stay in raster order and each attention call reorders its own q, k, v.
    token_order: torch.Tensor | None = None
    inverse_token_order: torch.Tensor | None = None


@dataclass
class LayerCall:
    """A swapped attention module's forward in progress (the value of ACTIVE_LAYER)."""

    session: "EfficientAttentionSession"
    denoiser: "DenoiserEntry"
    info: AttentionModuleInfo
    layer_index: int
    fallback_backend: object
    sparse: bool
    step: StepInfo | None
    grid: tuple[int, int, int] | None
    token_order: torch.Tensor | None = None  # the order q, k, v's visual rows arrive in (ForwardState)
    op_index: int = 0  # attention ops run so far in this module forward (Mochi loops over the batch)


@dataclass
class DenoiserEntry:
    """One patched transformer of the session."""

    key: str  # component name: "transformer", "transformer_2"
    model: torch.nn.Module
    adapter: ModelAdapter
    modules: list[AttentionModuleInfo]
    swapped: list[tuple[str, torch.nn.Module]] = field(default_factory=list)
    saved_backends: dict[str, object] = field(default_factory=dict)
    token_order_hooked: list[torch.nn.Module] = field(default_factory=list)
    forward: ForwardState | None = None
    # Why the last forward did not hold the method's token order (None: it did, or the method has none).
    token_order_blocker: str | None = None


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        pass


class DenoiserHook(ModelHook):
    """Stateful hook on each transformer: reads step, branch and grid before every forward.

    It holds a StateManager only so that diffusers' `cache_context(...)` reaches it; diffusers also calls
    its reset_state at the end of every pipeline call.
    """

    _is_stateful = True

    def __init__(self, session: "EfficientAttentionSession", entry: DenoiserEntry):
        super().__init__()
        self.session = session
        self.entry = entry
        self.state_manager = StateManager(_NoState)

    def pre_forward(self, module, *args, **kwargs):
        self.session.begin_forward(self.entry, args, kwargs, self.state_manager._context)
        return args, kwargs

    def reset_state(self, module):
        # diffusers resets stateful hooks at the end of every pipeline call: drop per-call state but keep
        # the densities of the finished call for inspection (they are cleared when the next call starts).
        self.session.reset_call_state(keep_stats=True)
        return module


class AttentionLayerHook(ModelHook):
    """Per swapped attention module: marks which layer runs and whether it is sparse at this step."""

    def __init__(self, session: "EfficientAttentionSession", entry: DenoiserEntry, info: AttentionModuleInfo,
                 layer_index: int):
        super().__init__()
        self.session, self.entry, self.info, self.layer_index = session, entry, info, layer_index

    def new_forward(self, module, *args, **kwargs):
        if self.entry.adapter.attention_call == "sdpa":
            return self._forward_with_sdpa_interception(module, *args, **kwargs)
        token = _enter_layer(self, module)
        try:
            return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            ACTIVE_LAYER.reset(token)

    @torch._dynamo.disable
    def _forward_with_sdpa_interception(self, module, *args, **kwargs):
        layer = self.session.layer_call(self.entry, self.info, self.layer_index, module)
        if not layer.sparse:
            return self.fn_ref.original_forward(*args, **kwargs)
        token = ACTIVE_LAYER.set(layer)
        try:
            with SdpaInterception(layer):
                return self.fn_ref.original_forward(*args, **kwargs)
        finally:
            ACTIVE_LAYER.reset(token)


class TokenOrderHook(ModelHook):
    """On the submodules an adapter names in `token_order_modules`: while a forward holds a token order, the
    patch embedding's output and the rotary table are put in that order and the output projection's output
    back in raster order. Every block then runs on reordered tokens, and the swapped self-attention layers
    find q, k and v already in their patterns' order: one gather per forward instead of four per layer."""

    ROLES = ("grid_in", "tokens_in", "positions", "tokens_out")  # see ModelAdapter.token_order_modules

    def __init__(self, entry: DenoiserEntry, role: str):
        super().__init__()
        if role not in self.ROLES:
            raise ValueError(f"{type(entry.adapter).__name__}.token_order_modules: role must be one of {self.ROLES}, "
                             f"got {role!r}")
        self.entry, self.role = entry, role

    @torch._dynamo.disable
    def post_forward(self, module, output):
        forward = self.entry.forward
        order = None if forward is None else forward.token_order
        if order is None:
            return output
        if self.role == "grid_in":  # (B, C, T, H, W): reorder the flattened grid positions
            return output.flatten(2).index_select(2, order).view(output.shape)
        if self.role == "tokens_out":
            return output.index_select(1, forward_inverse_order(forward))
        # "tokens_in" and "positions": tokens on dim 1 (the rotary table may be a tuple of tensors)
        if isinstance(output, tuple):
            return tuple(t.index_select(1, order) for t in output)
        return output.index_select(1, order)


def forward_inverse_order(forward: ForwardState) -> torch.Tensor:
    """The inverse of the held order (computed once per forward, on the first use)."""
    if forward.inverse_token_order is None:
        forward.inverse_token_order = inverse_permutation(forward.token_order)
    return forward.inverse_token_order


@torch._dynamo.disable
def _enter_layer(hook: AttentionLayerHook, module):
    return ACTIVE_LAYER.set(hook.session.layer_call(hook.entry, hook.info, hook.layer_index, module))


class AttentionStats:
    """Achieved density per (step, denoiser, layer, branch), kept as small device tensors (no sync)."""

    def __init__(self):
        self.records: list[tuple[StepInfo, str, int, torch.Tensor]] = []
        self.dense_fallbacks: dict[str, str] = {}

    def clear(self) -> None:
        self.records.clear()

    def record(self, call: AttentionCall, density_per_head: torch.Tensor) -> None:
        self.records.append((call.step, call.layer_name, call.layer_index, density_per_head.detach()))

    def summary(self) -> dict:
        """Mean density of the sparse calls, per step and per layer (floats)."""
        per_step, per_layer = defaultdict(list), defaultdict(list)
        for step, layer_name, _, density in self.records:
            value = float(density.float().mean())
            per_step[step.step_index].append(value)
            per_layer[layer_name].append(value)
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        return {
            "sparse_calls": len(self.records),
            "mean_density": mean([v for vs in per_step.values() for v in vs]) if self.records else None,
            "per_step": {k: mean(v) for k, v in sorted(per_step.items())},
            "per_layer": {k: mean(v) for k, v in per_layer.items()},
        }

    def per_head(self) -> list[dict]:
        """Every sparse call with its density per (batch, head)."""
        return [
            {"step": s.step_index, "branch": s.branch, "denoiser": s.model_key, "layer": name,
             "layer_index": index, "density": d.float().cpu()}
            for s, name, index, d in self.records
        ]


class EfficientAttentionSession:
    """Everything one `enable_efficient_attention` installed, and the state of the current call."""

    def __init__(self, method: AttentionMethod, pipeline=None):
        self.method = method
        self.config = method.config
        self._pipeline_ref = weakref.ref(pipeline) if pipeline is not None else None
        self.denoisers: list[DenoiserEntry] = []
        self.steps = StepTracker()
        self.patterns = PatternCache(self.config.refresh_every)
        self.stats = AttentionStats()
        self.pipeline_calls = 0

    # -- installation --------------------------------------------------------------------------------
    def install(self, key: str, model: torch.nn.Module, adapter: ModelAdapter) -> DenoiserEntry:
        entry = DenoiserEntry(key, model, adapter, [])
        self.denoisers.append(entry)  # before hooking, so that uninstall() can undo a partial install
        if adapter.attention_call == "dispatcher":
            ensure_backend_registered()
        swapped = []
        for name, module, info in adapter.attention_modules():
            if info.swapped and adapter.attention_call == "dispatcher" and not hasattr(
                module.processor, "_attention_backend"
            ):
                info = AttentionModuleInfo(name, False, "custom processor that bypasses diffusers' dispatcher")
            entry.modules.append(info)
            if info.swapped:
                swapped.append((name, module, info))
        registry = HookRegistry.check_if_exists_or_initialize(model)
        registry.register_hook(DenoiserHook(self, entry), DENOISER_HOOK)
        for layer_index, (name, module, info) in enumerate(swapped):
            entry.swapped.append((name, module))
            if adapter.attention_call == "dispatcher":
                entry.saved_backends[name] = module.processor._attention_backend
                module.processor._attention_backend = BACKEND_NAME
            HookRegistry.check_if_exists_or_initialize(module).register_hook(
                AttentionLayerHook(self, entry, info, layer_index), LAYER_HOOK
            )
        for name, role in adapter.token_order_modules.items():
            try:
                submodule = model.get_submodule(name)
            except AttributeError:
                continue
            HookRegistry.check_if_exists_or_initialize(submodule).register_hook(TokenOrderHook(entry, role),
                                                                                TOKEN_ORDER_HOOK)
            entry.token_order_hooked.append(submodule)
        registry.invalidate_child_registries_cache()
        return entry

    def uninstall(self) -> None:
        for entry in self.denoisers:
            for name, module in entry.swapped:
                registry = getattr(module, "_diffusers_hook", None)
                if registry is not None and registry.get_hook(LAYER_HOOK) is not None:
                    registry.remove_hook(LAYER_HOOK, recurse=False)
                if name in entry.saved_backends and module.processor._attention_backend == BACKEND_NAME:
                    module.processor._attention_backend = entry.saved_backends[name]
            for submodule in entry.token_order_hooked:
                registry = getattr(submodule, "_diffusers_hook", None)
                if registry is not None and registry.get_hook(TOKEN_ORDER_HOOK) is not None:
                    registry.remove_hook(TOKEN_ORDER_HOOK, recurse=False)
            registry = getattr(entry.model, "_diffusers_hook", None)
            if registry is not None:
                if registry.get_hook(DENOISER_HOOK) is not None:
                    registry.remove_hook(DENOISER_HOOK, recurse=False)
                registry.invalidate_child_registries_cache()
        self.denoisers = []

    # -- per call state ------------------------------------------------------------------------------
    def begin_pipeline_call(self) -> None:
        self.pipeline_calls += 1
        self.reset_call_state()

    def reset_call_state(self, keep_stats: bool = False) -> None:
        """Start of a pipeline call (and diffusers' end-of-call reset): no state leaks between calls."""
        self.steps.reset()
        self.patterns.clear()
        if not keep_stats:
            self.stats.clear()
        for entry in self.denoisers:
            entry.forward = None
        self.method.reset()

    @torch._dynamo.disable
    def begin_forward(self, entry: DenoiserEntry, args, kwargs, cache_context) -> None:
        arguments = entry.adapter.bind_forward_arguments(args, kwargs)
        explicit_step = getattr(cache_context, "step_index", None)
        step_index, pass_index = self.steps.advance(entry.adapter.timestep(arguments), explicit_step)
        num_steps = getattr(cache_context, "num_inference_steps", None) or self._pipeline_num_steps()
        branch = cache_context.name if cache_context is not None else f"pass{pass_index}"
        grid = tuple(int(g) for g in entry.adapter.grid(arguments))
        entry.forward = ForwardState(StepInfo(step_index, num_steps, branch, entry.key), grid,
                                     self._token_order_to_hold(entry, arguments, grid))

    def _token_order_to_hold(self, entry: DenoiserEntry, arguments: dict, grid) -> torch.Tensor | None:
        """The method's token order for this forward's grid, when the adapter can hold it through the forward.
        Held at dense steps too, so that every forward of a call has the same token order between the hooks
        (diffusers' cache hooks reuse block outputs across steps)."""
        entry.token_order_blocker = None
        if not (self.config.hold_token_order and self.method.sparsifies):
            return None
        blocker = entry.adapter.token_order_blocker(arguments, [module for _, module in entry.swapped])
        if blocker is not None:
            entry.token_order_blocker = blocker
            return None
        return self.method.token_order(grid, entry.adapter.token_device(arguments))

    def _pipeline_num_steps(self) -> int | None:
        pipe = self._pipeline_ref() if self._pipeline_ref is not None else None
        if pipe is None:
            return None
        num = getattr(pipe, "_num_timesteps", None)
        if isinstance(num, int) and num > 0:
            return num
        timesteps = getattr(getattr(pipe, "scheduler", None), "timesteps", None)
        return len(timesteps) if timesteps is not None else None

    def layer_call(self, entry: DenoiserEntry, info: AttentionModuleInfo, layer_index: int, module) -> LayerCall:
        fallback = entry.saved_backends.get(info.name)
        processor = getattr(module, "processor", None)
        if entry.adapter.attention_call == "dispatcher" and processor is not None:
            current = getattr(processor, "_attention_backend", BACKEND_NAME)
            if current != BACKEND_NAME:
                # The user chose another backend (or processor) after enabling: it becomes the dense
                # fallback, and this layer goes through the plugin again.
                fallback = entry.saved_backends[info.name] = current
                processor._attention_backend = BACKEND_NAME
        forward = entry.forward
        sparse = (
            forward is not None
            and self.method.sparsifies
            and not self.config.is_dense_layer(layer_index)
            and not self.config.is_dense_step(forward.step.step_index, forward.step.num_steps)
        )
        return LayerCall(self, entry, info, layer_index, fallback, sparse,
                         forward.step if forward else None, forward.grid if forward else None,
                         forward.token_order if forward else None)

    def note_dense_fallback(self, layer: LayerCall, reason: str) -> None:
        self.stats.dense_fallbacks[layer.info.name] = reason

    # -- one sparse attention call -------------------------------------------------------------------
    def run_layer_attention(self, layer: LayerCall, q, k, v, attn_mask, scale) -> torch.Tensor:
        """Sparse self-attention for one call; q, k, v are (B, H, S, D), the result likewise.

        Keys may outnumber queries, and a call may cover fewer frames than the forward: during rolling
        generation each chunk being denoised (the queries) attends to the KV cache (sink and window frames)
        followed by the fed frames up to its own, one call per chunk.
        """
        heads = q.shape[1]
        if k.shape[1] != heads:  # grouped-query attention: expand shared key/value heads
            k = k.repeat_interleave(heads // k.shape[1], dim=1)
            v = v.repeat_interleave(heads // v.shape[1], dim=1)
        cached = k.shape[2] - q.shape[2]
        if cached and layer.token_order is not None:
            raise RuntimeError(f"{layer.info.name}: cached keys reached a forward that holds a token order; the "
                               "adapter's token_order_processors must not list a processor that passes them")
        if cached < 0:
            raise UnsupportedCall(f"{q.shape[2]} queries against only {k.shape[2]} keys")
        forward_tokens = layer.grid[0] * layer.grid[1] * layer.grid[2]
        if cached == 0 and (layer.info.text_position != "none" or k.shape[2] == forward_tokens):
            return self._attend(layer, q, k, v, attn_mask, scale)
        return self._attend_with_kv_cache(layer, q, k, v, attn_mask, scale, cached)

    def _attend_with_kv_cache(self, layer: LayerCall, q, k, v, attn_mask, scale, cached: int) -> torch.Tensor:
        """Queries are the last frames of the key grid: plan over the whole key grid, compute only their rows.
        (With no cached keys this is a call on the first frames of the forward's grid.)

        The cached frames have no queries, so their keys stand in for them while planning; the blocks that
        hold no real query are then emptied, which the kernels skip, and their rows are dropped.
        """
        if not self.method.supports_kv_cache_calls():
            raise UnsupportedCall(f"{self.method.name} with options {self.method.config} keeps a history per pattern, "
                                  "which a KV-cache call's restricted pattern cannot carry")
        frame_tokens = layer.grid[1] * layer.grid[2]
        if layer.info.text_position != "none" or cached % frame_tokens or q.shape[2] % frame_tokens:
            raise UnsupportedCall("KV-cache call whose cached and queried tokens are not whole visual frames")
        key_layer = dataclasses.replace(layer, grid=(k.shape[2] // frame_tokens, *layer.grid[1:]))
        mask = None
        if attn_mask is not None:
            rows = as_4d_mask(boolean_mask(attn_mask), q.shape[0], q.shape[2])
            if rows.shape[2] == 1:
                rows = rows.expand(*rows.shape[:2], q.shape[2], -1)
            mask = torch.ones(*rows.shape[:2], k.shape[2], k.shape[2], dtype=torch.bool, device=rows.device)
            mask[:, :, cached:] = rows
        q_with_stand_ins = torch.cat([k[:, :, :cached], q], dim=2)
        out = self._attend(key_layer, q_with_stand_ins, k, v, mask, scale, query_start=cached)
        return out[:, :, cached:]

    def _attend(self, layer: LayerCall, q, k, v, attn_mask, scale, query_start: int = 0) -> torch.Tensor:
        batch, heads, seq_len, head_dim = q.shape
        try:
            layout = TokenLayout.for_call(layer.grid, seq_len, layer.info.text_position)
        except ValueError as error:
            raise UnsupportedCall(str(error)) from error
        visual, text = layout.visual_slice, layout.text_slice
        text_key_mask, visual_mask = split_attention_mask(attn_mask, batch, seq_len, visual, text)
        call = AttentionCall(layer.info.name, layer.layer_index, len(layer.denoiser.swapped), False, layer.step,
                             layout, token_order=layer.token_order)
        q_vis, k_vis, v_vis = q[:, :, visual], k[:, :, visual], v[:, :, visual]
        pattern = self._pattern(call, layer, q_vis, k_vis)
        layer.op_index += 1
        inputs = VisualAttentionInputs(
            q_vis, k_vis, v_vis, default_scale(head_dim, scale),
            text_k=k[:, :, text] if layout.text_len else None,
            text_v=v[:, :, text] if layout.text_len else None,
            text_key_mask=text_key_mask, visual_mask=visual_mask, token_order=layer.token_order,
        )
        if query_start:
            pattern, density = only_query_rows(pattern, query_start)
        else:
            density = self.method.computed_density(pattern, inputs)
        self.stats.record(call, density)
        out_visual = self.method.attend(inputs, pattern, call)
        if not layout.text_len:
            return out_visual
        # Text query rows stay exact: dense attention over every key, with the model's own mask.
        out_text = F.scaled_dot_product_attention(
            q[:, :, text], k, v, attn_mask=text_row_mask(attn_mask, batch, seq_len, text), scale=scale
        )
        parts = (out_text, out_visual) if layout.text_position == "first" else (out_visual, out_text)
        return torch.cat(parts, dim=2)

    def _pattern(self, call: AttentionCall, layer: LayerCall, q_vis, k_vis):
        plan = functools.partial(self.method.plan, q_vis, k_vis, call)
        if self.method.static_pattern:
            return self.patterns.get_or_plan_static((call.layout.grid, q_vis.device), plan)
        key = (*call.cache_key, layer.op_index, tuple(q_vis.shape[:2]), call.layout)
        return self.patterns.get_or_plan(key, call.step.step_index, plan)

    # -- inspection ----------------------------------------------------------------------------------
    def density_summary(self) -> dict:
        return self.stats.summary()

    def pattern_cache_bytes(self) -> int:
        return self.patterns.memory_bytes()


def only_query_rows(pattern: BlockPattern, query_start: int) -> tuple[BlockPattern, torch.Tensor]:
    """Empty the query blocks that hold no real query (token index < query_start) and return the density
    over the rows still computed, per (batch, head)."""
    n, size = pattern.num_tokens, pattern.block_size
    positions = torch.arange(n, device=pattern.block_mask.device)
    if pattern.token_order is not None:
        positions = pattern.token_order.to(positions.device)
    is_query = torch.nn.functional.pad(positions >= query_start, (0, pattern.num_blocks * size - n))
    rows = is_query.view(pattern.num_blocks, size).any(-1)
    restricted = dataclasses.replace(pattern, block_mask=pattern.block_mask & rows[:, None])
    row_tokens = (block_sizes(n, size, rows.device) * rows).sum()  # not indexing by `rows`: that waits for the GPU
    return restricted, restricted.density_per_head() * n / row_tokens


def wrap_pipeline_call(pipeline_class: type) -> None:
    """Wrap a pipeline class's __call__ once so each call starts with fresh per-call state.

    The wrapper is inert for instances without a session, so it never needs to be removed.
    """
    original = pipeline_class.__call__
    if getattr(original, "_swiftdit_wrapped", False):
        return

    @functools.wraps(original)
    def __call__(self, *args, **kwargs):
        session = self.__dict__.get("_swiftdit_session")
        if session is not None:
            session.begin_pipeline_call()
        return original(self, *args, **kwargs)

    __call__._swiftdit_wrapped = True
    pipeline_class.__call__ = __call__

