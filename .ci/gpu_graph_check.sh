#!/usr/bin/env bash
# Issue 19 on a GPU, in one run (<= 8 min on an H200): build with CUDA, the CUDA op tests and tests/test_sync_free.py,
# eager vs cuda_graph=True training from the same seed (parameters equal to float tolerance), updates/s of fused
# eager, fused + CUDA graph and the torch backend, and advantage_weights CUDA vs torch.compile vs a copy.
#     bash .ci/gpu_graph_check.sh OUTDIR
# Every step runs even when an earlier one fails; logs and JSON land in OUTDIR; non-zero exit if any step failed.
set -u
out=$(realpath -m "${1:-gpu_graph_out}")
mkdir -p "$out"
export CXX=g++ CC=gcc PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
failed=()
scratch=$(mktemp -d)
step() {  # step NAME TIMEOUT_S COMMAND...: run, log to OUTDIR/NAME.log, remember a failure
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc in $((SECONDS - t0)) s"
  tail -n 15 "$out/$name.log"
  [ "$rc" -eq 0 ] || failed+=("$name")
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
step build 240 env INSPO_CUDA=ON python3 -m pip install --no-build-isolation --no-deps . \
    -Ccmake.define.INSPO_CUDA_ARCHITECTURES=90 -Cbuild-dir="$scratch/b"
# Run from outside the checkout: the installed package, not python/inspo without its CUDA module.
step tests 150 python3 -m pytest -q -p no:cacheprovider -rs tests/test_op_sequential_update.py \
    tests/test_op_critic_update.py tests/test_op_masked_softmax_stats.py tests/test_op_advantage_weights.py \
    tests/test_sync_free.py
step graph_equal 120 python3 - "$out" <<'PY'
import json, sys, time, torch
from inspo.config import TrainConfig
from inspo.training import train
res = {}
for graph in (False, True):
    cfg = TrainConfig(dataset="data/bridge_mix", device="cuda", iters=300, bc_steps=100, eval_every=300,
                      eval_episodes=5, eval_episode_limit=5, cuda_graph=graph, check_every=100,
                      out=f"{sys.argv[1]}/run_graph_{graph}")
    r = train(cfg)
    res[graph] = torch.load(f"{sys.argv[1]}/run_graph_{graph}/final.pt", weights_only=False)["policy"]
diff = max((res[False][k].float() - res[True][k].float()).abs().max().item() for k in res[False])
print("max |eager - graph| over policy parameters:", diff)
json.dump({"max_abs_diff": diff}, open(f"{sys.argv[1]}/graph_equal.json", "w"))
assert diff < 1e-4, diff
PY
step bench_updates 150 python3 - "$out" <<'PY'
import json, sys, time, torch
from inspo.config import TrainConfig
from inspo.training import train
rows = []
for name, extra in (("fused_eager", {}), ("fused_graph", {"cuda_graph": True}), ("torch_eager", {"backend": "torch"})):
    cfg = TrainConfig(dataset="data/bridge_mix", device="cuda", iters=2000, bc_steps=10, eval_every=2000,
                      eval_episodes=2, eval_episode_limit=2, check_every=500, **extra)
    torch.cuda.synchronize(); r = train(cfg); torch.cuda.synchronize()
    rows.append({"case": name, "updates_per_s_reported": r.updates_per_second, "wall_s": r.wall_time})
    print(rows[-1])
json.dump(rows, open(f"{sys.argv[1]}/bench_updates.json", "w"), indent=2)
PY
step bench_weights 150 python3 bench/bench_ops.py --device cuda --B 1048576 --N 2 4 8 16 32 --A 16 --budget 0.3 \
    --tag cuda_compile --out "$out"
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED: ${failed[*]}"; exit 1; fi
echo "all GPU graph checks passed"
