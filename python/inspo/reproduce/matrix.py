"""``inspo reproduce matrix``: every row of the docs/design.md section 3 table (plus the rho-disabled ablation), from
the exact
tabular solver and from the neural trainer side by side; ``matrix.md``, ``.json`` and ``.png``."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inspo.cluster import Cluster
from inspo.config import TrainConfig
from inspo.data import MATRIX_PRESETS, generate_matrix
from inspo.reproduce.plots import BarSeries, grouped_bar_chart
from inspo.reproduce.runner import (
    Progress,
    cache_note,
    cached_dataset,
    hyper,
    markdown_table,
    pm,
    provenance,
    publish,
    run_all,
    stats,
)
from inspo.tabular import MNE_PAYOFF, XOR_PAYOFF, solve

__all__ = ["MATRIX", "MATRIX_CASES", "MatrixCase", "MatrixSuite", "plot_matrix", "reproduce_matrix"]


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
    spec_j: float | None = None  # the docs/design.md section 3 value; None where the design has no entry


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


@dataclass(frozen=True)
class MatrixSuite:
    """What ``inspo reproduce matrix`` runs unless told otherwise."""

    cases: tuple[MatrixCase, ...] = MATRIX_CASES
    seeds: tuple[int, ...] = (0, 1, 2)
    iters: int = 2000  # InSPO iterations per neural run, after the behaviour cloning
    bc_steps: int = 1000
    episodes: int = 5000  # one-step episodes per generated dataset
    evaluations: int = 10  # per neural run: eval_every = iters // evaluations
    tabular_iters: int = 200  # of the exact solver, as in docs/design.md section 3


MATRIX = MatrixSuite()
"""The defaults of ``inspo reproduce matrix``."""

_PAYOFFS = {"xor": XOR_PAYOFF, "mne": MNE_PAYOFF}


def reproduce_matrix(seeds: Sequence[int], iters: int, bc_steps: int, episodes: int, out: Path,
                     jobs: int | Cluster = 1, command: str = "", suite: MatrixSuite = MATRIX,
                     populations: bool = True) -> dict[str, Any]:
    """Build the matrix-game table; write ``matrix.md`` and ``matrix.json`` to ``out``; return the record.

    Args:
        seeds: one tabular solve and one neural run (on data sampled with the same seed) per seed and row.
        iters: InSPO iterations per neural run (after ``bc_steps`` steps of behaviour cloning).
        episodes: one-step episodes per generated dataset.
        jobs: neural runs in parallel (local worker processes), or the :class:`~inspo.cluster.Cluster` to run them on.
        populations: train the runs that differ only in their seed as one population each
            (:func:`~inspo.reproduce.runner.run_all`).
        command: the command line recorded in the table's header.
        suite: the rows, the evaluations per run and the solver's iterations.
    """
    started = time.perf_counter()
    cache = out / "cache"
    every = max(iters // suite.evaluations, 1)
    configs, keys = [], []
    for case in suite.cases:
        for seed in seeds:
            data = cached_dataset(cache / "data" / f"{case.preset}-n{episodes}-seed{seed}",
                                  lambda: generate_matrix(case.game, case.preset, episodes, seed))
            run = cache / "runs" / "matrix" / f"{case.preset}-{case.order}-a{case.alpha}-b{case.beta}" \
                f"{'' if case.use_rho else '-norho'}" / f"seed{seed}"
            # gamma = 0: each one-step episode terminates, so a discount would only slow the critic down.
            configs.append(TrainConfig(dataset=str(data), gamma=0.0, alpha=case.alpha, beta=case.beta,
                                       order=case.order, use_rho=case.use_rho, iters=iters, bc_steps=bc_steps,
                                       eval_every=every, seed=seed, out=str(run)).to_dict())
            keys.append((case, seed))
    progress = Progress(len(configs))
    outcomes = run_all(configs, jobs, lambda k, o: progress(
        f"{keys[k][0].game} {keys[k][0].data} {keys[k][0].setting} seed {keys[k][1]}", o), populations,
        clones=cache / "clones")

    rows = []
    for c, case in enumerate(suite.cases):
        runs = outcomes[c * len(seeds):(c + 1) * len(seeds)]
        weights = np.asarray(MATRIX_PRESETS[case.preset][1], dtype=np.float64)
        tabular = None
        if case.use_rho:  # the exact solver has no rho-disabled variant
            tabular = stats([solve(_PAYOFFS[case.game], weights, case.alpha, case.beta, suite.tabular_iters,
                                   case.order, seed)[1] for seed in seeds])
        rows.append({**asdict(case), "config": configs[c * len(seeds)], "tabular": tabular,
                     "neural_final": stats([r["final"] for r in runs]),
                     "neural_best": stats([r["best"] for r in runs]),
                     "data_return": stats([r["behaviour"] for r in runs]),
                     "updates_per_second": stats([r["updates_per_second"] for r in runs])})

    record = {**provenance(command, seeds, time.perf_counter() - started),
              "neural": {"iters": iters, "bc_steps": bc_steps, "episodes": episodes},
              "tabular_iters": suite.tabular_iters, "rows": rows}
    table = markdown_table(
        ["game, data", "setting", "expected J", "tabular J", "neural J (final)", "neural J (best)", "data J"],
        [[f"{r['game'].upper() if r['game'] == 'xor' else 'M-NE'}, {r['data']}", r["setting"],
          "n/a" if r["spec_j"] is None else f"{r['spec_j']:.2f}", pm(r["tabular"]), pm(r["neural_final"]),
          pm(r["neural_best"]), pm(r["data_return"], 2)] for r in rows])
    ups = np.mean([r["updates_per_second"]["mean"] for r in rows])
    solver_iters = suite.tabular_iters
    markdown = f"""# Matrix games: docs/design.md section 3, exact tabular solver vs neural trainer

