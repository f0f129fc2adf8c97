"""Tiny randomly initialised diffusers models and their forward inputs, built offline.

`TINY_MODELS[family]()` returns a `TinyModel`: the transformer, keyword inputs for one forward, the
expected token layout (grid and text span in self-attention), and the names of the attention modules
the plugin must swap. Sizes follow diffusers' own tests, enlarged a little where a grid of several blocks
is needed. Seeds make every build identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class TinyModel:
    model: torch.nn.Module
    make_inputs: Callable[[torch.Tensor], dict]  # timestep -> forward kwargs (same noise every call)
    grid: tuple[int, int, int]
    text_len: int  # text tokens inside self-attention (0 for cross-attention models)
    text_position: str
    swapped_prefixes: tuple[str, ...]  # module-name prefixes of swapped self-attention layers
    extra: dict = field(default_factory=dict)


def _randn(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def tiny_wan(cls_name: str = "WanTransformer3DModel", **overrides) -> TinyModel:
    import diffusers

    torch.manual_seed(0)
    kwargs = dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    kwargs.update(overrides)
    model = getattr(diffusers, cls_name)(**kwargs).eval()
    latents = _randn(2, 4, 3, 12, 10, seed=1)  # grid (3, 6, 5) = 90 tokens
    text = _randn(2, 7, 32, seed=2)
    extra_inputs = {}
    if overrides.get("image_dim"):  # I2V: CLIP image tokens go to attn2 through add_k_proj/add_v_proj
        extra_inputs["encoder_hidden_states_image"] = _randn(2, 5, overrides["image_dim"], seed=4)
    if cls_name == "WanVACETransformer3DModel":
        extra_inputs["control_hidden_states"] = _randn(2, kwargs["vace_in_channels"], 3, 12, 10, seed=3)

    def make_inputs(t):
        return dict(hidden_states=latents, timestep=t.expand(2), encoder_hidden_states=text, return_dict=False,
                    **extra_inputs)

    prefixes = ("blocks.",) if cls_name != "WanVACETransformer3DModel" else ("blocks.", "vace_blocks.")
    return TinyModel(model, make_inputs, (3, 6, 5), 0, "none", prefixes)


def tiny_wan_i2v() -> TinyModel:
    return tiny_wan(image_dim=16, added_kv_proj_dim=24)


def tiny_wan_vace() -> TinyModel:
    return tiny_wan("WanVACETransformer3DModel", vace_layers=[0], vace_in_channels=8)


def tiny_skyreels() -> TinyModel:
    return tiny_wan("SkyReelsV2Transformer3DModel")


def tiny_hunyuan_video() -> TinyModel:
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(0)
    model = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
    ).eval()
    latents = _randn(1, 4, 3, 6, 5, seed=1)
    text = _randn(1, 9, 16, seed=2)
    text_mask = torch.ones(1, 9, dtype=torch.bool)
    text_mask[:, 7:] = False  # two padded text tokens, masked out of attention
    pooled = _randn(1, 8, seed=3)

    def make_inputs(t):
        return dict(hidden_states=latents, timestep=t.expand(1), encoder_hidden_states=text,
                    encoder_attention_mask=text_mask, pooled_projections=pooled,
                    guidance=torch.tensor([3500.0]), return_dict=False)

    return TinyModel(model, make_inputs, (3, 6, 5), 9, "last", ("transformer_blocks.", "single_transformer_blocks."))


def tiny_hunyuan_video15() -> TinyModel:
    from diffusers import HunyuanVideo15Transformer3DModel

    torch.manual_seed(0)
    model = HunyuanVideo15Transformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=8,
        image_embed_dim=12, rope_axes_dim=(2, 2, 4), target_size=16,
    ).eval()
    latents = _randn(1, 4 * 2 + 1, 3, 6, 5, seed=1)[:, :4]
    text = _randn(1, 6, 16, seed=2)
    text_mask = torch.ones(1, 6, dtype=torch.long)
    text_2 = _randn(1, 4, 8, seed=3)
    text_mask_2 = torch.ones(1, 4, dtype=torch.long)
    image = torch.zeros(1, 5, 12)

    def make_inputs(t):
        return dict(hidden_states=latents, timestep=t.expand(1), encoder_hidden_states=text,
                    encoder_attention_mask=text_mask, encoder_hidden_states_2=text_2,
                    encoder_attention_mask_2=text_mask_2, image_embeds=image, return_dict=False)

    return TinyModel(model, make_inputs, (3, 6, 5), -1, "last", ("transformer_blocks.",))


def tiny_cogvideox(patch_size_t: int | None = None) -> TinyModel:
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    head_dim = 16 if patch_size_t else 8  # 3-D RoPE splits head_dim into even t/h/w parts
    model = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=head_dim, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=8, num_layers=2, sample_width=10, sample_height=12, sample_frames=9,
        patch_size=2, patch_size_t=patch_size_t, temporal_compression_ratio=4, max_text_seq_length=8,
        use_rotary_positional_embeddings=patch_size_t is not None,
    ).eval()
    frames = 4 if patch_size_t else 3
    latents = _randn(2, frames, 4, 12, 10, seed=1)  # (B, F, C, H, W)
    text = _randn(2, 8, 8, seed=2)
    grid = (frames // (patch_size_t or 1), 6, 5)
    rotary = None
    if patch_size_t is not None:
        from diffusers.models.embeddings import get_3d_rotary_pos_embed

        rotary = get_3d_rotary_pos_embed(head_dim, crops_coords=None, grid_size=(6, 5), temporal_size=grid[0],
                                         grid_type="slice", max_size=(6, 5))

    def make_inputs(t):
        return dict(hidden_states=latents, encoder_hidden_states=text, timestep=t.expand(2),
                    image_rotary_emb=rotary, return_dict=False)

    return TinyModel(model, make_inputs, grid, 8, "first", ("transformer_blocks.",))


def tiny_cogvideox15() -> TinyModel:
    return tiny_cogvideox(patch_size_t=2)


def tiny_ltx() -> TinyModel:
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(0)
    model = LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, num_layers=2, caption_channels=16,
    ).eval()
    latents = _randn(1, 3 * 6 * 5, 4, seed=1)  # packed (B, S, C)
    text = _randn(1, 7, 16, seed=2)
    text_mask = torch.ones(1, 7, dtype=torch.long)

    def make_inputs(t):
        return dict(hidden_states=latents, encoder_hidden_states=text, timestep=t.expand(1),
                    encoder_attention_mask=text_mask, num_frames=3, height=6, width=5,
                    rope_interpolation_scale=(1.0, 1.0, 1.0), return_dict=False)

    return TinyModel(model, make_inputs, (3, 6, 5), 0, "none", ("transformer_blocks.",))


def tiny_mochi() -> TinyModel:
    from diffusers import MochiTransformer3DModel

    torch.manual_seed(0)
    model = MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
        in_channels=4, text_embed_dim=16, time_embed_dim=4,
    ).eval()
    latents = _randn(2, 4, 3, 12, 10, seed=1)
    text = _randn(2, 7, 16, seed=2)
    text_mask = torch.ones(2, 7, dtype=torch.long)
    text_mask[1, 5:] = 0  # Mochi drops padded text per sample: sample 1 has 5 text tokens

    def make_inputs(t):
        return dict(hidden_states=latents, encoder_hidden_states=text, timestep=t.expand(2),
                    encoder_attention_mask=text_mask, return_dict=False)

    return TinyModel(model, make_inputs, (3, 6, 5), -1, "last", ("transformer_blocks.",))


def tiny_flux() -> TinyModel:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 4, 8),
    ).eval()
    h, w = 6, 5
    latents = _randn(1, h * w, 4, seed=1)
    text = _randn(1, 7, 32, seed=2)
    pooled = _randn(1, 32, seed=3)
    img_ids = torch.zeros(h, w, 3)
    img_ids[..., 1] = torch.arange(h)[:, None]
    img_ids[..., 2] = torch.arange(w)[None, :]
    img_ids = img_ids.reshape(-1, 3)
    txt_ids = torch.zeros(7, 3)

    def make_inputs(t):
        return dict(hidden_states=latents, encoder_hidden_states=text, pooled_projections=pooled,
                    timestep=t.expand(1) / 1000, img_ids=img_ids, txt_ids=txt_ids, return_dict=False)

    return TinyModel(model, make_inputs, (1, h, w), 7, "first", ("transformer_blocks.", "single_transformer_blocks."))


def tiny_sd3() -> TinyModel:
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    model = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16, out_channels=4,
        pos_embed_max_size=16, dual_attention_layers=(0,),
    ).eval()
    latents = _randn(2, 4, 12, 10, seed=1)
    text = _randn(2, 7, 16, seed=2)
    pooled = _randn(2, 16, seed=3)

    def make_inputs(t):
        return dict(hidden_states=latents, encoder_hidden_states=text, pooled_projections=pooled,
                    timestep=t.expand(2), return_dict=False)

    return TinyModel(model, make_inputs, (1, 6, 5), 7, "last", ("transformer_blocks.",))


def tiny_pixart() -> TinyModel:
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(0)
    model = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=16, sample_size=8, patch_size=2, norm_type="ada_norm_single",
        caption_channels=16, use_additional_conditions=False,
    ).eval()
    latents = _randn(2, 4, 12, 10, seed=1)
    text = _randn(2, 7, 16, seed=2)

    def make_inputs(t):
        return dict(hidden_states=latents, encoder_hidden_states=text, timestep=t.expand(2),
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)

    return TinyModel(model, make_inputs, (1, 6, 5), 0, "none", ("transformer_blocks.",))


def tiny_qwenimage() -> TinyModel:
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    model = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=16, axes_dims_rope=(8, 4, 4),
    ).eval()
    h, w = 6, 5
    latents = _randn(1, h * w, 16, seed=1)
    text = _randn(1, 7, 16, seed=2)
    text_mask = torch.ones(1, 7, dtype=torch.long)

    def make_inputs(t):
        return dict(hidden_states=latents, encoder_hidden_states=text, encoder_hidden_states_mask=text_mask,
                    timestep=t.expand(1) / 1000, img_shapes=[[(1, h, w)]], return_dict=False)

    return TinyModel(model, make_inputs, (1, h, w), 7, "first", ("transformer_blocks.",))


TINY_MODELS: dict[str, Callable[[], TinyModel]] = {
    "wan": tiny_wan,
    "wan_i2v": tiny_wan_i2v,
    "wan_vace": tiny_wan_vace,
    "skyreels_v2": tiny_skyreels,
    "hunyuan_video": tiny_hunyuan_video,
    "hunyuan_video15": tiny_hunyuan_video15,
    "cogvideox": tiny_cogvideox,
    "cogvideox15": tiny_cogvideox15,
    "ltx": tiny_ltx,
    "mochi": tiny_mochi,
    "flux": tiny_flux,
    "sd3": tiny_sd3,
    "pixart": tiny_pixart,
    "qwenimage": tiny_qwenimage,
}
