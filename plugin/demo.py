"""`python -m swiftdit.demo`: generate with a diffusers pipeline, dense and with efficient attention.

Runs offline on the CPU: a WanPipeline around a small randomly initialised WanTransformer3DModel (the
project's trained model replaces it once it ships), called with seeded prompt embeddings so that no
tokenizer or text encoder has to be downloaded. Prints the plugin's report, the achieved attention
density, the wall time of each run and how far the efficient output is from the dense one.
"""

from __future__ import annotations

import argparse
import time

import torch

import swiftdit


def build_pipeline():
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=16, out_channels=16,
        text_dim=64, freq_dim=256, ffn_dim=256, num_layers=4, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=256,
    ).eval()
    return WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))


def generate(pipe, steps: int) -> tuple[torch.Tensor, float]:
    embeds = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(1))
    negative = torch.randn(1, 16, 64, generator=torch.Generator().manual_seed(2))
    start = time.perf_counter()
    with torch.no_grad():
        latents = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, height=256, width=256, num_frames=17,
                       num_inference_steps=steps, guidance_scale=5.0, output_type="latent",
                       generator=torch.Generator().manual_seed(0), return_dict=False)[0]
    return latents, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="sparse", help=f"one of {swiftdit.available_methods()}")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="method option, e.g. --option density=0.2 (repeatable)")
    args = parser.parse_args(argv)
    options = dict(_parse_option(o) for o in args.option)
    options.setdefault("dense_steps", max(1, args.steps // 4))

    pipe = build_pipeline()
    dense, dense_time = generate(pipe, args.steps)
    report = pipe.enable_efficient_attention(args.method, **options)
    print(report)
    efficient, efficient_time = generate(pipe, args.steps)
    summary = swiftdit.attention_session(pipe).density_summary()
    pipe.disable_efficient_attention()
    restored, _ = generate(pipe, args.steps)

    relative_error = float((efficient - dense).norm() / dense.norm())
    density = summary["mean_density"]
    print(f"latent video {tuple(dense.shape)}, {args.steps} steps, 4 layers, {1280} visual tokens per frame stack")
    print(f"dense:     {dense_time:.2f} s")
    print(f"{args.method}: {efficient_time:.2f} s, {summary['sparse_calls']} sparse attention calls, "
          f"mean density {'n/a' if density is None else f'{density:.3f}'}")
    print(f"relative L2 difference of the final latents vs dense: {relative_error:.4f}")
    print(f"after disable_efficient_attention(): bit-identical to dense = {torch.equal(restored, dense)}")


def _parse_option(text: str):
    if "=" not in text:
        raise SystemExit(f"--option expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    for convert in (int, float):
        try:
            return key, convert(value)
        except ValueError:
            pass
    if value in ("True", "False"):
        return key, value == "True"
    return key, value


if __name__ == "__main__":
    main()
