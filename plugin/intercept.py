"""Where attention calls are taken over.

Two entry points lead to the same `run_layer_attention`:
- models whose processors call diffusers' dispatcher get a plugin backend, "swiftdit", injected into
  `AttentionBackendName` and set on their swapped processors;
- models whose processors call F.scaled_dot_product_attention directly (CogVideoX, Mochi, SD3, PixArt)
  run their swapped attention modules inside `SdpaInterception`, a TorchFunctionMode.

Which layer is running, and whether it is sparse at this step, comes from the `ACTIVE_LAYER` context
variable that the per-module hook sets (see runtime.py). Anything this code cannot sparsify exactly
(masks it does not understand, context parallelism) falls back to the dense call, never to a guess.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

if TYPE_CHECKING:
    from .runtime import LayerCall

BACKEND_NAME = "swiftdit"

# The layer whose forward is running, set by AttentionLayerHook; None outside swapped modules.
ACTIVE_LAYER: ContextVar["LayerCall | None"] = ContextVar("swiftdit_active_layer", default=None)


class UnsupportedCall(Exception):
    """This attention call cannot be sparsified exactly; it runs dense instead."""


def register_attention_backend(value: str, function, *, supports_context_parallel: bool = False) -> None:
    """Add `value` to diffusers' AttentionBackendName (once) and register `function` as its backend.

    diffusers has no public API for third-party backends; this adds an enum member the way cache-dit
    does, so that `processor._attention_backend = value` routes the processor's dispatch to `function`.
    Registering a value again replaces its function.
    """
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    member = AttentionBackendName._value2member_map_.get(value)
    if member is None:
        name = value.upper()
        member = str.__new__(AttentionBackendName, value)
        member._name_, member._value_ = name, value
        setattr(AttentionBackendName, name, member)
        AttentionBackendName._member_map_[name] = member
        AttentionBackendName._member_names_.append(name)
        AttentionBackendName._value2member_map_[value] = member
    _AttentionBackendRegistry.register(member, supports_context_parallel=supports_context_parallel)(function)


def ensure_backend_registered() -> None:
    """Inject the "swiftdit" backend once."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    if BACKEND_NAME in AttentionBackendName._value2member_map_:
        return
    # Context-parallel calls take the dense path through the user's backend, which does its own
    # Ulysses/ring exchange, so enable_parallelism() accepts processors set to this backend.
    register_attention_backend(BACKEND_NAME, _swiftdit_backend, supports_context_parallel=True)


