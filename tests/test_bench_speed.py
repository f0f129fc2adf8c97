"""The speed harness (benchmarks/bench_speed.py) at a tiny size on the CPU: every variant is measured and
written, the ideal is computed from the measured parts, and the plot mode draws a PNG. Nothing about speed
is asserted: these are tiny models on a CPU."""

import json
import math

import pytest

from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench_speed():
    return load_benchmark("bench_speed")


@pytest.fixture(scope="module")
def quick_run(bench_speed, tmp_path_factory):
    out = tmp_path_factory.mktemp("speed")
    device = ["--device", "cpu"]
    bench_speed.main(["--quick", "--shapes", "wan480", "hunyuan720", "--skip", "generation", "--out", str(out), *device])
    # A second invocation appends the generation to the same results (how the work is split on the device).
    bench_speed.main(["--quick", "--skip", "forward", "--append", "--out", str(out), *device])
    return json.loads((out / "speed.json").read_text()), out


def _row(rows, shape, variant, setting="-", kind="forward"):
    matches = [r for r in rows if (r["kind"], r["shape"], r["variant"], r["setting"]) == (kind, shape, variant, setting)]
    assert len(matches) == 1, f"{kind} {shape} {variant}/{setting}: {len(matches)} rows"
    return matches[0]


def test_every_method_and_setting_has_a_time_and_a_density(bench_speed, quick_run):
    result, out = quick_run
    rows = result["rows"]
    assert not [r for r in rows if r.get("error")], [r["error"] for r in rows if r.get("error")]
    for method in bench_speed.METHODS:
        for setting in ("default", "aggressive"):
            row = _row(rows, "wan480", method, setting)
            assert math.isfinite(row["seconds"]) and row["seconds"] > 0
            assert 0.0 < row["density"] <= 1.0
            assert row["output_finite"]
        # HunyuanVideo: each method's default only (plus radial aggressive).
        assert 0.0 < _row(rows, "hunyuan720", method, "default")["density"] <= 1.0
    assert not [r for r in rows if r["shape"] == "hunyuan720" and r["setting"] == "aggressive"
                and r["variant"] not in ("radial", "flex_radial")]
    assert (out / "speed.csv").read_text().count("\n") == len(rows) + 1
    assert "| radial | aggressive" in (out / "speed.md").read_text()


def test_ideal_is_built_from_the_measured_parts(quick_run):
    rows = quick_run[0]["rows"]
    for shape in ("wan480", "hunyuan720"):
        dense = _row(rows, shape, "dense")["seconds"]
        no_attention = _row(rows, shape, "no_self_attention")["seconds"]
        for row in (r for r in rows if r["kind"] == "forward" and r["shape"] == shape and r.get("seconds") is not None):
            expected = no_attention + row["density"] * (dense - no_attention)
            assert row["ideal_seconds"] == pytest.approx(expected)
            assert row["time_over_ideal"] == pytest.approx(row["seconds"] / expected)
            assert row["speedup_vs_dense"] == pytest.approx(dense / row["seconds"])


def test_peers_run_on_the_same_pattern_or_say_why_not(quick_run):
    rows = quick_run[0]["rows"]
    for setting in ("default", "aggressive"):
        flex, radial = _row(rows, "wan480", "flex_radial", setting), _row(rows, "wan480", "radial", setting)
        assert flex["density"] == pytest.approx(radial["density"])
        assert flex["extra"]["flex_calls"] > 0 and flex["extra"]["fallback_calls"] == 0
        assert flex["extra"]["max_abs_diff_vs_swiftdit"] < 1e-4  # Flex computes what swiftdit's kernel computes
        assert flex["extra"]["block_mask_conversion_ms"]
    # The joint text+video model: text keys in whole leading blocks.
    assert _row(rows, "hunyuan720", "flex_radial", "default")["extra"]["max_abs_diff_vs_swiftdit"] < 1e-4
    sage = _row(rows, "wan480", "sage_dense")
    assert sage.get("seconds") is not None or sage["skipped"]


