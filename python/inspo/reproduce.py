"""``inspo reproduce``: the known-answer tables, written to ``<out>/<suite>.md``, ``.json`` and ``.png``.

- ``matrix``: every row of the SPEC section 3 table (plus the rho-disabled ablation), from the exact tabular solver
  (:func:`inspo.tabular.solve`) and from the neural trainer (:func:`inspo.train`) side by side, mean ± std over
  seeds. The neural runs train on one-step episodes sampled from the row's joint-action distribution (the data
  seed is the run seed, so the spread includes the sampling of the data) and report the exact expected payoff J
  of the final (and best) policy.
- ``bridge``: InSPO and behaviour cloning on the public AlberDICE Bridge buffers, imported into a cache under the
  output folder; final and best return over sampled evaluation episodes, next to the data's own return and the
  dynamic-programming optimum.
- ``smax``: InSPO and behaviour cloning on generated SMAX datasets (maps 2s3z, 3s_vs_5z, 5m_vs_6m, 6h_vs_8z by
  default; qualities from :data:`inspo.data.SMAX_QUALITIES`, the online ones played by the policies of
  ``data/smax_policies/<map>`` or ``--policies DIR/<map>``); final and best return and win rate next to the
  behaviour policy's own, and learning curves.
- ``baselines --env {xor,mne,bridge,smax,all}``: behaviour cloning, MA-ICQ, OMIGA, CFCQL and InSPO in one trainer
  on every dataset of the environment (XOR: three joint-action distributions; M-NE: imbalanced and balanced; Bridge:
  the mixed and the optimal AlberDICE buffers; SMAX: ``<map>-<quality>`` datasets), one table per environment,
  ``<out>/baselines_<env>.md``.

Datasets and per-run outputs (``metrics.json``, checkpoints) go to ``<out>/cache/``, which is not meant to be
committed; the tables and plots are. The cache is also a run cache: a run whose folder already holds the
``metrics.json`` of a finished run with the same configuration is read back, not trained again (delete the folder
to retrain it, e.g. after changing the code).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspo import report
from inspo.checkpoint import atomic_write
from inspo.config import TrainConfig
from inspo.data import (MATRIX_PRESETS, SHIPPED_DATA, SMAX_QUALITIES, DatasetError, generate_matrix, generate_smax,
                        import_pymarl, load_dataset, save_dataset)
from inspo.envs.bridge import bridge_optimum
from inspo.tabular import MNE_PAYOFF, XOR_PAYOFF, solve
from inspo.training import train

__all__ = ["BASELINE_ENVS", "BASELINE_METHODS", "BRIDGE_DATASETS", "BRIDGE_SETTINGS", "MATRIX_CASES", "SMAX_MAPS",
           "SMAX_METHODS", "SMAX_SETTINGS", "BaselineEnv", "MatrixCase", "add_parser", "reproduce_baselines",
           "reproduce_bridge", "reproduce_matrix", "reproduce_smax"]


@dataclass(frozen=True)
class MatrixCase:
    """One row of the matrix table: a game, a joint-action distribution of the data, and a method setting."""

    game: str  # "xor" or "mne"
    preset: str  # a key of inspo.data.MATRIX_PRESETS
    data: str  # how the table names the data
    setting: str  # how the table names the method
    alpha: float
    beta: float
    order: str = "random"
    use_rho: bool = True
    spec_j: float | None = None  # the SPEC section 3 value; None where the SPEC has no entry


MATRIX_CASES: tuple[MatrixCase, ...] = (
    MatrixCase("xor", "xor-aa-ab-ba", "{AA,AB,BA}", "sequential, alpha=0.2, beta=0", 0.2, 0.0, spec_j=0.98),
    MatrixCase("xor", "xor-aa-ab-ba", "{AA,AB,BA}", "simultaneous", 0.2, 0.0, "simultaneous", spec_j=0.01),
    MatrixCase("xor", "xor-aa-ab-ba", "{AA,AB,BA}", "rho disabled (independent)", 0.2, 0.0, use_rho=False),
    MatrixCase("xor", "xor-uniform", "uniform", "sequential", 0.2, 0.0, spec_j=0.99),
    MatrixCase("xor", "xor-uniform", "uniform", "simultaneous", 0.2, 0.0, "simultaneous", spec_j=-1.96),
    MatrixCase("xor", "xor-ab-ba", "{AB,BA}", "sequential", 0.2, 0.0, spec_j=0.0),
    MatrixCase("xor", "xor-ab-ba", "{AB,BA}", "simultaneous", 0.2, 0.0, "simultaneous", spec_j=0.0),
    MatrixCase("mne", "mne-imbalanced", "imbalanced", "alpha=1, beta=0", 1.0, 0.0, spec_j=5.00),
    MatrixCase("mne", "mne-imbalanced", "imbalanced", "alpha=1, beta=1", 1.0, 1.0, spec_j=9.98),
    MatrixCase("mne", "mne-balanced", "balanced", "alpha=1, beta=0", 1.0, 0.0, spec_j=10.0),
)
"""The rows of ``inspo reproduce matrix``, in table order."""

BRIDGE_DATASETS: tuple[str, ...] = ("bridge_mix", "bridge_optimal")
"""The shared AlberDICE Bridge buffers that ``inspo reproduce bridge`` trains on by default."""

BRIDGE_SETTINGS: dict[str, Any] = {"lr_policy": 3e-3, "alpha": 0.1}
"""Bridge hyper-parameters that differ from the `TrainConfig` defaults. On bridge_mix, 3 seeds, 10000 iterations:
final return -1.45 / -1.34 / -1.38 with these, against -1.75 (seed 0) with the defaults, which are kept for the
matrix games (with lr_policy 3e-3 and the default polyak, XOR on {AA,AB,BA} ends at 0.94 after 1200 iterations on
one seed of three)."""

BRIDGE_EVAL_LIMIT = 20
"""Step limit of Bridge evaluation (SPEC section 2; the data were recorded with 50)."""

TABULAR_ITERS = 200
"""Iterations of the exact solver, as in SPEC section 3."""

_PAYOFFS = {"xor": XOR_PAYOFF, "mne": MNE_PAYOFF}

BASELINE_METHODS: tuple[str, ...] = ("bc", "icq", "omiga", "cfcql", "inspo")
"""The methods of ``inspo reproduce baselines``, in table order."""

METHOD_NAMES = {"bc": "BC", "icq": "MA-ICQ", "omiga": "OMIGA", "cfcql": "CFCQL", "inspo": "InSPO"}


@dataclass(frozen=True)
class BaselineEnv:
    """One environment of ``inspo reproduce baselines``: its datasets and what every method trains with."""

    title: str
    datasets: tuple[str, ...]  # matrix games: keys of inspo.data.MATRIX_PRESETS; Bridge: AlberDICE buffer names
    iters: int  # default iterations after behaviour cloning
    bc_steps: int  # default behaviour-cloning steps
    evaluations: int  # evaluations per run: eval_every = iters // evaluations
    settings: dict[str, Any]  # TrainConfig fields shared by every method
    per_method: dict[str, dict[str, Any]]  # and those of one method only


# Every method gets the same KL-to-behaviour strength alpha as InSPO on the task; InSPO's entropy weight beta = 1 on
# M-NE (SPEC section 3). Matrix games are one-step: gamma = 0. These are the settings of the first baseline table
# (a script, results/baselines.py, replaced by this suite), so its runs stay valid entries of the run cache.
BASELINE_ENVS: dict[str, BaselineEnv] = {
    "xor": BaselineEnv("XOR", ("xor-aa-ab-ba", "xor-uniform", "xor-ab-ba"), 3000, 500, 12,
                       {"gamma": 0.0, "alpha": 0.2}, {}),
    "mne": BaselineEnv("M-NE", ("mne-imbalanced", "mne-balanced"), 3000, 500, 12,
                       {"gamma": 0.0, "alpha": 1.0}, {"inspo": {"beta": 1.0}}),
    "bridge": BaselineEnv("Bridge", BRIDGE_DATASETS, 10000, 2000, 10, {"eval_episode_limit": BRIDGE_EVAL_LIMIT}, {}),
    # SMAX: `<map>-<quality>` datasets (generated, 1000 episodes by default: see SMAX_EPISODES); the default list is
    # the one the committed table was made with, any map and quality can be named with --datasets.
    "smax": BaselineEnv("SMAX", ("2s3z-medium", "6h_vs_8z-medium"), 1000, 1000, 10, {"hidden": 64}, {}),
}
"""The environments of ``inspo reproduce baselines``; ``--env all`` runs them in this order."""

SMAX_MAPS: tuple[str, ...] = ("2s3z", "3s_vs_5z", "5m_vs_6m", "6h_vs_8z")
"""The SMAX maps of the paper, the default of ``inspo reproduce smax``."""

SMAX_METHODS: tuple[str, ...] = ("bc", "inspo")
"""The methods of ``inspo reproduce smax``, in table order."""

SMAX_DEFAULT_QUALITIES: tuple[str, ...] = ("medium", "expert", "mixed")
"""The qualities ``inspo reproduce smax`` trains on unless told otherwise."""

SMAX_SETTINGS: dict[str, Any] = {"hidden": 64}
"""`TrainConfig` fields of every SMAX run that differ from the defaults (a small network: 2 CPU cores)."""

SMAX_EPISODES = 1000
"""Episodes per generated SMAX dataset by default: the paper uses 5000; 1000 keeps generation and training within
the CPU budget this table was made with."""

_ALL_BASELINE_ENVS = ("xor", "mne", "bridge")
"""What ``baselines --env all`` runs: SMAX is left out (trained policies, and hours of CPU)."""

BASELINE_DATA_SEED = 0
"""Seed of the generated matrix-game data: every run of a dataset trains on the same data."""


# -- running many training runs -----------------------------------------------------------------------------------
def _outcome(result: dict[str, Any], cached: bool) -> dict[str, Any]:
    """What the tables need from a finished run (``TrainResult`` fields, as in its ``metrics.json``); win rates
    (SMAX) are None where the environment has none."""
    return {"final": result["final_return"], "best": result["best_return"], "behaviour": result["behaviour_return"],
            "optimum": result["optimum"], "updates_per_second": result["updates_per_second"],
            "wall_time": result["wall_time"], "curve": [[c["iteration"], c["return"]] for c in result["curve"]],
            "final_win_rate": result.get("final_win_rate"),
            "win_curve": [[c["iteration"], c.get("win_rate")] for c in result["curve"]], "cached": cached}


def _train_one(config: dict[str, Any]) -> dict[str, Any]:
    """Train one config (in a worker process or inline) and keep what the tables need."""
    return _outcome(asdict(train(TrainConfig.from_dict(config))), cached=False)


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    """What a cached run must match: the config with every field (a field added to `TrainConfig` after the run
    was made takes its default), without its output folder, and with its dataset as an absolute path."""
    full = TrainConfig.from_dict(config).to_dict()
    return {**{k: v for k, v in full.items() if k != "out"}, "dataset": str(Path(full["dataset"]).resolve())}


def _cached(config: dict[str, Any]) -> dict[str, Any] | None:
    """The outcome of the finished run in ``config["out"]`` if it was made with the same settings, else None."""
    try:
        saved = json.loads((Path(config["out"]) / "metrics.json").read_text())
        same = _settings(saved["config"]) == _settings(config)
    except (FileNotFoundError, json.JSONDecodeError, KeyError):  # never run, stopped while writing, not a run
        return None
    except ValueError:  # a field TrainConfig no longer has: made by other code
        return None
    return _outcome(saved, cached=True) if same else None


def _run_all(configs: Sequence[dict[str, Any]], jobs: int, on_done: Callable[[int, dict[str, Any]], None]
             ) -> list[dict[str, Any]]:
    """Run every config, ``jobs`` at a time, reading finished ones from the run cache instead; ``on_done(index,
    outcome)`` is called as each one is done."""
    outcomes: list[dict[str, Any]] = [{} for _ in configs]
    todo = []
    for k, cfg in enumerate(configs):
        cached = _cached(cfg)
        if cached is None:
            todo.append(k)
        else:
            outcomes[k] = cached
            on_done(k, cached)
    if jobs <= 1:
        for k in todo:
            outcomes[k] = _train_one(configs[k])
            on_done(k, outcomes[k])
        return outcomes
    # spawn, not fork: forking a process whose torch thread pools already started can deadlock the child.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_train_one, configs[k]): k for k in todo}
        for future in as_completed(futures):
            k = futures[future]
            outcomes[k] = future.result()
            on_done(k, outcomes[k])
    return outcomes


class _Progress:
    """One line per finished run on stderr, only when stderr is a terminal (tables go to stdout)."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.enabled = sys.stderr.isatty()

    def __call__(self, label: str, outcome: dict[str, Any]) -> None:
        self.done += 1
        if self.enabled:
            elapsed = time.perf_counter() - self.start
            speed = "cached" if outcome["cached"] else f"{outcome['updates_per_second']:.0f} updates/s"
            print(f"[{self.done}/{self.total} {elapsed:6.0f}s] {label}: final {outcome['final']:.4f}, "
                  f"best {outcome['best']:.4f}, {speed}", file=sys.stderr, flush=True)


