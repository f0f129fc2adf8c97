"""Is the trained model's self-attention structured? Top-10% block mass per layer, trained vs random weights.

During a dense generation of held-out prompts the queries and keys of every self-attention call are captured
(at the point where Wan's processor hands them to the attention dispatcher, after RoPE), the attention
probabilities are formed per head, and summed over 64x64-token blocks. Two figures per layer:
- global: fraction of all attention mass in the top 10% of the (S/64)^2 blocks of a head;
- per row: fraction of each query block's mass in its top 10% of key blocks (what a block-sparse kernel keeps).
Uniform attention gives 0.10 on both. The same measurement on a freshly initialised model of the same
configuration is the baseline. A PNG shows the block-mass maps of the trained model, one per layer and head.

    python benchmarks/model_attention.py --output-dir assets/embedded_model
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from diffusers.models.transformers import transformer_wan
from PIL import Image, ImageDraw

from swiftdit.pipelines import load_pipeline
from swiftdit.pipelines.embedded_model import build_transformer, EmbeddedModelConfig
from swiftdit.pipelines.moving_shapes import held_out_prompts

BLOCK_TOKENS = 64
TOP_FRACTION = 0.10


def block_mass(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """(heads, S/64, S/64) attention mass per block for one sample; query/key are (S, heads, head_dim)."""
    scale = 1 / math.sqrt(query.shape[-1])
    probabilities = torch.softmax(torch.einsum("qhd,khd->hqk", query.float(), key.float()) * scale, dim=-1)
    heads, length, _ = probabilities.shape
    blocks = length // BLOCK_TOKENS
    return probabilities.view(heads, blocks, BLOCK_TOKENS, blocks, BLOCK_TOKENS).sum(dim=(2, 4))


def top_mass_fractions(mass: torch.Tensor) -> tuple[float, float]:
    """(global, per-row) fraction of mass in the top 10% of blocks, averaged over heads."""
    heads, blocks, _ = mass.shape
    flat = mass.reshape(heads, -1)
    keep = max(1, round(TOP_FRACTION * flat.shape[1]))
    global_fraction = flat.topk(keep, dim=1).values.sum(dim=1) / flat.sum(dim=1)
    keep_per_row = max(1, round(TOP_FRACTION * blocks))
    row_fraction = mass.topk(keep_per_row, dim=2).values.sum(dim=2) / mass.sum(dim=2)
    return float(global_fraction.mean()), float(row_fraction.mean())


@contextlib.contextmanager
def captured_self_attention(num_layers: int):
    """Record, per layer, the block mass of every self-attention call (cross-attention has text-length keys)."""
    records: dict[int, list[torch.Tensor]] = {layer: [] for layer in range(num_layers)}
    original = transformer_wan.dispatch_attention_fn
    calls = {"count": 0}

    def recording_dispatch(query, key, value, *args, **kwargs):
        if key.shape[1] == query.shape[1]:
            layer = calls["count"] % num_layers
            calls["count"] += 1
            records[layer].extend(block_mass(q, k) for q, k in zip(query, key))
        return original(query, key, value, *args, **kwargs)

    with mock.patch.object(transformer_wan, "dispatch_attention_fn", recording_dispatch):
        yield records


def measure(pipe, prompts: list[str], num_inference_steps: int, seed: int):
    num_layers = len(pipe.transformer.blocks)
    with captured_self_attention(num_layers) as records:
        pipe(prompts, num_inference_steps=num_inference_steps, generator=torch.Generator(pipe.device).manual_seed(seed))
    per_layer = []
    for layer in range(num_layers):
        fractions = np.array([top_mass_fractions(mass) for mass in records[layer]])
        per_layer.append({"layer": layer, "top10_global": float(fractions[:, 0].mean()),
                          "top10_per_row": float(fractions[:, 1].mean()), "calls": len(records[layer])})
    mean_maps = [torch.stack(records[layer]).mean(dim=0) for layer in range(num_layers)]
    return per_layer, mean_maps


def draw_maps(mean_maps: list[torch.Tensor], path: Path, cell_pixels: int = 4, gap: int = 6) -> None:
    """One log-scaled block-mass map per (layer row, head column), brighter = more mass."""
    heads, blocks, _ = mean_maps[0].shape
    side = blocks * cell_pixels
    label_width = 60
    image = Image.new("RGB", (label_width + heads * (side + gap), len(mean_maps) * (side + gap) + 20), "white")
    draw = ImageDraw.Draw(image)
    for head in range(heads):
        draw.text((label_width + head * (side + gap), 4), f"head {head}", fill="black")
    for layer, maps in enumerate(mean_maps):
        top = 20 + layer * (side + gap)
        draw.text((4, top + side // 2), f"layer {layer}", fill="black")
        for head in range(heads):
            log_mass = maps[head].clamp(min=1e-6).log()
            scaled = (log_mass - log_mass.min()) / (log_mass.max() - log_mass.min()).clamp(min=1e-6)
            tile = Image.fromarray((scaled.cpu().numpy() * 255).astype(np.uint8)).resize((side, side), Image.NEAREST)
            image.paste(tile.convert("RGB"), (label_width + head * (side + gap), top))
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--num-prompts", type=int, default=2)
    parser.add_argument("--num-inference-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    prompts = held_out_prompts()[:args.num_prompts]
    trained, trained_maps = measure(pipe, prompts, args.num_inference_steps, seed=0)
    torch.manual_seed(0)
    pipe.transformer = build_transformer(EmbeddedModelConfig(**_model_config_of(pipe))).to(pipe.device)
    random_weights, _ = measure(pipe, prompts, args.num_inference_steps, seed=0)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    figure = args.output_dir / "attention_block_mass.png"
    draw_maps(trained_maps, figure)
    results = {"prompts": prompts, "num_inference_steps": args.num_inference_steps, "block_tokens": BLOCK_TOKENS,
               "top_fraction": TOP_FRACTION, "trained": trained, "random_weights": random_weights,
               "figure": figure.name}
    (args.output_dir / "attention_structure.json").write_text(json.dumps(results, indent=1))
    for t, r in zip(trained, random_weights):
        print(f"layer {t['layer']}: trained global {t['top10_global']:.3f} per-row {t['top10_per_row']:.3f} | "
              f"random global {r['top10_global']:.3f} per-row {r['top10_per_row']:.3f}")


def _model_config_of(pipe) -> dict:
    """The EmbeddedModelConfig fields that shape the denoiser, read back from the loaded transformer."""
    config = pipe.transformer.config
    return {"hidden_dim": config.num_attention_heads * config.attention_head_dim,
            "num_heads": config.num_attention_heads, "num_layers": config.num_layers, "ffn_dim": config.ffn_dim,
            "patch_size": tuple(config.patch_size), "text_dim": config.text_dim}


if __name__ == "__main__":
    main()
