"""`python -m swiftdit.demo`: render one short video with the embedded model, dense and with an efficient
method; write both mp4 files and print the speedup and how far the efficient video is from the dense one.

On the CPU the efficient path runs the plain-PyTorch reference of the kernels, so the speedup printed there
is below 1: the speed comes from the Triton kernels on a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from swiftdit.methods import available_methods
from swiftdit.render import DEFAULT_METHOD, RenderRequest, compare, parse_options, write_video

DEMO_PROMPT = "a red circle moving right on a black background"
DEMO_OUTPUT_DIR = Path("demo_output")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", default=DEMO_PROMPT)
    parser.add_argument("--model", default=None, help="a pipeline folder or Hub id (default: the embedded model)")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=available_methods())
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="method option, e.g. --option dense_steps=2 (repeatable)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the pipeline's)")
    parser.add_argument("--out", type=Path, default=DEMO_OUTPUT_DIR)
    args = parser.parse_args(argv)

    from swiftdit.pipelines import load_pipeline
    from swiftdit.pipelines.moving_shapes import FRAMES_PER_SECOND

    try:
        options = parse_options(args.option)
        pipe = load_pipeline(args.model)
    except (ValueError, FileNotFoundError) as error:
        print(f"swiftdit demo: {error}", file=sys.stderr)
        return 1
    request = RenderRequest(args.prompt, num_inference_steps=args.steps)
    result = compare(pipe, request, args.method, options, compare_dense=True)
    dense_file = write_video(args.out / "dense.mp4", result.dense.frames, FRAMES_PER_SECOND)
    efficient_file = write_video(args.out / f"{args.method}.mp4", result.efficient.frames, FRAMES_PER_SECOND)

    settings = result.request
    density = "n/a" if result.mean_density is None else f"{result.mean_density:.3f}"
    print(f"prompt: {settings.prompt!r}; {settings.num_frames} frames of {settings.height}x{settings.width}, "
          f"{settings.num_inference_steps} steps, guidance {settings.guidance_scale}, on {pipe.device}")
    print(f"dense:        {result.dense.seconds:.2f} s -> {dense_file}")
    print(f"{args.method + ':':13} {result.efficient.seconds:.2f} s -> {efficient_file} "
          f"(options {options or 'defaults'}; mean attention density {density} over {result.sparse_calls} sparse calls)")
    print(f"speedup:      {result.speedup:.2f}x")
    print(f"difference:   PSNR {result.psnr:.2f} dB, SSIM {result.ssim:.4f} (efficient vs dense)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
