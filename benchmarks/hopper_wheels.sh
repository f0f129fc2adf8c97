#!/usr/bin/env bash
# Stage NVIDIA's cuDNN frontend with its CuTe DSL block-sparse attention (the `swiftdit[hopper]` extra) for the
# lent GPU machine, which cannot fetch packages. The CuTe DSL's CUDA 13 libraries alone compress to ~61 MiB,
# and one device call carries at most 64 MiB with the working tree (~31 MiB), so they travel over four calls.
# Ignored paths inside the repository do not survive between calls; /root does while the machine stays warm
# (it is released after about 30 s idle), so make the four calls back to back:
#   calls 1-3, each carrying one of .hopper-wheels-a/cu13.tar.xz.aa, .ab, .ac:
#     mkdir -p /root/hopper-parts && cp .hopper-wheels-a/cu13.tar.xz.* /root/hopper-parts/
#   and at the end of the third:
#     mkdir -p /root/hopper-site && cat /root/hopper-parts/cu13.tar.xz.a? | tar -C /root/hopper-site -xJf -
#   call 4, carrying .whl and .hopper-wheels-b (every other wheel), before the benchmark itself:
#     for w in .hopper-wheels-b/*.whl; do python3 -m zipfile -e $w /root/hopper-site; done
#     export PYTHONPATH=/tmp/site:/root/hopper-site:/root/hopper-site/nvidia_cutlass_dsl/dsl_packages
# The wheels are unzipped rather than installed: `pip --target` refuses to merge into the package folder that
# the cu13 part already created, and does not process the DSL's .pth file (hence dsl_packages on the path).
# Run this script from the project root on this (CPU) machine.
set -euo pipefail
mkdir -p .git/info  # a fresh clone may lack it
for path in /.hopper-wheels-a/ /.hopper-wheels-b/; do
  grep -qxF "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude
done
CUTLASS_DSL_VERSION=${CUTLASS_DSL_VERSION:-4.8.1}
download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any "$@"
}
mkdir -p .hopper-wheels-a .hopper-wheels-b
download -d .hopper-wheels-b "nvidia-cudnn-frontend==${CUDNN_FRONTEND_VERSION:-1.32.0}" \
  "nvidia-cutlass-dsl==$CUTLASS_DSL_VERSION" "nvidia-cutlass-dsl-libs-base==$CUTLASS_DSL_VERSION" \
  "nvidia-cutlass-dsl-libs-core==$CUTLASS_DSL_VERSION" "apache-tvm-ffi==${TVM_FFI_VERSION:-0.1.15.post2}"
if [ ! -f .hopper-wheels-a/cu13.tar.xz.aa ]; then
  scratch=$(mktemp -d)
  download -d "$scratch" "nvidia-cutlass-dsl-libs-cu13==$CUTLASS_DSL_VERSION"
  mkdir "$scratch/unpacked" && (cd "$scratch/unpacked" && python3 -m zipfile -e "$scratch"/*.whl .)
  tar -C "$scratch/unpacked" -cf - . | xz -9 -T0 | split -b 21M - .hopper-wheels-a/cu13.tar.xz.
  rm -rf "$scratch"
fi
ls -la .hopper-wheels-a .hopper-wheels-b