@torch._dynamo.disable
def _swiftdit_backend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    return_lse: bool = False,
    _parallel_config=None,
):
    """Backend function for dispatcher models; tensors are (B, S, H, D) in and out."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    layer = ACTIVE_LAYER.get()
    if layer is not None and layer.token_order is not None and attn_mask is not None:
        # The tokens were reordered at the patch embedding; a mask in raster order would meet the wrong pairs.
        raise RuntimeError(f"{layer.info.name}: an attention mask reached a forward that holds a token order; "
                           "the adapter's token_order_processors must not list a processor that passes one")

    def dense():
        extra = {"return_lse": True} if return_lse else None
        return dispatch_attention_fn(
            query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
            enable_gqa=enable_gqa, attention_kwargs=extra,
            backend=None if layer is None else layer.fallback_backend, parallel_config=_parallel_config,
        )

    # Ulysses/ring context parallelism and LSE requests keep the dense path until a sequence-parallel
    # sparse kernel exists; causal/dropout calls are not the bidirectional self-attention we sparsify.
    if layer is None or not layer.sparse or _parallel_config is not None or return_lse or is_causal or dropout_p:
        return dense()
    try:
        out = layer.session.run_layer_attention(
            layer, query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask, scale
        )
    except UnsupportedCall as reason:
        layer.session.note_dense_fallback(layer, str(reason))
        return dense()
    return out.transpose(1, 2)


class SdpaInterception(TorchFunctionMode):
    """Routes F.scaled_dot_product_attention calls made inside one swapped module to the method."""

    def __init__(self, layer: "LayerCall"):
        super().__init__()
        self.layer = layer

    def __torch_function__(self, func: Callable, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa = _sdpa_arguments(args, kwargs)
        if is_causal or dropout_p or enable_gqa:
            return func(*args, **kwargs)
        try:
            return self.layer.session.run_layer_attention(self.layer, query, key, value, attn_mask, scale)
        except UnsupportedCall as reason:
            self.layer.session.note_dense_fallback(self.layer, str(reason))
            return func(*args, **kwargs)


def _sdpa_arguments(args: tuple, kwargs: dict):
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    defaults = (None, None, None, None, 0.0, False, None, False)
    bound = dict(zip(names, defaults))
    bound.update(zip(names, args))
    bound.update(kwargs)
    return tuple(bound[n] for n in names)


def split_attention_mask(attn_mask: torch.Tensor | None, batch: int, seq_len: int, visual: slice, text: slice):
    """Turn a model's attention mask into (text_key_mask (B, L) | None, visual_mask (B|1, H|1, N, N) | None).

    Understood: boolean (or 0/-inf additive) key-padding masks of shape (B, S), (B|1, 1|H, 1, S), and
    full (B|1, 1|H, S, S) masks whose text columns are the same for every visual row (HunyuanVideo 1.5's
    padding mask, SkyReels' block-causal mask). Anything else raises UnsupportedCall.
    """
    if attn_mask is None:
        return None, None
    mask = as_4d_mask(boolean_mask(attn_mask), batch, seq_len)
    if mask.dim() != 4 or mask.shape[-1] != seq_len:
        raise UnsupportedCall(f"attention mask of shape {tuple(attn_mask.shape)}")
    if mask.shape[1] != 1 and not bool((mask == mask[:, :1]).all()):
        raise UnsupportedCall("per-head attention mask")
    mask = mask[:, :1]
    visual_rows = mask[:, :, visual] if mask.shape[2] == seq_len else mask
    text_columns = visual_rows[..., text]
    if text_columns.shape[-1] and not bool((text_columns == text_columns[:, :, :1]).all()):
        raise UnsupportedCall("text-column mask that differs between visual query rows")
    text_key_mask = text_columns[:, 0, 0, :].expand(batch, -1) if text_columns.shape[-1] else None
    if text_key_mask is not None and bool(text_key_mask.all()):
        text_key_mask = None
    visual_block = visual_rows[..., visual]
    if visual_block.shape[2] == 1:  # key-padding mask: visual keys must all be valid
        if not bool(visual_block.all()):
            raise UnsupportedCall("padding mask on visual tokens")
        return text_key_mask, None
    visual_mask = None if bool(visual_block.all()) else visual_block
    return text_key_mask, visual_mask


def text_row_mask(attn_mask: torch.Tensor | None, batch: int, seq_len: int, text: slice) -> torch.Tensor | None:
    """The rows of the model's mask that belong to text queries, for their exact dense attention."""
    if attn_mask is None:
        return None
    mask = as_4d_mask(attn_mask, batch, seq_len)
    return mask[:, :, text] if mask.shape[2] == seq_len else mask


def boolean_mask(mask: torch.Tensor) -> torch.Tensor:
    """A boolean mask (True = attend) from a boolean or a 0 / -inf additive one."""
    if mask.dtype == torch.bool:
        return mask
    finite = torch.isfinite(mask)
    if not bool(((mask == 0) | ~finite).all()):
        raise UnsupportedCall("additive attention mask with finite non-zero biases")
    return finite


def as_4d_mask(mask: torch.Tensor, batch: int, num_queries: int) -> torch.Tensor:
    """(B, S_kv) key padding -> (B, 1, 1, S_kv); (S_q, S_kv) query-by-key (the embedded model's
    chunk-causal mask) -> (1, 1, S_q, S_kv); 4-D masks unchanged."""
    if mask.dim() != 2:
        return mask
    if mask.shape[0] == num_queries and batch != num_queries:
        return mask[None, None]
    return mask[:, None, None, :]
