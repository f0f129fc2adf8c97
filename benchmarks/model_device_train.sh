#!/usr/bin/env bash
# Train the embedded model on the device machine for $1 seconds, warm-starting from the exported pipeline in $2 if
# given, and hand back under $OUT the exported pipeline (with its training log) as tar parts below the 16 MiB
# per-file limit, and the console log. Further arguments go to the training command (e.g. --max-steps N).
# Usage (device `run` tool, carry .whl): bash benchmarks/model_device_train.sh 500 [assets/embedded_model [...]]
set -uo pipefail
source benchmarks/model_device_setup.sh
warm_start=()
if [ -n "${2:-}" ]; then warm_start=(--init-from "$2"); fi
export_dir=/tmp/embedded_export
python3 -m swiftdit.pipelines.training --output-dir /tmp/embedded_run --export-dir "$export_dir" \
  --time-limit-s "$1" "${warm_start[@]}" "${@:3}" 2>&1 | tee "$OUT/train.log"
tar -C "$export_dir" -cf - . | split -b 15M - "$OUT/pipeline.tar.part-"
ls -la "$OUT"
