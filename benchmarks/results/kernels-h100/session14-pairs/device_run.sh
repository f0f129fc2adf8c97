#!/usr/bin/env bash
# Session 14 wrote the Gluon forward's walk over pairs of 64-token query blocks (launch_forward_hopper's
# `pairs`) when no GPU was lent: it is compiled for sm_90 and checked by ptxas (tests/kernels/
# test_block_sparse_gluon.py::test_kernel_compiles_for_sm90), its barrier protocol by protocol_model.py, and it
# has never run. These are the first device commands for it, from the repository root, each within a device
# call's 10 minutes (carry .whl; results under $OUT):
#
#   bash benchmarks/results/kernels-h100/session14-pairs/device_run.sh tests   # the Gluon GPU tests, ~5 min
#   bash benchmarks/results/kernels-h100/session14-pairs/device_run.sh bench   # 64-token table, ~5 min
#
# `bench` times the two-lane walk (swiftdit_gluon) and the pairs walk (swiftdit_gluon_pairs) side by side on
# neighbour masks (pair overlap 0.65, as the methods' patterns), uniform random and varied masks, and notes
# max|pairs - gluon| per row. If the pairs walk hangs, the tests' timeout ends the call: look at
# protocol_model.py against the kernel first.
set -uo pipefail
if [ "${1:-}" != tests ] && [ "${1:-}" != bench ]; then
  echo "usage: $0 tests|bench" >&2
  exit 2
fi
source benchmarks/model_device_setup.sh >/dev/null
export PYTHONPATH=/tmp/site:$PWD/..
case "${1:-}" in
  tests)
    # One small pairs case first, under a short timeout, so that a hang costs 2.5 minutes, not the call.
    timeout 150 python -m pytest -x -q -m gpu tests/kernels/test_block_sparse_gluon.py \
      -k "pairs_share and 8192" 2>&1 | tail -20 | tee "$OUT/gpu_pairs_smoke.txt"
    if ! grep -q " passed" "$OUT/gpu_pairs_smoke.txt" || grep -q "failed\|error" "$OUT/gpu_pairs_smoke.txt"; then
      echo "the pairs smoke test failed or hung: not running the rest" >&2
      exit 1
    fi
    timeout 380 python -m pytest -q -m gpu tests/kernels/test_block_sparse_gluon.py 2>&1 | tail -40 \
      | tee "$OUT/gpu_gluon_tests.txt" ;;
  bench)
    timeout 560 python benchmarks/bench_kernels.py --out "$OUT/bench64" --shapes wan480 wan720 hunyuan720 \
      --blocks 64 --masks neighbours random varied --no-flex --skip backward planner sla pooled 2>&1 \
      | grep -v Warning | tail -80 ;;
esac