def test_generation_is_appended_and_compared_with_dense(quick_run):
    result, _ = quick_run
    rows = result["rows"]
    assert len(result["runs"]) == 2 and result["runs"][1]["command"].endswith("--device cpu")
    _row(rows, "wan480", "dense")  # the first run's forwards are still there
    dense = _row(rows, "wan480", "dense", kind="generation")
    for method in ("radial", "sparse"):
        row = _row(rows, "wan480", method, "default", kind="generation")
        assert row["run"] == 1 and row["dense_steps"] == 1 and row["forwards"] == 8
        assert 0.0 < row["density"] <= 1.0 and row["output_finite"]
        assert row["speedup_vs_dense"] == pytest.approx(dense["seconds"] / row["seconds"])


def test_targets_apply_at_ninety_percent_sparsity(bench_speed):
    rows = [
        {"kind": "forward", "shape": "wan720", "variant": "dense", "setting": "-", "seconds": 3.0, "density": 1.0},
        {"kind": "forward", "shape": "wan720", "variant": "no_self_attention", "setting": "-", "seconds": 0.7,
         "density": 0.0},
        {"kind": "forward", "shape": "wan720", "variant": "sparse", "setting": "aggressive", "seconds": 1.0,
         "density": 0.1},  # ideal 0.93 s: within 10%, 3.0x
        {"kind": "forward", "shape": "wan720", "variant": "sparse", "setting": "default", "seconds": 2.0,
         "density": 0.3},  # ideal 1.39 s; not at 90% sparsity: no speedup target
        {"kind": "generation", "shape": "wan720", "variant": "dense", "setting": "-", "seconds": 200.0},
        {"kind": "generation", "shape": "wan720", "variant": "radial", "setting": "default", "seconds": 110.0,
         "dense_steps": 10},
    ]
    bench_speed.derive(rows)
    assert rows[2]["ideal_seconds"] == pytest.approx(0.7 + 0.1 * 2.3)
    assert rows[2]["speedup_target"] == 2.8 and rows[2]["meets_target"]
    assert "speedup_target" not in rows[3] and rows[3]["within_10pct_of_ideal"] is False
    assert rows[5]["speedup_target"] == 2.0 and not rows[5]["meets_target"]


def test_plot_writes_a_png(bench_speed, quick_run, tmp_path):
    pytest.importorskip("matplotlib")
    _, out = quick_run
    quality = {"device": "cpu", "summaries": [
        {"method": "radial", "setting": "default", "psnr_mean": 36.0, "density": 0.9},
        {"method": "sparse", "setting": "aggressive", "psnr_mean": 27.5, "density": 0.4},
        {"method": "clear", "setting": "default", "psnr_mean": math.inf, "density": 1.0},  # identical: not drawn
    ]}
    (tmp_path / "quality.json").write_text(json.dumps(quality))
    png = tmp_path / "speed_quality.png"
    result = bench_speed.main(["--plot", str(tmp_path / "quality.json"), str(out / "speed.json"), str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["shape"] == "wan480"  # no wan720 forward in this run: the next shape is used
    assert {(p["method"], p["setting"]) for p in result["points"]} == {("radial", "default"), ("sparse", "aggressive")}


def test_refreshing_settings_time_the_planning_step_and_the_reuse_step(bench_speed, tmp_path):
    bench_speed.main(["--quick", "--shapes", "wan480", "--methods", "rectified", "--settings", "calibrated",
                      "--skip", "peers", "--generation-methods", "rectified", "--generation-settings", "calibrated",
                      "--out", str(tmp_path), "--device", "cpu"])
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert not [r for r in rows if r.get("error")], [r["error"] for r in rows if r.get("error")]
    planning = _row(rows, "wan480", "rectified", "calibrated")
    reuse = _row(rows, "wan480", "rectified", "calibrated (reuse step)")
    # The planning step refreshes: every pair, then the pattern's pairs again; the next step only the pattern's.
    assert planning["density"] == pytest.approx(1 + reuse["density"], rel=0.05) and reuse["density"] < 0.5
    assert reuse["extra"]["sparse_calls_per_forward"] == planning["extra"]["sparse_calls_per_forward"]
    generation = _row(rows, "wan480", "rectified", "calibrated", kind="generation")
    assert generation["options"]["rectify"] == "calibrated" and generation["options"]["refresh_every"] == 5
    assert reuse["density"] < generation["density"] < 1.0 and generation["output_finite"]
