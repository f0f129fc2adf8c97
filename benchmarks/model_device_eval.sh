#!/usr/bin/env bash
# Measure the embedded model in assets/ on the device machine: held-out adherence in both generation modes and
# the default clip's time in float32 and bfloat16; the JSON results come back under $OUT.
# Usage (device `run` tool, carry .whl): bash benchmarks/model_device_eval.sh
set -uo pipefail
source benchmarks/model_device_setup.sh
python3 benchmarks/model_adherence.py --output "$OUT/adherence.json"
python3 benchmarks/model_timing.py --dtypes float32 bfloat16 --repeats 5 --output "$OUT/timing_h100.json"
