#!/usr/bin/env bash
# The GPU checks in one run (about 6 minutes on an H200): build with CUDA; the CUDA cases of the op tests, the
# sync-free tests and the fused-vs-PyTorch training parity; eager vs cuda_graph=True training from the same seed
# (policy parameters equal to float tolerance); updates/s of fused eager, fused + CUDA graph and the torch backend
# on Bridge (GPU-synchronised wall time); advantage_weights CUDA vs torch.compile vs a copy; bench train (Bridge and
# SMAX-sized). Every step runs even when an earlier one fails.
#     bash .ci/gpu_check.sh OUTDIR
# OUTDIR receives few files (the device tool returns at most 8): steps.log, graph_equal.json, bench_updates.json and
# the benchmark tables; build trees and run folders go to a scratch folder.
set -u
out=$(realpath -m "${1:-gpu_graph_out}")
mkdir -p "$out"
[ -x /usr/bin/g++ ] && export CXX=/usr/bin/g++ CC=/usr/bin/gcc CUDAHOSTCXX=/usr/bin/g++  # the image's default g++ is a wrapper whose modules crash on any C++ exception
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
scratch=$(mktemp -d)
log="$out/steps.log"
failed=()
step() {  # step NAME TIMEOUT_S COMMAND...: run, append to steps.log, remember a failure
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "===== $name" >>"$log"
  timeout "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  echo "== $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$log"
  [ "$rc" -eq 0 ] || failed+=("$name")
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$log"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$log"
step build 240 env INSPO_CUDA=ON python3 -m pip install --no-build-isolation --no-deps . \
    -Ccmake.define.INSPO_CUDA_ARCHITECTURES=90 -Cbuild-dir="$scratch/b"
python3 -c "import inspo; assert inspo.built_with_cuda(); print('built_with_cuda', inspo.__file__)" 2>&1 | tee -a "$log"
step tests 150 python3 -m pytest -q -n 8 -p no:cacheprovider -rs --timeout 90 tests/test_op_sequential_update.py \
    tests/test_op_critic_update.py tests/test_op_masked_softmax_stats.py tests/test_op_advantage_weights.py \
    tests/test_sync_free.py tests/test_inspo_updates.py \
    tests/test_training.py::test_fused_backend_matches_pytorch_reference
step graph_equal 90 python3 - "$out" "$scratch" <<'PY'
import json, sys
from inspo.config import TrainConfig
from inspo.policy import load_policy
from inspo.training import train
out, scratch = sys.argv[1:]
params = {}
for graph in (False, True):
    cfg = TrainConfig(dataset="data/bridge_mix", device="cuda", iters=300, bc_steps=100, eval_every=300,
                      eval_episodes=5, eval_episode_limit=5, cuda_graph=graph, check_every=100,
                      out=f"{scratch}/run_graph_{graph}")
    train(cfg)
    params[graph] = load_policy(f"{scratch}/run_graph_{graph}/final.pt").network.state_dict()
diff = max((params[False][k].double() - params[True][k].double()).abs().max().item() for k in params[False])
print("max |eager - graph| over policy parameters:", diff)
json.dump({"max_abs_diff": diff, "iters": 300}, open(f"{out}/graph_equal.json", "w"))
assert diff < 1e-4, diff
PY
step bench_updates 120 python3 - "$out" <<'PY'
import json, sys, time, torch
from inspo.config import TrainConfig
from inspo.training import train
rows = []
for name, extra in (("fused_eager", {}), ("fused_graph", {"cuda_graph": True}), ("torch_eager", {"backend": "torch"})):
    for iters in (200, 2200):  # the difference removes cloning, evaluation, capture and start-up
        cfg = TrainConfig(dataset="data/bridge_mix", device="cuda", iters=iters, bc_steps=10, eval_every=iters,
                          eval_episodes=2, eval_episode_limit=2, check_every=100, **extra)
        torch.cuda.synchronize(); t0 = time.perf_counter(); train(cfg); torch.cuda.synchronize()
        rows.append({"case": name, "iters": iters, "wall_s": time.perf_counter() - t0})
    per_s = 2000 / (rows[-1]["wall_s"] - rows[-2]["wall_s"])
    rows.append({"case": name, "updates_per_s": per_s})
    print(rows[-1])
json.dump(rows, open(f"{sys.argv[1]}/bench_updates.json", "w"), indent=2)
PY
step bench_ops 120 python3 bench/bench_ops.py --device cuda --B 1048576 --N 2 4 8 16 32 --A 16 \
    --budget 0.3 --tag cuda_ops --out "$out"
step bench_train 90 python3 bench/bench_train.py --device cuda --quick --cases bridge smax --out "$out"
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED: ${failed[*]}"; exit 1; fi
echo "all GPU checks passed"