# -- statistics and output ----------------------------------------------------------------------------------------
def _stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (0 for a single value) of per-seed results."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "values": arr.tolist()}


def _pm(stats: dict[str, Any] | None, digits: int = 3) -> str:
    if stats is None:
        return "n/a"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename, so a reader never sees a half-written table."""
    atomic_write(path, lambda fh: fh.write(text.encode()))


def _provenance(command: str, seeds: Sequence[int], wall_time: float) -> dict[str, Any]:
    return {"command": command, "seeds": list(seeds), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "wall_time_s": round(wall_time, 1), "cpu_count": os.cpu_count()}


_HYPER = ("alpha", "beta", "gamma", "lr_policy", "lr_critic", "batch_size", "hidden", "polyak", "rho_max", "z_max",
          "weighting", "order", "local_critic_steps")


def _hyper(config: dict[str, Any]) -> str:
    """The training hyper-parameters that shape a result, as ``name=value`` pairs for a table's header."""
    return ", ".join(f"{name}={config[name]}" for name in _HYPER)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _publish(out: Path, name: str, markdown: str, record: dict[str, Any],
             plot: Callable[[dict[str, Any], Path], None]) -> None:
    """Write ``<name>.json``, the figure ``<name>.png`` (``plot(record, path)``) and ``<name>.md`` (which shows the
    figure), and print the markdown. Without matplotlib the tables are still written, the figure is not."""
    _write_atomic(out / f"{name}.json", json.dumps(record, indent=2) + "\n")
    try:
        plot(record, out / f"{name}.png")
        markdown += f"\n![{name}]({name}.png)\n"
    except report.MatplotlibMissing:
        print(f"inspo reproduce: {name}.png not drawn (matplotlib is missing: {report.INSTALL_HINT})",
              file=sys.stderr)
    _write_atomic(out / f"{name}.md", markdown)
    print(markdown, end="")


