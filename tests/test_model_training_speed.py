"""The training-step timing script (benchmarks/model_training_speed.py) in its --quick mode, on a tiny model:
it runs the real training step with and without masks and writes its JSON and profile. No speed is asserted."""

import json

from benchmark_scripts import load_benchmark


def test_quick_run_times_the_step_and_writes_the_profile(tmp_path):
    results = load_benchmark("model_training_speed").main(["--quick", "--variants", "eager", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "training_speed.json").read_text()) == results
    assert results["batch_size"] == 2 and results["steps_timed"] == 2 and "compiled" not in results
    eager = results["eager"]
    assert eager["seconds_per_step"] > 0 and eager["seconds_per_step_without_masks"] > 0
    assert eager["first_step_seconds"] > 0
    assert "Name" in (tmp_path / "training_profile_eager.txt").read_text()