Made by `{command}` on {record['date']} (torch {record['torch']}, {record['cpu_count']} CPUs, \
{record['wall_time_s']:.0f} s wall time, {ups:.0f} InSPO updates/s on average; {cache_note(outcomes, cache)}).

J is the expected team payoff of the final product policy, mean ± std (ddof=1) over seeds {list(seeds)}.
*Tabular*: `inspo.tabular.solve`, {solver_iters} iterations on the exact joint-action distribution (the seed sets
the initial noise and the random orders). *Neural*: `inspo.train`, {bc_steps} behaviour-cloning steps then {iters}
InSPO iterations, on {episodes} one-step episodes sampled from the same distribution with the run's seed; *best* is
the best of the evaluations made every {every} iterations. *Data J* is the mean return of the sampled
data. "sequential" is a fresh random agent order each iteration. Neural hyper-parameters: the row's alpha, beta,
order and rho setting, otherwise {hyper(configs[0])} (the `TrainConfig` defaults, except gamma = 0).

{table}
"""
    publish(out, "matrix", markdown, record, plot_matrix)
    return record


def plot_matrix(record: dict[str, Any], path: str | Path) -> None:
    """``matrix.png`` of ``inspo reproduce matrix``: tabular and neural J per row, and the expected value."""
    rows = record["rows"]
    groups = [f"{'XOR' if r['game'] == 'xor' else 'M-NE'} {r['data']}: {r['setting']}" for r in rows]
    none = {"mean": math.nan, "std": 0.0}  # the rho-disabled row has no tabular value
    series = [BarSeries(label, [(r[key] or none)["mean"] for r in rows], [(r[key] or none)["std"] for r in rows])
              for label, key in (("tabular J", "tabular"), ("neural J (final)", "neural_final"))]
    grouped_bar_chart(path, "Matrix games: exact tabular solver vs neural trainer",
                      groups, [(f"J, mean ± std over {len(record['seeds'])} seeds", series)],
                      [("docs/design.md section 3", [r["spec_j"] for r in rows])], ylabel="J")
