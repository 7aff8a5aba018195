#!/usr/bin/env bash
# The checks that need a GPU, in one run: build with the CUDA kernels (INSPO_CUDA=ON), run the kernel tests
# (tests/test_op_*.py, whose cuda parameters run here) and the tests around them, a short training run on the GPU with
# each backend, and the CUDA benchmarks (kernels, InSPO updates/s end to end, the pytest-benchmark microbenchmarks).
# CI has no GPU; run this by hand on a machine that has one, with the PyTorch it already has:
#
#     bash .ci/gpu_check.sh OUTDIR [CUDA_ARCHITECTURES]      # e.g. bash .ci/gpu_check.sh gpu_out 90
#
# SKIP_BENCH=1 leaves out the benchmarks (about half of the run).
# Every step runs even when an earlier one fails (a failed test should not cost the benchmark numbers); the exit
# status is non-zero when any step failed. Logs, benchmark JSON and markdown land in OUTDIR.
set -u
out=$(realpath -m "${1:-gpu_out}")
arch=${2:-90}
mkdir -p "$out"
# The system compiler when there is one. On the lent GPU machines the default g++ (/opt/gcc/bin/g++, a wrapper)
# gave a module that segfaulted whenever an error message formatted an integer (a second libstdc++ in the process,
# as far as we could tell); /usr/bin/g++, the same GCC 13.3, gave one that passed every test.
if [ -x /usr/bin/g++ ]; then export CXX=${CXX:-/usr/bin/g++} CUDAHOSTCXX=${CUDAHOSTCXX:-/usr/bin/g++}; fi
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
failed=()
scratch=$(mktemp -d)  # build tree and training runs; only OUTDIR is kept
step() {  # step NAME TIMEOUT_S COMMAND...: run, log to OUTDIR/NAME.log, remember a failure
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc in $((SECONDS - t0)) s"
  tail -n 15 "$out/$name.log"
  [ "$rc" -eq 0 ] || failed+=("$name")
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
step build 300 env INSPO_CUDA=ON python3 -m pip install --no-build-isolation --no-deps -v . \
    -Ccmake.define.INSPO_CUDA_ARCHITECTURES="$arch" -Cbuild-dir="$scratch/build"
python3 -c "import inspo; assert inspo.built_with_cuda(), 'built without CUDA'; print('built_with_cuda: True')" \
    || failed+=(import)
step tests 240 python3 -m pytest -q -p no:cacheprovider -rs tests/test_op_*.py tests/test_extension_build.py \
    tests/test_inspo_updates.py tests/test_stacked_networks.py tests/test_fuzz.py \
    tests/test_training.py::test_fused_backend_matches_pytorch_reference
for backend in fused torch; do
    step "train_$backend" 120 python3 -m inspo.cli train --dataset data/bridge_mix --device cuda --backend "$backend" \
        --iters 1000 --bc-steps 300 --eval-every 1000 --eval-episodes 10 --eval-episode-limit 20 \
        --out "$scratch/train-$backend"
    cp "$scratch/train-$backend/metrics.json" "$out/train_$backend.json" 2>/dev/null
done
if [ "${SKIP_BENCH:-0}" != 1 ]; then
    step bench_grid 150 python3 bench/bench_ops.py --device cuda --impls kernel eager clone --budget 0.2 \
        --tag cuda_grid --out "$out"
    step bench_compile 150 python3 bench/bench_ops.py --device cuda --B 1048576 --N 2 8 27 --A 16 --budget 0.3 \
        --tag cuda_compile --out "$out"
    step bench_train 300 python3 bench/bench_train.py --device cuda --quick --out "$out"
    # The pytest-benchmark microbenchmarks (CPU and CUDA groups); skipped where pytest-benchmark is not installed.
    step bench_pytest 300 python3 -m pytest -q -p no:cacheprovider bench/ --benchmark-only \
        --benchmark-json="$out/bench_pytest.json"
fi
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED: ${failed[*]}"; exit 1; fi
echo "all GPU checks passed"
