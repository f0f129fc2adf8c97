"""The `swiftdit` command: a batch with bad rows and an already rendered row, resume, the summary, the mp4s."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

from swiftdit.cli import main
from swiftdit.methods import available_methods
from swiftdit.pipelines import EMBEDDED_MODEL_DIR
from swiftdit.render import method_options

# Tiny videos keep the batch to seconds on the CPU: the embedded model's patch is (2, 4, 4), so frames are
# multiples of 2 and sizes multiples of 4.
STEPS = "2"
GOOD_ROW = {"prompt": "a red circle moving left on a black background", "seed": 3, "frames": 4, "size": 16}
WIDE_ROW = {"prompt": "a blue square moving up on a gray background", "frames": 6, "size": "16x24"}
ODD_FRAMES_ROW = {"prompt": "a green triangle moving right on a navy background", "frames": 3, "size": 16}


@pytest.fixture(scope="session")
def model_argument(tmp_path_factory) -> list[str]:
    """`--model` arguments: none (the embedded model) once its weights are in assets/; until then an
    untrained pipeline of the same architecture, saved to a temporary folder."""
    if (EMBEDDED_MODEL_DIR / "model_index.json").is_file():
        return []
    from swiftdit.pipelines import MovingShapesPipeline
    from swiftdit.pipelines.embedded_model import build_scheduler
    from swiftdit.pipelines.training import TrainingConfig, build_model

    config = TrainingConfig()
    tokenizer, model = build_model(config)
    folder = tmp_path_factory.mktemp("untrained_embedded_model")
    MovingShapesPipeline(tokenizer, model.text_encoder, model.transformer, build_scheduler(config.model),
                         chunk_latent_frames=config.model.chunk_latent_frames).save_pretrained(folder)
    return ["--model", str(folder)]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def render(prompts: Path, out: Path, model_argument: list[str], *extra: str) -> int:
    return main(["render", str(prompts), "--out", str(out), *model_argument, "--method", "sparse",
                 "--option", "dense_steps=1", "--steps", STEPS, "--compare-dense", *extra])


def summary_rows(out: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((out / "summary.json").read_text())
    with (out / "summary.csv").open() as handle:
        csv_rows = list(csv.DictReader(handle))
    return summary, csv_rows


def frame_count(path: Path) -> int:
    return iio.imread(path).shape[0]


def test_batch_skips_bad_rows_and_existing_outputs_and_resumes(tmp_path, model_argument, capsys):
    out = tmp_path / "videos"
    # A first, partial batch renders one row: the full batch below must find it and leave it alone.
    assert render(write_jsonl(tmp_path / "first.jsonl", [GOOD_ROW]), out, model_argument) == 0
    first_video = out / json.loads((out / "summary.json").read_text())["rows"][0]["video"]
    first_written = first_video.stat().st_mtime_ns

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [GOOD_ROW, "{not json", ODD_FRAMES_ROW, WIDE_ROW])
    capsys.readouterr()
    assert render(prompts, out, model_argument) == 1  # a row failed: the exit status says so
    errors = capsys.readouterr().err
    assert f"{prompts}:2: skipped: invalid JSON" in errors
    assert f"{prompts}:3: skipped: ValueError" in errors and "num_frames" in errors

    summary, csv_rows = summary_rows(out)
    rows = summary["rows"]
    assert [(row["line"], row["status"]) for row in rows] == [(1, "exists"), (2, "failed"), (3, "failed"),
                                                              (4, "rendered")]
    assert [(int(row["line"]), row["status"]) for row in csv_rows] == [(r["line"], r["status"]) for r in rows]
    assert summary["failed"] == 2
    assert summary["settings"]["method"] == "sparse" and summary["settings"]["options"] == {"dense_steps": 1}
    assert summary["settings"]["environment"]["torch"]
    assert first_video.stat().st_mtime_ns == first_written

    existing, wide = rows[0], rows[3]
    assert (existing["seed"], existing["frames"], existing["height"], existing["width"]) == (3, 4, 16, 16)
    assert (wide["seed"], wide["frames"], wide["height"], wide["width"]) == (0, 6, 16, 24)
    for row in (existing, wide):
        assert row["steps"] == int(STEPS) and row["method"] == "sparse"
        assert row["speedup"] == pytest.approx(row["dense_seconds"] / row["seconds"])
        assert row["psnr"] == "inf" or row["psnr"] > 0
        assert 0 < row["ssim"] <= 1 and 0 < row["mean_density"] <= 1 and row["sparse_calls"] > 0
        for video in (row["video"], row["dense_video"]):
            assert frame_count(out / video) == row["frames"]
        assert iio.imread(out / row["video"]).shape[1:3] == (row["height"], row["width"])
    assert not list(out.glob(".*partial*")), "temporary files must be renamed or removed"

    # Resume after an interruption that lost the last video: only that row is rendered again.
    (out / wide["video"]).unlink()
    assert render(prompts, out, model_argument) == 1
    rows = summary_rows(out)[0]["rows"]
    assert [row["status"] for row in rows] == ["exists", "failed", "failed", "rendered"]
    assert frame_count(out / wide["video"]) == wide["frames"]

    assert render(prompts, out, model_argument, "--overwrite") == 1
    assert summary_rows(out)[0]["rows"][0]["status"] == "rendered"
    assert first_video.stat().st_mtime_ns != first_written


def test_text_file_and_csv_rows(tmp_path, model_argument):
    text = tmp_path / "prompts.txt"
    text.write_text(f"# one prompt per line\n\n{GOOD_ROW['prompt']}\n")
    out = tmp_path / "from_text"
    assert main(["render", str(text), "--out", str(out), *model_argument, "--method", "radial", "--steps", STEPS,
                 "--frames", "4", "--size", "16x20", "--seed", "7"]) == 0
    (row,) = summary_rows(out)[0]["rows"]
    assert (row["line"], row["seed"], row["frames"], row["height"], row["width"]) == (3, 7, 4, 16, 20)
    assert row["dense_video"] is None and row["speedup"] is None

    table = tmp_path / "prompts.csv"
    table.write_text(f"prompt,seed,frames,size\n{GOOD_ROW['prompt']},5,4,16\n,1,4,16\n")
    out = tmp_path / "from_csv"
    assert main(["render", str(table), "--out", str(out), *model_argument, "--steps", STEPS]) == 1
    rows = summary_rows(out)[0]["rows"]
    assert [(row["line"], row["status"]) for row in rows] == [(2, "rendered"), (3, "failed")]
    assert rows[0]["seed"] == 5 and "prompt" in rows[1]["error"]


def test_a_bad_option_stops_before_anything_is_rendered(tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [GOOD_ROW])
    with pytest.raises(SystemExit) as stopped:
        main(["render", str(prompts), "--out", str(tmp_path / "out"), "--method", "sparse", "--option", "density=2"])
    assert stopped.value.code == 2
    assert "density" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_methods_lists_every_option_with_default_and_choices(capsys):
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    for method in available_methods():
        assert f"\n{method}: " in f"\n{listing}"
    assert "    reorder (one of ['none', 'patch', 'hilbert'], default 'patch'): token order" in listing
    assert "    dense_layers (int | tuple[int, ...], default 0): " in listing
    # Every option of every method, documented (the config docstrings state the allowed values).
    assert all(option.help for method in available_methods() for option in method_options(method))


def test_console_script_info_prints_versions_and_device():
    script = Path(sys.executable).parent / "swiftdit"
    result = subprocess.run([str(script), "info"], capture_output=True, text=True, timeout=120, check=True)
    fields = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert fields["swiftdit"] and fields["torch"] and fields["diffusers"]
    assert fields["device"].split()[0] in ("cpu", "cuda", "mps")
