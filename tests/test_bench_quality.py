"""The quality harness (benchmarks/bench_quality.py) at a tiny size: it measures what it says, no speed."""

import json
import math

import numpy as np
import pytest
import torch

from swiftdit.render import SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW, ssim

from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench_quality():
    return load_benchmark("bench_quality")


@pytest.fixture(scope="module")
def quick_result(bench_quality, tmp_path_factory):
    out = tmp_path_factory.mktemp("quality")
    result = bench_quality.main(["--quick", "--prompts", "1", "--methods", "sparse", "radial", "--out", str(out)])
    return result, out


def test_every_setting_is_measured_against_dense(quick_result):
    result, out = quick_result
    labels = [(s["method"], s["setting"]) for s in result["summaries"]]
    assert labels == [("sparse", "default"), ("sparse", "aggressive"), ("sparse", "low-density"), ("sparse", "reused"),
                      ("radial", "default"), ("radial", "aggressive")]  # radial has no low-density setting
    assert len(result["records"]) == 6  # 1 prompt x 1 seed per setting
    for summary in result["summaries"]:
        assert summary["psnr_worst"] <= summary["psnr_mean"]
        assert 0.0 <= summary["ssim_worst"] <= summary["ssim_mean"] <= 1.0
        assert set(summary["adherence"]) == {"color", "shape", "direction"}
        assert summary["attention_relative_error_per_layer"], "no layer's attention error was captured"
    saved = json.loads((out / "quality.json").read_text())
    assert [s["method"] for s in saved["summaries"]] == ["sparse"] * 4 + ["radial"] * 2
    assert (out / "quality.csv").read_text().count("\n") == 7


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


def test_attention_work_counts_dense_steps_at_one(quick_result):
    result, _ = quick_result
    steps, dense_steps = result["config"]["steps"], result["config"]["dense_steps"]
    for summary in result["summaries"]:  # every sparse step makes the same number of calls
        expected = (dense_steps + (steps - dense_steps) * summary["density"]) / steps
        assert summary["attention_work"] == pytest.approx(expected, rel=1e-6)


