#!/usr/bin/env bash
# Compile-only check of the CUDA sources: configures cuda/compile_check (CMake >= 3.26) and builds its object files,
# kernels with nvcc for each requested GPU architecture, host side with the C++ compiler, all against the torch of
# $PYTHON. Needs nvcc, no GPU and no CUDA build of torch; nothing is linked. Warnings are errors.
#
# Usage: .ci/cuda_compile_check.sh [BUILD_DIR]
# Environment: INSPO_CUDA_ARCHITECTURES (default "80;90"), PYTHON (default python3), CMAKE (default cmake).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build/cuda-compile-check}"
cmake="${CMAKE:-cmake}"
python="${PYTHON:-python3}"
archs="${INSPO_CUDA_ARCHITECTURES:-80;90}"

command -v nvcc >/dev/null || { echo "cuda_compile_check: nvcc not found on PATH" >&2; exit 2; }
generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi

start=$SECONDS
"$cmake" -S "$root/cuda/compile_check" -B "$build" "${generator[@]}" \
  -DPython_EXECUTABLE="$(command -v "$python")" -DINSPO_CUDA_ARCHITECTURES="$archs"
"$cmake" --build "$build" --parallel
echo "cuda_compile_check: compiled for architectures $archs in $((SECONDS - start)) s"
