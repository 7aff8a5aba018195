"""``inspo reproduce bridge``: InSPO and behaviour cloning on the public AlberDICE Bridge buffers, next to the data's
own return and the dynamic-programming optimum; ``bridge.md``, ``.json`` and ``.png``."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspo.cluster import Cluster
from inspo.config import TrainConfig
from inspo.data import SHIPPED_DATA, import_pymarl
from inspo.envs.bridge import bridge_optimum
from inspo.reproduce.plots import grouped_bar_chart, groups, method_panels, optimum_line
from inspo.reproduce.runner import (
    METHOD_NAMES,
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

__all__ = ["BRIDGE", "BRIDGE_DATASETS", "BRIDGE_SETTINGS", "BridgeSuite", "bridge_buffer", "plot_bridge",
           "reproduce_bridge"]


@dataclass(frozen=True)
class BridgeSuite:
    """What ``inspo reproduce bridge`` runs unless told otherwise."""

    datasets: tuple[str, ...] = ("bridge_mix", "bridge_optimal")  # AlberDICE buffer names
    data_root: Path = Path("data/alberdice")  # where the buffers not shipped in data/ are read from
    methods: tuple[str, ...] = ("inspo", "bc")  # in table order
    seeds: tuple[int, ...] = (0, 1, 2)
    iters: int = 10000
    bc_steps: int = 2000
    eval_episodes: int = 100  # sampled episodes per evaluation
    evaluations: int = 10  # per run: eval_every = iters // evaluations
    # Step limit of an evaluation episode (docs/design.md section 2; the data were recorded with 50).
    eval_limit: int = 20
    # TrainConfig fields that differ from the defaults. On bridge_mix, 3 seeds, 10000 iterations: final return
    # -1.45 / -1.34 / -1.38 with these, against -1.75 (seed 0) with the defaults, which are kept for the matrix games
    # (with lr_policy 3e-3 and the default polyak, XOR on {AA,AB,BA} ends at 0.94 after 1200 iterations on one seed
    # of three).
    settings: dict[str, Any] = field(default_factory=lambda: {"lr_policy": 3e-3, "alpha": 0.1})


BRIDGE = BridgeSuite()
"""The defaults of ``inspo reproduce bridge``."""

BRIDGE_DATASETS: tuple[str, ...] = BRIDGE.datasets
"""The shared AlberDICE Bridge buffers that ``inspo reproduce bridge`` trains on by default."""

BRIDGE_SETTINGS: dict[str, Any] = BRIDGE.settings
"""Bridge hyper-parameters that differ from the `TrainConfig` defaults (see :class:`BridgeSuite`)."""


def bridge_buffer(name: str, data_root: Path, cache: Path) -> Path:
    """A Bridge buffer in the project format: the repository's shipped copy (``data/<name>``) where there is one,
    else ``data_root/<name>`` imported into ``cache/data`` once."""
    shipped = SHIPPED_DATA / name
    if (shipped / "manifest.json").is_file():
        return shipped
    src = data_root / name
    if not src.is_dir():
        raise FileNotFoundError(f"Bridge buffer {src} not found (pass --data with the folder of the AlberDICE "
                                "buffers)")
    return cached_dataset(cache / "data" / name, lambda: import_pymarl(src, "bridge-alberdice"))


def reproduce_bridge(data_root: Path, datasets: Sequence[str], seeds: Sequence[int], iters: int, bc_steps: int,
                     eval_episodes: int, out: Path, jobs: int | Cluster = 1, command: str = "",
                     suite: BridgeSuite = BRIDGE, populations: bool = True) -> dict[str, Any]:
    """Build the Bridge table (InSPO and BC per dataset); write ``bridge.md`` and ``bridge.json``; return the record.

    Args:
        data_root: the folder holding the PyMARL buffers (``data/alberdice``).
        datasets: buffer names under ``data_root``, imported once into ``out/cache/data``.
        iters: InSPO iterations; ``bc_steps`` behaviour-cloning steps for both methods.
        eval_episodes: sampled evaluation episodes (step limit ``suite.eval_limit``) per evaluation.
        jobs: runs in parallel (local worker processes), or the :class:`~inspo.cluster.Cluster` to run them on.
        populations: train the runs that differ only in their seed as one population each
            (:func:`~inspo.reproduce.runner.run_all`).
        suite: the methods, the evaluations per run, the step limit and the hyper-parameters.
    """
    started = time.perf_counter()
    cache = out / "cache"
    every = max(iters // suite.evaluations, 1)
    configs, keys = [], []
    for name in datasets:
        data = bridge_buffer(name, data_root, cache)
        for method in suite.methods:
            for seed in seeds:
                run = cache / "runs" / "bridge" / name / method / f"seed{seed}"
                # BC gets the same settings (lr_policy is also the cloning rate): it is InSPO's starting point.
                configs.append(TrainConfig(dataset=str(data), algo=method, iters=iters, bc_steps=bc_steps,
                                           eval_every=every, eval_episodes=eval_episodes,
                                           eval_episode_limit=suite.eval_limit, seed=seed, out=str(run),
                                           **suite.settings).to_dict())
                keys.append((name, method, seed))
    progress = Progress(len(configs))
    outcomes = run_all(configs, jobs, lambda k, o: progress(" ".join(map(str, keys[k])), o), populations,
                       clones=cache / "clones")

    optimum = bridge_optimum(suite.eval_limit)
    rows = []
    for name in datasets:
        for method in suite.methods:
            runs = [o for (n, m, _), o in zip(keys, outcomes) if (n, m) == (name, method)]
            rows.append({"dataset": name, "method": method, "label": METHOD_NAMES[method],
                         "final": stats([r["final"] for r in runs]), "best": stats([r["best"] for r in runs]),
                         "data_return": runs[0]["behaviour"], "optimum": optimum,
                         "updates_per_second": stats([r["updates_per_second"] for r in runs]),
                         "wall_time_s": stats([r["wall_time"] for r in runs])})

    limit = suite.eval_limit
    record = {**provenance(command, seeds, time.perf_counter() - started),
              "inspo_config": configs[0],
              "eval": {"episodes": eval_episodes, "step_limit": limit, "sampled": True}, "rows": rows}
    table = markdown_table(
        ["data", "method", "final return", "best return", "data return (limit 50)",
         f"optimum (limit {limit})", "updates/s"],
        [[r["dataset"], r["label"], pm(r["final"]), pm(r["best"]),
          f"{r['data_return']:.3f}", f"{r['optimum']:.4f}",
          f"{r['updates_per_second']['mean']:.0f}" if r["method"] == "inspo" else "-"] for r in rows])
    markdown = f"""# Bridge (AlberDICE variant): InSPO and behaviour cloning

