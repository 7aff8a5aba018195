"""Results in marl-eval's JSON layout (``inspo report RUN... --marl-eval OUT.json``), for aggregation with marl-eval
or rliable (interquartile mean, bootstrap confidence intervals, performance profiles).

The layout (github.com/instadeepai/marl-eval, "Data Structure for Raw Experiment data")::

    {env_name: {task_name: {algorithm: {"run_<seed>": {
        "step_<k>": {"step_count": <learner iterations>, "return": [per-episode returns], "win_rate": [rate]},
        ...,
        "absolute_metrics": {"return": [...], "win_rate": [...]}}}}}}

One ``step_<k>`` per evaluation of the run's curve (``metrics.json``); ``absolute_metrics`` are those of its final
evaluation. An environment ``family:task`` (``smax:3m``) splits into env and task; any other name is both. Matrix
games are evaluated exactly, so their one "episode" return is the expected return. SMAX records the win rate of
each evaluation, not the outcome of each episode: ``win_rate`` is a one-element list.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inspo.errors import InspoError

__all__ = ["marl_eval_record"]


def _run_entry(folder: Path) -> tuple[tuple[str, str, str, str], dict[str, Any]]:
    path = folder / "metrics.json"
    if not path.is_file():
        raise InspoError(f"{folder} holds no finished training run ({path} is missing); expected the --out folder "
                         f"of a finished inspo train")
    metrics = json.loads(path.read_text())
    curve, cfg = metrics["curve"], metrics["config"]
    if metrics.get("evaluated") is False:
        raise InspoError(f"{path} is a run trained without evaluation (eval 'none'): it has no returns to export; "
                         f"evaluate its final.pt with inspo evaluate --env ENV")
    if not curve or any("episode_returns" not in row for row in curve):
        raise InspoError(f"{path} records no per-episode returns (written by an older inspo); train it again to "
                         f"export it")
    env = metrics["env"]
    family, _, task = env.partition(":")
    entry: dict[str, Any] = {}
    for k, row in enumerate(curve):
        entry[f"step_{k}"] = {"step_count": row["iteration"], "return": list(row["episode_returns"]),
                              **({"win_rate": [row["win_rate"]]} if "win_rate" in row else {})}
    entry["absolute_metrics"] = {key: value for key, value in entry[f"step_{len(curve) - 1}"].items()
                                 if key != "step_count"}
    return (family, task or env, cfg["algo"], f"run_{cfg['seed']}"), entry


def marl_eval_record(runs: list[str | Path]) -> dict[str, Any]:
    """The marl-eval record of finished training runs (their ``--out`` folders); InspoError naming a folder that
    is not one, or two runs of the same environment, algorithm and seed (marl-eval would keep one)."""
    record: dict[str, Any] = {}
    where: dict[tuple[str, ...], Path] = {}
    for folder in map(Path, runs):
        key, entry = _run_entry(folder)
        if key in where:
            raise InspoError(f"{folder} and {where[key]} are both {'/'.join(key)} (environment, task, algorithm, "
                             f"seed): marl-eval's layout holds one run per seed; export them separately")
        where[key] = folder
        env, task, algo, run = key
        record.setdefault(env, {}).setdefault(task, {}).setdefault(algo, {})[run] = entry
    return record
