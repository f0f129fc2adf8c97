"""The rolling benchmark's statistics (benchmarks/bench_rolling.py): what flatness, trend and the summary say
about known series. The streams themselves are tested in tests/test_rolling_*.py; no speed is asserted."""

import numpy as np
import pytest

from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench_rolling():
    return load_benchmark("bench_rolling")


def measured(values, period=4):
    values = np.asarray(values, dtype=float)
    return {"window_start_frames": np.arange(len(values)) * period, "seconds_per_frame": values,
            "peak_bytes": values}


def test_one_slow_window_sets_flatness_but_not_trend_or_running_median(bench_rolling):
    series = measured([1.0] * 40 + [2.0] + [1.0] * 40)
    # windows from frame 64 on: the last 65 of 81, one of them twice as slow
    assert bench_rolling.flatness(series, "seconds_per_frame", 64) == pytest.approx(2 / (66 / 65) - 1)
    assert bench_rolling.trend(series, "seconds_per_frame", 64) == pytest.approx(0.0)
    assert bench_rolling.median_flatness(series, "seconds_per_frame", 64) == pytest.approx(0.0)


def test_growth_shows_in_trend(bench_rolling):
    series = measured(np.linspace(1.0, 2.0, 80))
    growth = bench_rolling.trend(series, "seconds_per_frame", 0)
    assert 0.6 < growth < 1.0  # last quarter's mean over the first quarter's, minus 1
    assert bench_rolling.median_flatness(series, "seconds_per_frame", 0) > 0.3


def test_windows_before_the_start_frame_are_left_out(bench_rolling):
    series = measured([5.0] * 16 + [1.0] * 40)  # a slow warm-up over the first 64 frames
    assert bench_rolling.flatness(series, "seconds_per_frame", 64) == 0.0
    assert bench_rolling.flatness(series, "seconds_per_frame", 0) > 1.0


def test_the_drain_at_the_end_of_a_rolling_stream_is_left_out(bench_rolling):
    # 40 frames in windows of 4, of which the last 12 come while 3 chunks in flight drain: the windows that
    # reach into them (starting at 28 and 32) are not steady state.
    frames = (np.zeros((1, 1, 3), np.uint8) for _ in range(40))
    timed = bench_rolling.timed_stream(frames, bench_rolling.torch.device("cpu"), period=4, drain_frames=12)
    assert timed["steady_end_frame"] == 40 - 12 - 4
    starts = timed["window_start_frames"]
    assert starts[starts <= timed["steady_end_frame"]].tolist() == [0, 4, 8, 12, 16, 20, 24]
    series = measured([1.0] * 7 + [0.2, 0.1])  # the drain's windows are faster
    series["steady_end_frame"] = 24
    assert bench_rolling.flatness(series, "seconds_per_frame", 0) == 0.0
    assert bench_rolling.trend(series, "seconds_per_frame", 0) == 0.0


def test_summary_rates_and_drift(bench_rolling):
    def cache(color, direction, pixels):
        return {"last_16": {"color": color, "direction": direction, "shape": False},
                "drift": [{"start_frame": 0, "background_error": 0.0, "object_pixels": 100.0},
                          {"start_frame": 16, "background_error": 0.1, "object_pixels": pixels}]}

    streams = [{"schedule": "chunked", "prompt": f"p{i}", "sink": cache(True, i != 0, 120.0),
                "no_sink": cache(True, True, 80.0), "switch": {"color": True, "direction": i == 1}}
               for i in range(2)]
    timing = {f"chunked/{name}": {"time_flatness": 0.1, "median_time_flatness": 0.01, "time_trend": 0.0,
                                  "memory_trend": 0.0, "memory_flatness": 0.0, "steady_ms_per_frame": 3.0}
              for name in ("sink", "no_sink")}
    summary = bench_rolling.summarize(streams, timing)["chunked"]
    assert summary["sink"]["last_16_color_and_direction"] == 0.5
    assert summary["no_sink"]["last_16_color_and_direction"] == 1.0
    assert summary["sink"]["final_object_pixels"] == 120.0 and summary["no_sink"]["final_object_pixels"] == 80.0
    assert summary["sink"]["final_background_error"] == pytest.approx(0.1)
    assert summary["switch_color_and_direction_within_2_chunks"] == 0.5
