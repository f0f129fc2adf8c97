"""The `swiftdit` command: `render` a batch of prompts to mp4 files, list the `methods`, print `info`.

    swiftdit render prompts.txt --out videos/ --method sparse --option density=0.2 --compare-dense
    swiftdit methods
    swiftdit info
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import math
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .methods import available_methods, build_method, method_class
from .render import (
    DEFAULT_METHOD, Comparison, RenderRequest, atomic_path, compare, method_options, parse_options, write_video,
)

# Fields a JSONL object or CSV row may carry besides `prompt`.
ROW_FIELDS = ("prompt", "seed", "frames", "size")
SUMMARY_NAME = "summary"
# Prompt text kept in a file name; the settings digest makes the name unique.
SLUG_LENGTH = 48
DIGEST_LENGTH = 10
EMBEDDED_MODEL_NAME = "embedded"


@dataclasses.dataclass
class PromptRow:
    """One row of the prompts file: a request, or the reason it cannot be rendered."""

    line: int
    request: RenderRequest | None = None
    error: str | None = None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.command(args, parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swiftdit", description="Efficient attention for diffusers DiTs.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    render = commands.add_parser(
        "render", help="render a batch of prompts to mp4 files",
        description="Render one mp4 per prompt, plus summary.csv and summary.json in --out. PROMPTS is a text "
                    "file (one prompt per line; blank lines and lines starting with # are skipped), or a "
                    ".jsonl/.csv file whose rows have 'prompt' and optionally 'seed', 'frames' and 'size' "
                    "(N or HxW). An existing output is skipped unless --overwrite, so an interrupted batch "
                    "resumes. The exit status is 1 when a row failed.")
    render.add_argument("prompts", type=Path, metavar="PROMPTS")
    render.add_argument("--out", type=Path, required=True, help="output folder (created)")
    render.add_argument("--model", default=None,
                        help="a local pipeline folder or a Hub id (default: the embedded model)")
    render.add_argument("--method", default=DEFAULT_METHOD, choices=available_methods())
    render.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a method option, e.g. density=0.2 or dense_layers=(0,1); repeatable. "
                             "`swiftdit methods` lists them")
    render.add_argument("--compare-dense", action="store_true",
                        help="also render dense; write NAME.dense.mp4 and the speedup, PSNR and SSIM")
    render.add_argument("--overwrite", action="store_true", help="render again even where the output exists")
    render.add_argument("--seed", type=int, default=0, help="seed of rows without one (default 0)")
    render.add_argument("--frames", type=int, default=None, help="frames of rows without 'frames' "
                                                                  "(default: the pipeline's)")
    render.add_argument("--size", default=None, help="N or HxW for rows without 'size' (default: the pipeline's)")
    render.add_argument("--steps", type=int, default=None, help="denoising steps (default: the pipeline's)")
    render.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the pipeline's)")
    render.add_argument("--fps", type=float, default=None,
                        help="frame rate of the mp4 files (default: the embedded model's training data rate)")
    render.set_defaults(command=run_render)

    methods = commands.add_parser("methods", help="list the attention methods with their options")
    methods.set_defaults(command=run_methods)
    info = commands.add_parser("info", help="print versions and the device")
    info.set_defaults(command=run_info)
    return parser


# -- swiftdit render -----------------------------------------------------------------------------------------
def run_render(args, parser: argparse.ArgumentParser) -> int:
    from tqdm import tqdm

    from swiftdit.pipelines import load_pipeline
    from swiftdit.pipelines.moving_shapes import FRAMES_PER_SECOND

    try:
        options = parse_options(args.option)
        build_method(args.method, options)
        default_size = None if args.size is None else parse_size(args.size)
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    if not args.prompts.is_file():
        parser.error(f"PROMPTS file not found: {args.prompts}")
    rows = read_prompt_rows(args.prompts, seed=args.seed, num_frames=args.frames, size=default_size,
                            num_inference_steps=args.steps, guidance_scale=args.guidance)
    fps = FRAMES_PER_SECOND if args.fps is None else args.fps
    try:
        pipe = load_pipeline(args.model)
    except Exception as error:  # any loading failure (missing folder, no network, bad files) ends the batch
        print(f"swiftdit render: cannot load the model {args.model or EMBEDDED_MODEL_NAME!r}: {error}",
              file=sys.stderr)
        return 1
    pipe.set_progress_bar_config(disable=True)  # one bar for the batch, not one per video

    settings = {"model": args.model or EMBEDDED_MODEL_NAME, "method": args.method, "options": options,
                "compare_dense": args.compare_dense, "fps": fps, "prompts": str(args.prompts),
                "environment": environment_info()}
    records = []
    progress = tqdm(rows, unit="video", desc="swiftdit render")
    for row in progress:
        if row.error is None:
            try:
                record = render_row(pipe, row, args, options, fps)
            except Exception as error:  # a failed row (bad size, out of memory...) must not end the batch
                row.error = f"{type(error).__name__}: {error}"
        if row.error is not None:
            tqdm.write(f"{args.prompts}:{row.line}: skipped: {row.error}", file=sys.stderr)
            record = {"line": row.line, "status": "failed", "error": row.error,
                      "prompt": row.request.prompt if row.request else None}
        records.append(record)
        write_summary(args.out, settings, records)
    failed = sum(record["status"] == "failed" for record in records)
    print(f"{len(records) - failed} of {len(records)} prompts rendered or already there, {failed} failed; "
          f"summary in {args.out / SUMMARY_NAME}.csv and .json")
    return 1 if failed else 0


def render_row(pipe, row: PromptRow, args, options: dict[str, Any], fps: float) -> dict[str, Any]:
    """Render one row unless its outputs exist; returns its summary record (also kept beside the video)."""
    request = row.request.resolved(pipe)
    stem = output_stem(request, args.model, args.method, options, fps)
    video = args.out / f"{stem}.mp4"
    dense_video = args.out / f"{stem}.dense.mp4" if args.compare_dense else None
    record_file = args.out / f"{stem}.json"
    outputs = [video, record_file] + ([dense_video] if dense_video else [])
    if not args.overwrite and all(path.exists() for path in outputs):
        record = json.loads(record_file.read_text())
        return {**record, "line": row.line, "status": "exists"}

    result = compare(pipe, request, args.method, options, compare_dense=args.compare_dense)
    write_video(video, result.efficient.frames, fps)
    if dense_video:
        write_video(dense_video, result.dense.frames, fps)
    record = {"line": row.line, "status": "rendered", **comparison_record(result),
              "video": video.name, "dense_video": dense_video.name if dense_video else None}
    with atomic_path(record_file) as temporary:
        temporary.write_text(json.dumps(record, indent=1))
    return record


def comparison_record(result: Comparison) -> dict[str, Any]:
    request = result.request
    return {
        "prompt": request.prompt, "seed": request.seed, "frames": request.num_frames, "height": request.height,
        "width": request.width, "steps": request.num_inference_steps, "guidance": request.guidance_scale,
        "method": result.method, "options": result.options,
        "seconds": result.efficient.seconds, "dense_seconds": result.dense.seconds if result.dense else None,
        "speedup": result.speedup, "psnr": json_number(result.psnr), "ssim": result.ssim,
        "mean_density": result.mean_density, "sparse_calls": result.sparse_calls,
    }


def json_number(value: float | None) -> float | str | None:
    """JSON has no infinity: identical videos have PSNR "inf"."""
    return "inf" if value is not None and math.isinf(value) else value


def output_stem(request: RenderRequest, model: str | None, method: str, options: dict[str, Any], fps: float) -> str:
    """Prompt words plus a digest of every setting that changes the video: a rerun with other settings
    writes new files instead of skipping, and reordering the prompts file does not rename anything."""
    settings = json.dumps([dataclasses.asdict(request), model, method, options, fps], sort_keys=True, default=str)
    digest = hashlib.sha256(settings.encode()).hexdigest()[:DIGEST_LENGTH]
    slug = re.sub(r"[^a-z0-9]+", "-", request.prompt.lower()).strip("-")[:SLUG_LENGTH].rstrip("-")
    return f"{slug or 'prompt'}-{digest}"


def read_prompt_rows(path: Path, *, seed: int, num_frames: int | None, size: tuple[int, int] | None,
                     num_inference_steps: int | None, guidance_scale: float | None) -> list[PromptRow]:
    """Parse every row; a row that cannot be parsed carries its error instead of a request."""
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        numbered = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
        entries = []
        for number, line in numbered:
            try:
                entries.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                entries.append((number, f"invalid JSON: {error}"))
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        entries = [(reader.line_num, row) for row in reader]
    else:
        entries = [(number, {"prompt": line.strip()}) for number, line in enumerate(text.splitlines(), 1)
                   if line.strip() and not line.lstrip().startswith("#")]

    rows = []
    for number, entry in entries:
        try:
            if isinstance(entry, str):
                raise ValueError(entry)
            rows.append(PromptRow(number, row_request(entry, seed, num_frames, size, num_inference_steps,
                                                      guidance_scale)))
        except (ValueError, TypeError) as error:
            rows.append(PromptRow(number, error=str(error)))
    return rows


def row_request(entry: Any, seed: int, num_frames: int | None, size: tuple[int, int] | None,
                num_inference_steps: int | None, guidance_scale: float | None) -> RenderRequest:
    if not isinstance(entry, dict):
        raise ValueError(f"a row must be an object with 'prompt', got {entry!r}")
    # CSV leaves missing cells as "" (or None for a short row): those take the defaults.
    entry = {key: value for key, value in entry.items() if value not in ("", None)}
    unknown = sorted(set(entry) - set(ROW_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; a row may have {list(ROW_FIELDS)}")
    prompt = entry.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the row has no 'prompt'")
    height, width = parse_size(entry["size"]) if "size" in entry else size or (None, None)
    return RenderRequest(
        prompt=prompt.strip(), seed=parse_int("seed", entry.get("seed", seed)),
        num_frames=parse_int("frames", entry["frames"]) if "frames" in entry else num_frames,
        height=height, width=width, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
    )


def parse_int(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise ValueError(f"'{name}' must be an integer, got {value!r}")


def parse_size(value: Any) -> tuple[int, int]:
    """N (square) or HxW -> (height, width)."""
    if isinstance(value, str) and "x" in value.lower():
        height, _, width = value.lower().partition("x")
        return parse_int("size", height), parse_int("size", width)
    side = parse_int("size", value)
    return side, side


def write_summary(out: Path, settings: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """summary.json (settings and every row) and summary.csv (one line per row), both replaced atomically."""
    failed = sum(record["status"] == "failed" for record in records)
    with atomic_path(out / f"{SUMMARY_NAME}.json") as temporary:
        temporary.write_text(json.dumps({"settings": settings, "failed": failed, "rows": records}, indent=1))
    columns = list(dict.fromkeys(key for record in records for key in record))
    with atomic_path(out / f"{SUMMARY_NAME}.csv") as temporary:
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for record in records:
                writer.writerow({key: json.dumps(value) if isinstance(value, dict) else value
                                 for key, value in record.items()})


# -- swiftdit methods / info ---------------------------------------------------------------------------------
def run_methods(args, parser) -> int:
    print(describe_methods())
    return 0


def describe_methods() -> str:
    lines = []
    for name in available_methods():
        cls = method_class(name)
        lines.append(f"{name}: {cls.summary}")
        if cls.paper:
            lines.append(f"  paper: {cls.paper}")
        lines.append("  options:")
        for option in method_options(name):
            allowed = f"one of {list(option.choices)}" if option.choices else option.type_name
            lines.append(f"    {option.name} ({allowed}, default {option.default!r}): {option.help}")
        lines.append("")
    return "\n".join(lines)


def run_info(args, parser) -> int:
    for key, value in environment_info().items():
        print(f"{key}: {value}")
    return 0


def environment_info() -> dict[str, str]:
    import torch

    from swiftdit.pipelines import EMBEDDED_MODEL_DIR, best_device

    info = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("swiftdit", "torch", "diffusers", "transformers", "triton", "gradio"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    device = best_device()
    info["device"] = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    present = (EMBEDDED_MODEL_DIR / "model_index.json").is_file()
    info["embedded model"] = f"{EMBEDDED_MODEL_DIR} ({'present' if present else 'missing'})"
    return info


if __name__ == "__main__":
    sys.exit(main())
