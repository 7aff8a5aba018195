"""Baselines against InSPO on the known-answer tasks: writes ``results/baselines.json`` and ``results/baselines.md``.

    python results/baselines.py                # every task, method and seed (about an hour on one CPU core)
    python results/baselines.py --report-only  # rebuild the Markdown table from the JSON

Runs one training process at a time, one intra-op thread each (``TrainConfig.threads = 1``). Finished runs are kept
in the JSON and skipped when the script is started again with the same settings.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import inspo
from inspo.config import TrainConfig
from inspo.data import generate_matrix, save_dataset

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("bc", "icq", "omiga", "cfcql", "inspo")
SEEDS = (0, 1, 2)

# One-step matrix games: gamma = 0, exact evaluation of the product policy. Every method gets the same KL-to-behaviour
# strength alpha as InSPO on that task; InSPO's entropy weight beta = 1 on M-NE (SPEC section 3).
MATRIX = {"gamma": 0.0, "bc_steps": 500, "iters": 3000, "eval_every": 250}
TASKS: dict[str, dict[str, Any]] = {
    "xor-aa-ab-ba": {"data": ("xor", "xor-aa-ab-ba"), "config": {**MATRIX, "alpha": 0.2}},
    "xor-uniform": {"data": ("xor", "xor-uniform"), "config": {**MATRIX, "alpha": 0.2}},
    "mne-imbalanced": {"data": ("mne", "mne-imbalanced"), "config": {**MATRIX, "alpha": 1.0},
                       "inspo": {"beta": 1.0}},
    "bridge-mix": {"data": "data/bridge_mix",
                   "config": {"iters": 10000, "eval_every": 1000, "eval_episodes": 100, "eval_episode_limit": 20}},
}


def dataset_path(task: str, data_dir: Path) -> str:
    spec = TASKS[task]["data"]
    if isinstance(spec, str):
        return str(ROOT / spec)
    env, preset = spec
    path = data_dir / preset
    if not path.exists():
        save_dataset(generate_matrix(env, preset, 5000, seed=0), path)
    return str(path)


def config(task: str, method: str, seed: int, data_dir: Path) -> TrainConfig:
    spec = TASKS[task]
    values = {**spec["config"], **spec.get(method, {}), "algo": method, "seed": seed}
    return TrainConfig(dataset=dataset_path(task, data_dir), **values)


def run_suite(out: Path, data_dir: Path, tasks=tuple(TASKS), methods=METHODS, seeds=SEEDS) -> dict[str, Any]:
    """Train every (task, method, seed) not yet in ``out`` (JSON), saving after each run."""
    results = json.loads(out.read_text()) if out.exists() else {"runs": []}
    done = {(r["task"], r["method"], r["seed"]) for r in results["runs"]}
    for task in tasks:
        for method in methods:
            for seed in seeds:
                if (task, method, seed) in done:
                    continue
                cfg = config(task, method, seed, data_dir)
                start = time.perf_counter()
                res = inspo.train(cfg)
                record = {"task": task, "method": method, "seed": seed, "final_return": res.final_return,
                          "best_return": res.best_return, "behaviour_return": res.behaviour_return,
                          "optimum": res.optimum, "wall_time": time.perf_counter() - start,
                          "curve": [{"iteration": c["iteration"], "return": c["return"]} for c in res.curve],
                          "config": {k: v for k, v in cfg.to_dict().items() if k != "dataset"}}
                results["runs"].append(record)
                out.write_text(json.dumps(results, indent=1))
                print(f"{task:15s} {method:6s} seed {seed}: final {res.final_return:8.3f} best {res.best_return:8.3f}"
                      f"  ({record['wall_time']:.0f}s)", flush=True)
    return results


def _best_after_start(run: dict[str, Any]) -> float:
    """Best evaluated return once the learner has started (iteration 0 is the policy before any update: behaviour
    cloning, or CFCQL's randomly initialised utilities, which may pick the XOR optimum by chance)."""
    curve = [c["return"] for c in run["curve"] if c["iteration"] > 0] or [c["return"] for c in run["curve"]]
    return max(curve)


def summary(results: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """task -> method -> mean/std of the final and best returns over seeds."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for task in TASKS:
        for method in METHODS:
            runs = [r for r in results["runs"] if r["task"] == task and r["method"] == method]
            if not runs:
                continue
            final = np.array([r["final_return"] for r in runs])
            best = np.array([_best_after_start(r) for r in runs])
            table.setdefault(task, {})[method] = {
                "final_mean": float(final.mean()), "final_std": float(final.std()), "best_mean": float(best.mean()),
                "best_std": float(best.std()), "seeds": len(runs), "behaviour_return": runs[0]["behaviour_return"],
                "optimum": runs[0]["optimum"]}
    return table


NAMES = {"bc": "BC", "icq": "MA-ICQ", "omiga": "OMIGA", "cfcql": "CFCQL", "inspo": "InSPO"}


NOTES = """## What the numbers say

- **Value decomposition cannot represent XOR.** MA-ICQ and OMIGA mix per-agent utilities linearly with non-negative
  state weights, CFCQL with a QMIX network; all are monotonic in every utility. On {AA, AB, BA} the data rank B above A
  for each agent (B scores 1 against the teammate's logged A) and nothing in a monotonic decomposition can say that
  the unseen (B, B) is bad: the exact linear fit extrapolates Q_tot(B, B) = 2. MA-ICQ and OMIGA then converge to
  their closed form pi_i ∝ mu_i exp(w_i A_i / alpha) with w_i (Q_i(B) - Q_i(A)) = 1, i.e. pi_i(B) = 0.987 at
  alpha = 0.2 and J = -1.92; CFCQL's greedy policy plays (B, B), J = -2, although its counterfactual penalty acts on
  exactly that joint action. (Any symmetric product policy has J <= 0.25; the optimum 1 needs the agents to differ.)
- **Uniform XOR**: the best monotonic (and the additive) fit ranks A above B for both agents, so every decomposition
  method ends at (A, A), J = 0 (MA-ICQ and OMIGA at J = 0.01, their soft policies keep a little mass on B).
- **Imbalanced M-NE**: the data's 80/89 mass on (C, C) makes C the best response for both agents under every
  decomposition; all three baselines stay at the dominant sub-optimal equilibrium (C, C) = 5 (MA-ICQ and OMIGA a bit
  below, their soft policies at alpha = 1 keep mass on the other actions), where InSPO with its entropy term
  (beta = 1) reaches (A, A) = 10.
- **Bridge** (the agents must take turns on a one-lane bridge; optimum -1.2355 in 20 steps): InSPO -1.63, OMIGA
  -2.62 (its in-sample soft maximum improves over the mixed data for several steps), MA-ICQ -5.94 (its critic
  temperature 1000 makes the critic nearly SARSA on the behaviour, so it takes roughly one improvement step over
  the behaviour; its best evaluation, -4.8, comes early), CFCQL -3.88 with a large spread over seeds (-1.24, -4.40,
  -6.01: one seed learns the optimal crossing, another's greedy policy stands still for the whole episode, which
  scores exactly -6.008). BC is the product of the per-agent behaviour-cloned marginals. The "behaviour return" line
  is the data's own mean episode return, over the data's 50-step episodes (-9.46), so it is not on the same scale
  as the 20-step evaluations.

## Setup and deviations

One trainer (`inspo.train`) for all methods: the same dataset loading, behaviour-cloning stage (500 steps on the
matrix games, 2000 on Bridge; its policy is the BC row, the starting point of the InSPO/MA-ICQ/OMIGA actors, and
CFCQL's reference for its agent weights), 2x64 MLPs, batch 256, Adam (3e-4 actors, 1e-3 critics), Polyak rate
0.005 for every target network, and the same evaluation. Matrix data:
5000 one-step episodes generated with seed 0 (`inspo.data.generate_matrix`), gamma = 0; Bridge: the shipped
`data/bridge_mix` (1000 AlberDICE episodes), gamma = 0.99. Baseline-specific settings are the `TrainConfig`
defaults: MA-ICQ critic temperature 1000 (the authors' code), CFCQL penalty weight `cql_alpha = 1`, agent-weight
temperature 5, policy temperature 1e-3 (near-greedy). Deviations from each paper are listed in the docstring of
`python/inspo/algos/{icq,omiga,cfcql}.py`; the main ones are one-step TD on transitions instead of TD(lambda) over
episodes, MLPs on observations instead of RNNs, Polyak targets instead of periodic hard copies, no gradient clipping.
"""


def report(results: dict[str, Any]) -> str:
    table = summary(results)
    lines = ["# Baselines: BC, MA-ICQ, OMIGA, CFCQL and InSPO in one trainer", "",
             "Produced by `python results/baselines.py` (raw runs, curves and configs: `results/baselines.json`). "
             "Mean ± std over seeds of the return of the final policy and of the best evaluated policy after the learner "
             "started (iteration 0, the policy before any update, is left out of 'best') "
             "(matrix games: the exact expected payoff of the product policy, evaluated every 250 iterations; "
             "Bridge: 100 sampled episodes of at most 20 steps, every 1000 iterations). All methods share the data, "
             "networks (2x64 MLPs), behaviour cloning and evaluation; one intra-op thread per run.", ""]
    for task, methods in table.items():
        any_method = next(iter(methods.values()))
        optimum = any_method["optimum"]
        cfg = TASKS[task]["config"]
        lines += [f"## {task}", "",
                  f"behaviour (data) return {any_method['behaviour_return']:.3f}, optimum "
                  f"{'n/a' if optimum is None else f'{optimum:.4f}'}; {cfg.get('iters')} iterations after behaviour "
                  f"cloning, alpha = {cfg.get('alpha', 0.2)} for every method"
                  + (", InSPO beta = 1" if "inspo" in TASKS[task] else "") + ".", "",
                  "| method | final return | best return | seeds |", "|---|---|---|---|"]
        for method, s in methods.items():
            lines.append(f"| {NAMES[method]} | {s['final_mean']:.3f} ± {s['final_std']:.3f} | "
                         f"{s['best_mean']:.3f} ± {s['best_std']:.3f} | {s['seeds']} |")
        lines.append("")
    return "\n".join(lines) + "\n" + NOTES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "results" / "baselines.json"))
    parser.add_argument("--data-dir", default=str(ROOT / "runs" / "baselines-data"))
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        results = json.loads(out.read_text())
    else:
        results = run_suite(out, Path(args.data_dir), args.tasks, args.methods, args.seeds)
    out.with_suffix(".md").write_text(report(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