def test_custom_setting_and_a_refresh_step_counted_as_dense(bench_quality, tmp_path):
    options = {"rectify": "history", "refresh_every": 2, "block_size": 64, "density": 0.25, "mass": 0.0,
               "neighbours": False, "first_frame_sink": False}
    result = bench_quality.main(["--quick", "--prompts", "1", "--methods", "sparse", "--settings", "low-density",
                                 "--custom", "rectified", "history", json.dumps(options), "--out", str(tmp_path)])
    sparse, history = result["summaries"]
    assert (history["method"], history["setting"]) == ("rectified", "history")
    assert history["options"] == {"dense_steps": 1, **options}
    # Steps 1 (the refresh: every pair) and 2 (the pattern), after one dense step.
    assert history["density"] > 0.5 > sparse["density"]
    assert history["attention_work"] == pytest.approx((1 + 2 * history["density"]) / 3, rel=1e-6)
    with pytest.raises(SystemExit, match="--custom rectified history: options must be a JSON object"):
        bench_quality.main(["--quick", "--custom", "rectified", "history", "[1]", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--custom: unknown method 'fast'"):
        bench_quality.main(["--quick", "--custom", "fast", "x", "{}", "--out", str(tmp_path)])


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


@pytest.fixture(scope="module")
def batched_and_unbatched(bench_quality, tmp_path_factory):
    """The same two requests (2 prompts x 1 seed) in one pipeline call and in one call each."""
    common = ["--quick", "--prompts", "2", "--methods", "sparse", "--settings", "default", "aggressive"]
    batched = bench_quality.main([*common, "--batch-size", "2", "--out", str(tmp_path_factory.mktemp("batched"))])
    unbatched = bench_quality.main([*common, "--batch-size", "1", "--out", str(tmp_path_factory.mktemp("single"))])
    return batched, unbatched


def test_a_batched_record_equals_the_unbatched_record(batched_and_unbatched):
    batched, unbatched = batched_and_unbatched
    assert batched["config"]["batch_size"] == 2 and unbatched["config"]["batch_size"] == 1
    assert batched["dense_adherence"] == unbatched["dense_adherence"]
    assert len(batched["records"]) == len(unbatched["records"]) == 4  # 2 settings x 2 prompts
    for b, u in zip(batched["records"], unbatched["records"]):
        assert (b["method"], b["setting"], b["prompt"], b["seed"]) == (u["method"], u["setting"], u["prompt"], u["seed"])
        assert b["psnr"] == pytest.approx(u["psnr"], abs=0.01)
        assert b["ssim"] == pytest.approx(u["ssim"], abs=1e-4)
        assert b["density"] == pytest.approx(u["density"], abs=1e-6)
        assert b["adherence"] == u["adherence"]
        # The probe measures the first prompt and seed only, in the first batch.
        assert ("attention_relative_error" in b) == ("attention_relative_error" in u)
        for layer, error in u.get("attention_relative_error", {}).items():
            assert b["attention_relative_error"][layer] == pytest.approx(error, rel=1e-3, abs=1e-6)
    assert [("attention_relative_error" in r) for r in batched["records"]] == [True, False, True, False]
    # Each video of a batch has its own pattern: the two prompts' densities are not one batch average.
    densities = [r["density"] for r in batched["records"] if r["setting"] == "default"]
    assert densities[0] != densities[1]


@pytest.mark.parametrize("value", ["0", "-3", "two", "1.5"])
def test_batch_size_must_be_a_positive_integer(bench_quality, capsys, value):
    with pytest.raises(SystemExit) as error:
        bench_quality.parse_args(["--batch-size", value])
    assert error.value.code == 2
    assert "--batch-size" in capsys.readouterr().err


def test_batch_size_defaults_to_32_and_quick_keeps_it(bench_quality):
    assert bench_quality.parse_args([]).batch_size == 32
    assert bench_quality.parse_args(["--quick", "--batch-size", "4"]).batch_size == 4


@pytest.mark.parametrize("shape", [(4, 64, 64, 3), (2, 20, 13, 3), (3, 8, 8, 3)])
def test_ssim_equals_the_gaussian_window_conv2d_definition(shape):
    """render.ssim filters with banded matrices; the result is SSIM as a conv2d with the 11x11 window gives."""
    rng = np.random.default_rng(0)
    reference = rng.random(shape, dtype=np.float32)
    test = np.clip(reference + 0.2 * rng.standard_normal(shape, dtype=np.float32), 0, 1)
    x, y = (torch.as_tensor(v, dtype=torch.float64).permute(0, 3, 1, 2).reshape(-1, 1, *shape[1:3])
            for v in (reference, test))
    size = min(SSIM_WINDOW, *shape[1:3])
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    gauss = torch.exp(-coords**2 / (2 * SSIM_SIGMA**2))
    gauss /= gauss.sum()
    window = (gauss[:, None] * gauss[None, :])[None, None]

    def mean(t):
        return torch.nn.functional.conv2d(t, window)

    mu_x, mu_y = mean(x), mean(y)
    var_x, var_y, cov = mean(x * x) - mu_x**2, mean(y * y) - mu_y**2, mean(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    expected = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    assert ssim(reference, test) == pytest.approx(float(expected.mean()), abs=1e-12)
    assert ssim(reference, reference) == pytest.approx(1.0, abs=1e-12)


def test_settings_are_chosen_by_name(bench_quality):
    chosen = bench_quality.settings(["sparse", "radial", "rectified"], 6, ["low-density"])
    assert [(s.method, s.name) for s in chosen] == [("sparse", "low-density"), ("rectified", "low-density")]
    assert all(s.options["dense_steps"] == 6 for s in chosen)
    assert bench_quality.parse_args(["--settings", "default"]).settings == ["default"]
    with pytest.raises(SystemExit, match="--settings: unknown setting 'fast'"):
        bench_quality.settings(["sparse"], 6, ["fast"])


def test_low_density_setting_is_one_selection_with_and_without_the_correction(bench_quality):
    """On the embedded model's layout (8 latent frames of 16 x 16) the low-density options of sparse and rectified
    plan the same blocks, about 1/8 of them (top 4 of 32 key blocks per query block, plus the diagonal where it is
    not among them), and rectified's estimate of the dropped blocks brings the output much closer to exact."""
    from methods.method_cases import dense_attention, make_call, structured_inputs
    from swiftdit.methods import method_class

    grid = (8, 16, 16)
    inputs = structured_inputs(grid, heads=2, head_dim=64, sharpness=1.0)
    exact = dense_attention(inputs).float()
    patterns, errors = {}, {}
    for name in ("sparse", "rectified"):
        cls = method_class(name)
        method = cls(cls.Config(**bench_quality.LOW_DENSITY[name]))
        call = make_call(grid)
        patterns[name] = method.plan(inputs.q, inputs.k, call)
        out = method.attend(inputs, patterns[name], call)
        errors[name] = float((out - exact).norm() / exact.norm())
    assert torch.equal(patterns["sparse"].block_mask, patterns["rectified"].block_mask)
    assert 4 / 32 <= patterns["sparse"].density() <= 5 / 32
    assert errors["rectified"] < 0.1 * errors["sparse"]
