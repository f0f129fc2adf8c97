"""The quality harness (benchmarks/bench_quality.py) at a tiny size: it measures what it says, no speed."""

import importlib.util
import json
import math
import pathlib

import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_quality():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "benchmarks" / "bench_quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_result(bench_quality, tmp_path_factory):
    out = tmp_path_factory.mktemp("quality")
    result = bench_quality.main(["--quick", "--prompts", "1", "--methods", "sparse", "radial", "--out", str(out)])
    return result, out


def test_every_setting_is_measured_against_dense(quick_result):
    result, out = quick_result
    labels = [(s["method"], s["setting"]) for s in result["summaries"]]
    assert labels == [("sparse", "default"), ("sparse", "aggressive"), ("radial", "default"), ("radial", "aggressive")]
    assert len(result["records"]) == 4  # 1 prompt x 1 seed per setting
    for summary in result["summaries"]:
        assert summary["psnr_worst"] <= summary["psnr_mean"]
        assert 0.0 <= summary["ssim_worst"] <= summary["ssim_mean"] <= 1.0
        assert set(summary["adherence"]) == {"color", "shape", "direction"}
        assert summary["attention_relative_error_per_layer"], "no layer's attention error was captured"
    saved = json.loads((out / "quality.json").read_text())
    assert [s["method"] for s in saved["summaries"]] == ["sparse", "sparse", "radial", "radial"]
    assert (out / "quality.csv").read_text().count("\n") == 5


def test_dropping_blocks_shows_as_density_and_attention_error(quick_result):
    result, _ = quick_result
    sparse = next(s for s in result["summaries"] if s["method"] == "sparse" and s["setting"] == "default")
    assert sparse["density"] < 1.0
    assert sparse["attention_relative_error_mean"] > 0.0
    assert math.isfinite(sparse["psnr_mean"])
    # On this tiny grid radial keeps every block: its attention equals exact attention.
    radial = next(s for s in result["summaries"] if s["method"] == "radial" and s["setting"] == "default")
    assert radial["density"] == pytest.approx(1.0)
    assert radial["attention_relative_error_mean"] < 1e-5


def test_benchmarks_table_is_replaced_between_markers(bench_quality, quick_result, tmp_path):
    result, _ = quick_result
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Kernels\n\nkernel table\n")
    table = bench_quality.markdown_table(result)
    bench_quality.update_benchmarks(table, path)
    bench_quality.update_benchmarks(table.replace("sparse", "SPARSE"), path)
    text = path.read_text()
    assert text.count(bench_quality.BENCHMARKS_BEGIN) == 1 and "kernel table" in text
    assert "| SPARSE | default" in text and "| sparse | default" not in text
