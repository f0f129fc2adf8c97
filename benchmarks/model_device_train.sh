#!/usr/bin/env bash
# Train the embedded model on the device machine for $1 seconds and hand back, under
# $OUT, the exported pipeline as tar parts below the 16 MiB per-file limit, the training log and the console log.
# Usage (device `run` tool, carry .whl): bash benchmarks/model_device_train.sh 510
set -uo pipefail
source benchmarks/model_device_setup.sh
run_dir=/tmp/embedded_run
python3 -m swiftdit.pipelines.training --output-dir "$run_dir" --time-limit-s "$1" 2>&1 | tee "$OUT/train.log"
tar -C "$run_dir/pipeline" -cf - . | split -b 15M - "$OUT/pipeline.tar.part-"
cp "$run_dir/training_log.json" "$OUT/"
ls -la "$OUT"