Made by `{command}` on {record['date']} (torch {record['torch']}, {record['cpu_count']} CPUs, \
{record['wall_time_s']:.0f} s wall time; {cache_note(outcomes, cache)}).

- Return: undiscounted team return over {eval_episodes} sampled episodes with step limit {limit}, \
mean ± std (ddof=1) over seeds {list(seeds)}.
- InSPO: {bc_steps} behaviour-cloning steps, then {iters} iterations; {hyper(configs[0])} \
(the `TrainConfig` defaults except {", ".join(suite.settings)}).
- BC: the same {bc_steps} cloning steps alone (InSPO's starting point).
- Best: the best of the evaluations made every {every} iterations, selected on the evaluation episodes themselves \
(optimistic).
- Data return: mean over the buffer's episodes, recorded with step limit 50. Optimum: dynamic programming \
(`inspo.envs.bridge.bridge_optimum`).

{table}
"""
    publish(out, "bridge", markdown, record, plot_bridge)
    return record


def plot_bridge(record: dict[str, Any], path: str | Path) -> None:
    """``bridge.png`` of ``inspo reproduce bridge``: final and best return per dataset and method, and the optimum."""
    rows = record["rows"]
    grouped_bar_chart(path, "Bridge: InSPO and behaviour cloning", groups(rows),
                      method_panels(rows, len(record["seeds"])), [optimum_line(rows)])