def _cache_note(outcomes: Sequence[dict[str, Any]], cache: Path) -> str:
    """How many runs the run cache supplied, for a table's header."""
    cached = sum(o["cached"] for o in outcomes)
    return f"{cached} of {len(outcomes)} runs read from the run cache `{cache}`" if cached else "no run cached"


# -- matrix games -------------------------------------------------------------------------------------------------
def _cached_dataset(path: Path, build: Callable[[], Any]) -> Path:
    """``path`` if it holds a valid dataset, else ``build()`` saved there (a corrupt cache is rebuilt)."""
    try:
        load_dataset(path)
        return path
    except DatasetError:
        return save_dataset(build(), path, overwrite=True)


def reproduce_matrix(seeds: Sequence[int], iters: int, bc_steps: int, episodes: int, out: Path, jobs: int = 1,
                     command: str = "") -> dict[str, Any]:
    """Build the matrix-game table; write ``matrix.md`` and ``matrix.json`` to ``out``; return the record.

    Args:
        seeds: one tabular solve and one neural run (on data sampled with the same seed) per seed and row.
        iters: InSPO iterations per neural run (after ``bc_steps`` steps of behaviour cloning).
        episodes: one-step episodes per generated dataset.
        jobs: neural runs in parallel (worker processes).
        command: the command line recorded in the table's header.
    """
    started = time.perf_counter()
    cache = out / "cache"
    configs, keys = [], []
    for case in MATRIX_CASES:
        for seed in seeds:
            data = _cached_dataset(cache / "data" / f"{case.preset}-n{episodes}-seed{seed}",
                                   lambda: generate_matrix(case.game, case.preset, episodes, seed))
            run = cache / "runs" / "matrix" / f"{case.preset}-{case.order}-a{case.alpha}-b{case.beta}" \
                f"{'' if case.use_rho else '-norho'}" / f"seed{seed}"
            # gamma = 0: each one-step episode terminates, so a discount would only slow the critic down.
            configs.append(TrainConfig(dataset=str(data), gamma=0.0, alpha=case.alpha, beta=case.beta,
                                       order=case.order, use_rho=case.use_rho, iters=iters, bc_steps=bc_steps,
                                       eval_every=max(iters // 10, 1), seed=seed, out=str(run)).to_dict())
            keys.append((case, seed))
    progress = _Progress(len(configs))
    outcomes = _run_all(configs, jobs, lambda k, o: progress(
        f"{keys[k][0].game} {keys[k][0].data} {keys[k][0].setting} seed {keys[k][1]}", o))

    rows = []
    for c, case in enumerate(MATRIX_CASES):
        runs = outcomes[c * len(seeds):(c + 1) * len(seeds)]
        weights = np.asarray(MATRIX_PRESETS[case.preset][1], dtype=np.float64)
        tabular = None
        if case.use_rho:  # the exact solver has no rho-disabled variant
            tabular = _stats([solve(_PAYOFFS[case.game], weights, case.alpha, case.beta, TABULAR_ITERS,
                                    case.order, seed)[1] for seed in seeds])
        rows.append({**asdict(case), "config": configs[c * len(seeds)], "tabular": tabular,
                     "neural_final": _stats([r["final"] for r in runs]),
                     "neural_best": _stats([r["best"] for r in runs]),
                     "data_return": _stats([r["behaviour"] for r in runs]),
                     "updates_per_second": _stats([r["updates_per_second"] for r in runs])})

    record = {**_provenance(command, seeds, time.perf_counter() - started),
              "neural": {"iters": iters, "bc_steps": bc_steps, "episodes": episodes}, "tabular_iters": TABULAR_ITERS,
              "rows": rows}
    table = _markdown_table(
        ["game, data", "setting", "SPEC J", "tabular J", "neural J (final)", "neural J (best)", "data J"],
        [[f"{r['game'].upper() if r['game'] == 'xor' else 'M-NE'}, {r['data']}", r["setting"],
          "n/a" if r["spec_j"] is None else f"{r['spec_j']:.2f}", _pm(r["tabular"]), _pm(r["neural_final"]),
          _pm(r["neural_best"]), _pm(r["data_return"], 2)] for r in rows])
    ups = np.mean([r["updates_per_second"]["mean"] for r in rows])
    markdown = f"""# Matrix games: SPEC section 3, exact tabular solver vs neural trainer

Made by `{command}` on {record['date']} (torch {record['torch']}, {record['cpu_count']} CPUs, \
{record['wall_time_s']:.0f} s wall time, {ups:.0f} InSPO updates/s on average; {_cache_note(outcomes, cache)}).

J is the expected team payoff of the final product policy, mean ± std (ddof=1) over seeds {list(seeds)}.
*Tabular*: `inspo.tabular.solve`, {TABULAR_ITERS} iterations on the exact joint-action distribution (the seed sets
the initial noise and the random orders). *Neural*: `inspo.train`, {bc_steps} behaviour-cloning steps then {iters}
InSPO iterations, on {episodes} one-step episodes sampled from the same distribution with the run's seed; *best* is
the best of the evaluations made every {max(iters // 10, 1)} iterations. *Data J* is the mean return of the sampled
data. "sequential" is a fresh random agent order each iteration. Neural hyper-parameters: the row's alpha, beta,
order and rho setting, otherwise {_hyper(configs[0])} (the `TrainConfig` defaults, except gamma = 0).

{table}
"""
    _publish(out, "matrix", markdown, record, report.plot_matrix)
    return record


# -- Bridge -------------------------------------------------------------------------------------------------------
def _bridge_buffer(name: str, data_root: Path, cache: Path) -> Path:
    """A Bridge buffer in the project format: the repository's shipped copy (``data/<name>``) where there is one,
    else ``data_root/<name>`` imported into ``cache/data`` once."""
    shipped = SHIPPED_DATA / name
    if (shipped / "manifest.json").is_file():
        return shipped
    src = data_root / name
    if not src.is_dir():
        raise FileNotFoundError(f"Bridge buffer {src} not found (pass --data with the folder of the AlberDICE "
                                "buffers)")
    return _cached_dataset(cache / "data" / name, lambda: import_pymarl(src, "bridge-alberdice"))


def reproduce_bridge(data_root: Path, datasets: Sequence[str], seeds: Sequence[int], iters: int, bc_steps: int,
                     eval_episodes: int, out: Path, jobs: int = 1, command: str = "") -> dict[str, Any]:
    """Build the Bridge table (InSPO and BC per dataset); write ``bridge.md`` and ``bridge.json``; return the record.

    Args:
        data_root: the folder holding the PyMARL buffers (``data/alberdice``).
        datasets: buffer names under ``data_root``, imported once into ``out/cache/data``.
        iters: InSPO iterations; ``bc_steps`` behaviour-cloning steps for both methods.
        eval_episodes: sampled evaluation episodes (step limit 20) per evaluation.
    """
    started = time.perf_counter()
    cache = out / "cache"
    configs, keys = [], []
    for name in datasets:
        data = _bridge_buffer(name, data_root, cache)
        for method in ("inspo", "bc"):
            for seed in seeds:
                run = cache / "runs" / "bridge" / name / method / f"seed{seed}"
                # BC gets the same settings (lr_policy is also the cloning rate): it is InSPO's starting point.
                configs.append(TrainConfig(dataset=str(data), algo=method, iters=iters, bc_steps=bc_steps,
                                           eval_every=max(iters // 10, 1), eval_episodes=eval_episodes,
                                           eval_episode_limit=BRIDGE_EVAL_LIMIT, seed=seed, out=str(run),
                                           **BRIDGE_SETTINGS).to_dict())
                keys.append((name, method, seed))
    progress = _Progress(len(configs))
    outcomes = _run_all(configs, jobs, lambda k, o: progress(" ".join(map(str, keys[k])), o))

    optimum = bridge_optimum(BRIDGE_EVAL_LIMIT)
    rows = []
    for name in datasets:
        for method in ("inspo", "bc"):
            runs = [o for (n, m, _), o in zip(keys, outcomes) if (n, m) == (name, method)]
            rows.append({"dataset": name, "method": method, "label": METHOD_NAMES[method],
                         "final": _stats([r["final"] for r in runs]), "best": _stats([r["best"] for r in runs]),
                         "data_return": runs[0]["behaviour"], "optimum": optimum,
                         "updates_per_second": _stats([r["updates_per_second"] for r in runs]),
                         "wall_time_s": _stats([r["wall_time"] for r in runs])})

    record = {**_provenance(command, seeds, time.perf_counter() - started),
              "inspo_config": configs[0],
              "eval": {"episodes": eval_episodes, "step_limit": BRIDGE_EVAL_LIMIT, "sampled": True}, "rows": rows}
    table = _markdown_table(
        ["data", "method", "final return", "best return", "data return (limit 50)",
         f"optimum (limit {BRIDGE_EVAL_LIMIT})", "updates/s"],
        [[r["dataset"], r["label"], _pm(r["final"]), _pm(r["best"]),
          f"{r['data_return']:.3f}", f"{r['optimum']:.4f}",
          f"{r['updates_per_second']['mean']:.0f}" if r["method"] == "inspo" else "-"] for r in rows])
    every = max(iters // 10, 1)
    markdown = f"""# Bridge (AlberDICE variant): InSPO and behaviour cloning

Made by `{command}` on {record['date']} (torch {record['torch']}, {record['cpu_count']} CPUs, \
{record['wall_time_s']:.0f} s wall time; {_cache_note(outcomes, cache)}).

- Return: undiscounted team return over {eval_episodes} sampled episodes with step limit {BRIDGE_EVAL_LIMIT}, \
mean ± std (ddof=1) over seeds {list(seeds)}.
- InSPO: {bc_steps} behaviour-cloning steps, then {iters} iterations; {_hyper(configs[0])} \
(the `TrainConfig` defaults except {", ".join(BRIDGE_SETTINGS)}).
- BC: the same {bc_steps} cloning steps alone (InSPO's starting point).
- Best: the best of the evaluations made every {every} iterations, selected on the evaluation episodes themselves \
(optimistic).
- Data return: mean over the buffer's episodes, recorded with step limit 50. Optimum: dynamic programming \
(`inspo.envs.bridge.bridge_optimum`).

{table}
"""
    _publish(out, "bridge", markdown, record, report.plot_bridge)
    return record


# -- baselines ----------------------------------------------------------------------------------------------------
def _best_after_start(curve: Sequence[Sequence[float]]) -> float:
    """Best evaluated return once the learner has started. Iteration 0 is the policy before any update (behaviour
    cloning, or CFCQL's randomly initialised utilities, which may pick the XOR optimum by chance); behaviour
    cloning has only that one."""
    returns = [r for it, r in curve if it > 0] or [r for _, r in curve]
    return max(returns)


def _baseline_dataset(env: str, name: str, episodes: int, data_root: Path, cache: Path) -> Path:
    if env == "bridge":
        return _bridge_buffer(name, data_root, cache)
    if env == "smax":
        map_name, quality = _smax_dataset_name(name)
        return _smax_dataset(map_name, quality, episodes, cache, None)
    game = MATRIX_PRESETS[name][0]
    return _cached_dataset(cache / "data" / f"{name}-n{episodes}-seed{BASELINE_DATA_SEED}",
                           lambda: generate_matrix(game, name, episodes, BASELINE_DATA_SEED))


def baseline_configs(env: str, datasets: Sequence[str], seeds: Sequence[int], cache: Path, iters: int,
                     bc_steps: int, episodes: int, eval_episodes: int, data_root: Path
                     ) -> tuple[list[dict[str, Any]], list[tuple[str, str, int]]]:
    """The ``TrainConfig`` dicts of ``inspo reproduce baselines`` for one environment (datasets are built or
    imported into ``cache`` as needed), and their ``(dataset, method, seed)``, datasets outermost."""
    spec = BASELINE_ENVS[env]
    configs, keys = [], []
    for name in datasets:
        data = _baseline_dataset(env, name, episodes, data_root, cache)
        for method in BASELINE_METHODS:
            for seed in seeds:
                values = {**spec.settings, **spec.per_method.get(method, {})}
                if env in ("bridge", "smax"):
                    values["eval_episodes"] = eval_episodes
                configs.append(TrainConfig(dataset=str(data), algo=method, iters=iters, bc_steps=bc_steps,
                                           eval_every=max(iters // spec.evaluations, 1), seed=seed,
                                           out=str(cache / "runs" / "baselines" / name / method / f"seed{seed}"),
                                           **values).to_dict())
                keys.append((name, method, seed))
    return configs, keys


def reproduce_baselines(env: str, seeds: Sequence[int], out: Path, iters: int | None = None,
                        bc_steps: int | None = None, datasets: Sequence[str] | None = None, episodes: int = 5000,
                        eval_episodes: int = 100, data_root: Path = Path("data/alberdice"), jobs: int = 1,
                        command: str = "") -> dict[str, Any]:
    """Train every method of :data:`BASELINE_METHODS` on the datasets of one environment of :data:`BASELINE_ENVS`;
    write ``baselines_<env>.md``, ``.json`` and ``.png`` to ``out``; return the record.

    Args:
        env: ``xor``, ``mne`` or ``bridge``.
        iters, bc_steps: the budget of every run (None: the environment's default).
        datasets: a subset of the environment's datasets (None: all of them).
        episodes: matrix games: one-step episodes per generated dataset (seed 0).
        eval_episodes: Bridge: sampled episodes per evaluation (the matrix games are evaluated exactly).
        data_root: Bridge: the folder of the AlberDICE buffers that are not shipped in ``data/``.
        jobs: runs in parallel (worker processes).
        command: the command line recorded in the table's header.
    """
    if env not in BASELINE_ENVS:
        raise ValueError(f"unknown baselines environment {env!r}; expected one of {', '.join(BASELINE_ENVS)}")
    spec = BASELINE_ENVS[env]
    datasets = list(spec.datasets if datasets is None else datasets)
    unknown = [name for name in datasets if name not in spec.datasets and not (env == "smax" and _is_smax_name(name))]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a dataset of {env}; expected some of {', '.join(spec.datasets)}")
    iters = spec.iters if iters is None else iters
    bc_steps = spec.bc_steps if bc_steps is None else bc_steps
    every = max(iters // spec.evaluations, 1)
    started = time.perf_counter()
    cache = out / "cache"
    configs, keys = baseline_configs(env, datasets, seeds, cache, iters, bc_steps, episodes, eval_episodes, data_root)
    progress = _Progress(len(configs))
    outcomes = _run_all(configs, jobs, lambda k, o: progress(" ".join(map(str, keys[k])), o))

    rows = []
    for name in datasets:
        for method in BASELINE_METHODS:
            runs = [(cfg, o) for cfg, (n, m, _), o in zip(configs, keys, outcomes) if (n, m) == (name, method)]
            rows.append({"dataset": name, "method": method, "label": METHOD_NAMES[method],
                         "final": _stats([o["final"] for _, o in runs]),
                         "best": _stats([_best_after_start(o["curve"]) for _, o in runs]),
                         "data_return": runs[0][1]["behaviour"], "optimum": runs[0][1]["optimum"],
                         **(_win_stats(runs[0][0]["dataset"], [o for _, o in runs]) if env == "smax" else {}),
                         "wall_time_s": _stats([o["wall_time"] for _, o in runs]),
                         "curves": [o["curve"] for _, o in runs],
                         "config": {k: v for k, v in runs[0][0].items() if k not in ("seed", "out")}})

    record = {**_provenance(command, seeds, time.perf_counter() - started), "env": env, "env_title": spec.title,
              "methods": list(BASELINE_METHODS), "iters": iters, "bc_steps": bc_steps, "eval_every": every,
              "rows": rows}
    if env == "bridge":
        evaluation = (f"{eval_episodes} sampled episodes of at most {BRIDGE_EVAL_LIMIT} steps, every {every} "
                      "iterations; the data return is over the buffers' episodes of at most 50 steps")
    elif env == "smax":
        evaluation = (f"{eval_episodes} sampled SMAX episodes every {every} iterations (win rate: fraction won; "
                      f"best win rate: the highest after the start); data: {episodes} episodes per dataset "
                      f"generated with seed {BASELINE_DATA_SEED} (`inspo.data.generate_smax`)")
    else:
        evaluation = (f"the exact expected payoff of the product policy, every {every} iterations; data: {episodes} "
                      f"one-step episodes sampled with seed {BASELINE_DATA_SEED} (`inspo.data.generate_matrix`)")
    per_method = "; ".join(f"{METHOD_NAMES[m]}: " + ", ".join(f"{k}={v}" for k, v in extra.items())
                           for m, extra in spec.per_method.items())
    sections = []
    for name in datasets:
        mine = [r for r in rows if r["dataset"] == name]
        optimum = mine[0]["optimum"]
        if env == "smax":
            sections.append(f"## {name}\n\ndata return {mine[0]['data_return']:.3f}, data win rate "
                            f"{mine[0]['data_win_rate']:.3f}\n\n" + _markdown_table(
                                ["method", "final return", "final win rate", "best return", "best win rate", "seeds",
                                 "wall time per run (s)"],
                                [[r["label"], _pm(r["final"]), _pm(r["final_win"]), _pm(r["best"]),
                                  _pm(r["best_win"]), str(len(seeds)), f"{r['wall_time_s']['mean']:.0f}"]
                                 for r in mine]))
            continue
        sections.append(f"## {name}\n\ndata return {mine[0]['data_return']:.3f}, optimum "
                        f"{'n/a' if optimum is None else f'{optimum:.4f}'}\n\n" + _markdown_table(
                            ["method", "final return", "best return", "seeds", "wall time per run (s)"],
                            [[r["label"], _pm(r["final"]), _pm(r["best"]), str(len(seeds)),
                              f"{r['wall_time_s']['mean']:.0f}"] for r in mine]))
    sections_text = "\n\n".join(sections)
    markdown = f"""# Baselines on {spec.title}: BC, MA-ICQ, OMIGA, CFCQL and InSPO in one trainer

Made by `{command}` on {record['date']} (torch {record['torch']}, {record['cpu_count']} CPUs, \
{record['wall_time_s']:.0f} s wall time; {_cache_note(outcomes, cache)}).

- Return: mean ± std (ddof=1) over seeds {list(seeds)} of the final policy and of the best evaluated policy after \
the learner started (iteration 0, the policy before any update, is left out of *best*); evaluation: {evaluation}.
- Every run: {bc_steps} behaviour-cloning steps (the BC row; the starting point of the InSPO, MA-ICQ and OMIGA \
actors), then {iters} iterations; {_hyper(configs[0])}; {per_method or "no method-specific setting"}. The \
baselines' own settings are the `TrainConfig` defaults (MA-ICQ critic temperature {configs[0]['icq_critic_temp']}, \
CFCQL cql_alpha={configs[0]['cql_alpha']}, agent-weight temperature {configs[0]['cfcql_lambda_temp']}, policy \
temperature {configs[0]['cfcql_policy_temp']}).

{sections_text}
"""
    _publish(out, f"baselines_{env}", markdown, record, report.plot_baselines)
    return record


# -- SMAX ---------------------------------------------------------------------------------------------------------
def _is_smax_name(name: str) -> bool:
    """Whether ``name`` reads ``<map>-<quality>`` with a known quality."""
    try:
        _smax_dataset_name(name)
    except ValueError:
        return False
    return True


def _smax_dataset_name(name: str) -> tuple[str, str]:
    """``2s3z-medium-replay`` -> (``2s3z``, ``medium-replay``)."""
    for quality in sorted(SMAX_QUALITIES, key=len, reverse=True):  # medium-replay before medium
        if name.endswith(f"-{quality}") and len(name) > len(quality) + 1:
            return name[: -len(quality) - 1], quality
    raise ValueError(f"SMAX dataset name {name!r}: expected <map>-<quality> with a quality among "
                     f"{', '.join(SMAX_QUALITIES)}")


def _smax_dataset(map_name: str, quality: str, episodes: int, cache: Path, policies: Path | None) -> Path:
    """The cached SMAX dataset of a map and quality (generated with seed ``BASELINE_DATA_SEED``). Online qualities
    are keyed by the SHA-256 of the policies' ``snapshots.json`` too, so new policies make new data."""
    import hashlib

    from inspo.data.smax import ONLINE_QUALITIES, policy_folder

    env_name = f"smax:{map_name}"
    policy, tag = None, ""
    if quality in ONLINE_QUALITIES:
        policy = policy_folder(env_name, None if policies is None else policies / map_name)
        index = policy / "snapshots.json"
        if not index.is_file():
            raise FileNotFoundError(f"{policy} holds no online-trained policy for {env_name} ({index} is missing); "
                                    f"make one with `inspo online train --env {env_name} --out {policy}`")
        tag = "-p" + hashlib.sha256(index.read_bytes()).hexdigest()[:10]
    return _cached_dataset(cache / "data" / "smax" / f"{map_name}-{quality}-n{episodes}-seed{BASELINE_DATA_SEED}{tag}",
                           lambda: generate_smax(env_name, quality, episodes, BASELINE_DATA_SEED, policy=policy))


def _smax_available(map_name: str, quality: str, policies: Path | None) -> bool:
    """Whether the data of ``quality`` can be made for the map (scripted, or a trained policy exists)."""
    from inspo.data.smax import ONLINE_QUALITIES, policy_folder

    if quality not in ONLINE_QUALITIES:
        return True

    try:
        folder = policy_folder(f"smax:{map_name}", None if policies is None else policies / map_name)
    except ValueError:
        return False
    return (folder / "snapshots.json").is_file()


def _best_win(win_curve: Sequence[Sequence[Any]]) -> float:
    """Highest evaluated win rate once the learner has started (as :func:`_best_after_start`)."""
    wins = [w for it, w in win_curve if it > 0 and w is not None] or [w for _, w in win_curve if w is not None]
    return max(wins)


def _win_stats(dataset: str, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Win-rate columns of a SMAX row: final and best of the runs, and the behaviour policy's (manifest)."""
    behaviour = load_dataset(dataset, verify=False).manifest["behaviour"]
    return {"final_win": _stats([o["final_win_rate"] for o in runs]),
            "best_win": _stats([_best_win(o["win_curve"]) for o in runs]),
            "data_win_rate": behaviour["win_rate"], "data_behaviour": behaviour}


def reproduce_smax(maps: Sequence[str], qualities: Sequence[str], seeds: Sequence[int], iters: int, bc_steps: int,
                   episodes: int, eval_episodes: int, out: Path, policies: Path | None = None, jobs: int = 1,
                   evaluations: int = 10, command: str = "") -> dict[str, Any]:
    """Train InSPO and behaviour cloning on SMAX datasets of every map and quality; write ``smax.md``,
    ``smax.json`` and ``smax.png`` to ``out``; return the record.

    Args:
        maps: SMAX map names (``2s3z``, ...).
        qualities: data qualities (keys of :data:`inspo.data.SMAX_QUALITIES`); an online quality whose map has no
            trained policy is left out of the table, which says so.
        iters, bc_steps: the budget of every run (BC: the cloning steps alone).
        episodes: episodes per generated dataset (seed ``BASELINE_DATA_SEED``).
        eval_episodes: sampled episodes per evaluation (``evaluations`` per run).
        policies: a folder of ``<map>/`` folders written by ``inspo online train`` (None: ``data/smax_policies``).
        jobs: runs in parallel (worker processes).
        command: the command line recorded in the table's header.
    """
    unknown = [q for q in qualities if q not in SMAX_QUALITIES]
    if unknown:
        raise ValueError(f"unknown SMAX quality {', '.join(map(repr, unknown))}; expected some of "
                         f"{', '.join(SMAX_QUALITIES)}")
    started = time.perf_counter()
    cache = out / "cache"
    every = max(iters // evaluations, 1)
    configs, keys, missing = [], [], []
    for map_name in maps:
        for quality in qualities:
            if not _smax_available(map_name, quality, policies):
                missing.append(f"{map_name}-{quality}")
                continue
            data = _smax_dataset(map_name, quality, episodes, cache, policies)
            for method in SMAX_METHODS:
                for seed in seeds:
                    configs.append(TrainConfig(
                        dataset=str(data), algo=method, iters=iters, bc_steps=bc_steps, eval_every=every,
                        eval_episodes=eval_episodes, seed=seed, **SMAX_SETTINGS,
                        out=str(cache / "runs" / "smax" / f"{map_name}-{quality}" / method / f"seed{seed}")).to_dict())
                    keys.append((map_name, quality, method, seed))
    if not configs:
        raise ValueError(f"no SMAX dataset can be made: {', '.join(missing)} need online-trained policies "
                         f"(`inspo online train`, then --policies DIR)")
    progress = _Progress(len(configs))
    outcomes = _run_all(configs, jobs, lambda k, o: progress(" ".join(map(str, keys[k])), o))

    rows = []
    for map_name in maps:
        for quality in qualities:
            for method in SMAX_METHODS:
                runs = [(cfg, o) for cfg, key, o in zip(configs, keys, outcomes) if key[:3] == (map_name, quality,
                                                                                                 method)]
                if not runs:
                    continue
                rows.append({"map": map_name, "quality": quality, "dataset": f"{map_name}-{quality}",
                             "method": method, "label": METHOD_NAMES[method],
                             "final": _stats([o["final"] for _, o in runs]),
                             "best": _stats([_best_after_start(o["curve"]) for _, o in runs]),
                             "data_return": runs[0][1]["behaviour"],
                             **_win_stats(runs[0][0]["dataset"], [o for _, o in runs]),
                             "wall_time_s": _stats([o["wall_time"] for _, o in runs]),
                             "curves": [o["curve"] for _, o in runs], "win_curves": [o["win_curve"] for _, o in runs],
                             "config": {k: v for k, v in runs[0][0].items() if k not in ("seed", "out")}})
    record = {**_provenance(command, seeds, time.perf_counter() - started), "maps": list(maps),
              "qualities": list(qualities), "methods": list(SMAX_METHODS), "iters": iters, "bc_steps": bc_steps,
              "episodes": episodes, "eval_episodes": eval_episodes, "eval_every": every, "missing": missing,
              "rows": rows}

    def source(row: dict[str, Any]) -> str:
        b = row["data_behaviour"]
        if b.get("kind") != "smax-online":
            return row["quality"]
        files = [c["file"].rsplit("/", 1)[-1] if c else "heuristic" for c in b["checkpoints"]]
        note = f"{', '.join(files[:3])}{f', ... {files[-1]}' if len(files) > 3 else ''}"
        return f"{row['quality']} ({note})"

    table = _markdown_table(
        ["map", "data", "method", "data return", "data win rate", "final return", "final win rate", "best return",
         "best win rate"],
        [[r["map"], source(r), r["label"], f"{r['data_return']:.3f}", f"{r['data_win_rate']:.3f}", _pm(r["final"]),
          _pm(r["final_win"]), _pm(r["best"]), _pm(r["best_win"])] for r in rows])
    missing_note = (f"\n- Not in the table (no online-trained policy for the map): {', '.join(missing)}."
                    if missing else "")
    markdown = f"""# SMAX: InSPO and behaviour cloning on generated datasets

Made by `{command}` on {record['date']} (torch {record['torch']}, {record['cpu_count']} CPUs, \
{record['wall_time_s']:.0f} s wall time; {_cache_note(outcomes, cache)}).

- Data: {episodes} episodes per dataset (the paper: 5000), generated with seed {BASELINE_DATA_SEED} by \
`inspo.data.generate_smax`; the online qualities are played by the MAPPO snapshots of `inspo online train` (the \
files named in the data column, from {'`data/smax_policies/<map>`' if policies is None else f'`{policies}/<map>`'}). \
Data return and win rate: the behaviour policy's own, over the recorded episodes.
- Return: undiscounted team return (SMAX: damage dealt, normalised to 1 per enemy team, plus 1 for a win); win \
rate: fraction of episodes won; both over {eval_episodes} sampled episodes per evaluation, mean ± std (ddof=1) \
over seeds {list(seeds)}.
- InSPO: {bc_steps} behaviour-cloning steps, then {iters} iterations; {_hyper(configs[0])}. BC: the same \
{bc_steps} cloning steps alone.
- Best: the highest return (win rate) of the evaluations made every {every} iterations after the learner started, \
selected on the evaluation episodes themselves (optimistic).{missing_note}

{table}
"""
    _publish(out, "smax", markdown, record, report.plot_smax)
    return record


# -- command line -------------------------------------------------------------------------------------------------
def _seeds(text: str) -> list[int]:
    """``3`` means seeds 0, 1, 2; ``4,7`` means exactly those."""
    if "," in text:
        return [int(s) for s in text.split(",")]
    count = int(text)
    if count < 1:
        raise argparse.ArgumentTypeError(f"--seeds needs at least one seed, got {text}")
    return list(range(count))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _command(args: argparse.Namespace, iters: int, bc_steps: int, env: str | None = None) -> str:
    """The command line that makes one table (for ``baselines --env all``, the one of environment ``env``)."""
    seeds = ",".join(map(str, args.seeds)) if args.seeds != list(range(len(args.seeds))) else str(len(args.seeds))
    parts = ["inspo reproduce", args.suite] + (["--env", env] if env else [])
    parts += ["--seeds", seeds, "--iters", str(iters), "--bc-steps", str(bc_steps)]
    if args.suite == "matrix" or (env is not None and env != "bridge"):
        parts += ["--episodes", str(args.episodes)]
    if args.suite != "matrix" and env not in ("xor", "mne"):
        parts += ["--eval-episodes", str(args.eval_episodes)]
    if args.datasets is not None or args.suite == "bridge":
        parts += ["--datasets", *(args.datasets or BRIDGE_DATASETS)]
    return " ".join(parts + ["--out", str(args.out)])


_DEFAULTS = {"matrix": {"iters": 2000, "bc_steps": 1000}, "bridge": {"iters": 10000, "bc_steps": 2000}}
"""Per-suite budgets used when ``--iters`` / ``--bc-steps`` are not given (baselines: per environment, in
:data:`BASELINE_ENVS`)."""


def _cmd_reproduce(args: argparse.Namespace) -> int:
    if (args.env is None) != (args.suite != "baselines"):
        raise ValueError(f"--env (one of {', '.join(_ALL_BASELINE_ENVS)}, all) is required by the baselines suite "
                         f"and only by it (or --env smax, which all leaves out: it needs trained SMAX policies and "
                         f"far more CPU time); got suite {args.suite!r} with --env {args.env}")
    if args.suite == "smax":
        iters = 2000 if args.iters is None else args.iters
        bc_steps = 1000 if args.bc_steps is None else args.bc_steps
        episodes = SMAX_EPISODES if args.episodes is None else args.episodes
        command = (f"inspo reproduce smax --maps {' '.join(args.maps)} --qualities {' '.join(args.qualities)} "
                   f"--seeds {','.join(map(str, args.seeds))} --iters {iters} --bc-steps {bc_steps} --episodes "
                   f"{episodes} --eval-episodes {args.eval_episodes}"
                   + (f" --policies {args.policies}" if args.policies else "") + f" --out {args.out}")
        reproduce_smax(args.maps, args.qualities, args.seeds, iters, bc_steps, episodes, args.eval_episodes,
                       args.out, args.policies, args.jobs, command=command)
        return 0
    if args.suite == "baselines":
        envs = list(_ALL_BASELINE_ENVS) if args.env == "all" else [args.env]
        if args.datasets is not None:  # with several environments, each takes its own datasets from the list
            known = {name for env in envs for name in BASELINE_ENVS[env].datasets}
            unknown = [name for name in args.datasets if name not in known
                       and not ("smax" in envs and _is_smax_name(name))]
            if unknown:
                raise ValueError(f"{', '.join(unknown)}: not a dataset of --env {args.env}; expected some of "
                                 f"{', '.join(sorted(known))}" + (" or <map>-<quality>" if "smax" in envs else ""))
            envs = [env for env in envs if env == "smax" or set(BASELINE_ENVS[env].datasets) & set(args.datasets)]
        for env in envs:
            spec = BASELINE_ENVS[env]
            iters = spec.iters if args.iters is None else args.iters
            bc_steps = spec.bc_steps if args.bc_steps is None else args.bc_steps
            datasets = None if args.datasets is None else [
                d for d in args.datasets if d in spec.datasets or (env == "smax" and _is_smax_name(d))]
            episodes = (SMAX_EPISODES if env == "smax" else 5000) if args.episodes is None else args.episodes
            args_episodes, args.episodes = args.episodes, episodes  # _command records the value used
            command = _command(args, iters, bc_steps, env)
            args.episodes = args_episodes
            reproduce_baselines(env, args.seeds, args.out, iters, bc_steps, datasets, episodes,
                                args.eval_episodes, args.data, args.jobs, command)
        return 0
    iters = _DEFAULTS[args.suite]["iters"] if args.iters is None else args.iters
    bc_steps = _DEFAULTS[args.suite]["bc_steps"] if args.bc_steps is None else args.bc_steps
    command = _command(args, iters, bc_steps)
    if args.suite == "matrix":
        args.episodes = 5000 if args.episodes is None else args.episodes
        command = _command(args, iters, bc_steps)
        reproduce_matrix(args.seeds, iters, bc_steps, args.episodes, args.out, args.jobs, command)
    else:
        reproduce_bridge(args.data, args.datasets or list(BRIDGE_DATASETS), args.seeds, iters, bc_steps,
                         args.eval_episodes, args.out, args.jobs, command)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``inspo reproduce {matrix,bridge,baselines}`` on the CLI's sub-command parser."""
    p = sub.add_parser("reproduce", help="reproduce the known-answer tables (matrix games, Bridge, baselines, SMAX)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", choices=["matrix", "bridge", "baselines", "smax"])
    p.add_argument("--env", choices=[*BASELINE_ENVS, "all"], default=None,
                   help="baselines: the environment (all: xor, mne and bridge in turn, one table each)")
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="a count (3: seeds 0-2) or a list (4,7)")
    p.add_argument("--iters", type=_positive, default=None,
                   help="iterations per run (default: 2000 matrix, 10000 bridge; baselines: 3000 xor and mne, "
                        "10000 bridge)")
    p.add_argument("--bc-steps", type=_positive, default=None,
                   help="behaviour-cloning steps per run (default: 1000 matrix, 2000 bridge; baselines: 500 xor "
                        "and mne, 2000 bridge)")
    p.add_argument("--out", type=Path, default=Path("results"), help="folder of the tables (default: results)")
    p.add_argument("--jobs", type=_positive, default=1, help="training runs in parallel (processes)")
    p.add_argument("--episodes", type=_positive, default=None,
                   help="matrix, baselines on xor and mne: one-step episodes per dataset (default 5000); smax, "
                        f"baselines on smax: episodes per generated dataset (default {SMAX_EPISODES})")
    p.add_argument("--maps", nargs="+", default=list(SMAX_MAPS), help="smax: SMAX maps (default: the paper's four)")
    p.add_argument("--qualities", nargs="+", default=list(SMAX_DEFAULT_QUALITIES),
                   help=f"smax: data qualities (default: {' '.join(SMAX_DEFAULT_QUALITIES)}; any of "
                        f"{', '.join(SMAX_QUALITIES)})")
    p.add_argument("--policies", type=Path, default=None,
                   help="smax: folder of <map>/ folders written by inspo online train (default: data/smax_policies)")
    p.add_argument("--data", type=Path, default=Path("data/alberdice"),
                   help="bridge: folder of the AlberDICE buffers not shipped in data/ (default: "
                        "data/alberdice)")
    p.add_argument("--datasets", nargs="+", default=None,
                   help="bridge: buffer names (default: bridge_mix bridge_optimal); baselines: a subset of the "
                        "environment's datasets (default: all)")
    p.add_argument("--eval-episodes", type=_positive, default=100,
                   help="bridge, smax, baselines on bridge and smax: sampled episodes per evaluation")
    p.set_defaults(func=_cmd_reproduce)
