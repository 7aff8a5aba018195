"""What every suite of ``inspo reproduce`` shares: the run cache, the job runner, per-seed statistics, and publishing
a table (``<name>.md``, ``.json`` and ``.png``).

The run cache lives in ``<out>/cache/``: a run whose folder already holds the ``metrics.json`` of a finished run with
the same settings (configuration, dataset content and inspo version) is read back, not trained again; any other run
is trained again in its folder, replacing what an unfinished or outdated run left there.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspo import report
from inspo.checkpoint import write_text
from inspo.config import TrainConfig
from inspo.data import DatasetError, load_dataset, save_dataset
from inspo.progress import ProgressBar
from inspo.provenance import package_info
from inspo.training import train

__all__ = ["METHOD_NAMES", "Progress", "best_after_start", "cache_note", "cached", "cached_dataset", "hyper",
           "markdown_table", "pm", "provenance", "publish", "run_all", "settings", "stats", "train_one",
           "write_text"]

METHOD_NAMES = {"bc": "BC", "icq": "MA-ICQ", "omiga": "OMIGA", "cfcql": "CFCQL", "inspo": "InSPO"}
"""How the tables name each ``TrainConfig.algo``."""


# -- the run cache ------------------------------------------------------------------------------------------------
def _outcome(result: dict[str, Any], from_cache: bool) -> dict[str, Any]:
    """What the tables need from a finished run (``TrainResult`` fields, as in its ``metrics.json``); win rates
    (SMAX) are None where the environment has none."""
    return {"final": result["final_return"], "best": result["best_return"], "behaviour": result["behaviour_return"],
            "optimum": result["optimum"], "updates_per_second": result["updates_per_second"],
            "wall_time": result["wall_time"], "curve": [[c["iteration"], c["return"]] for c in result["curve"]],
            "final_win_rate": result.get("final_win_rate"),
            "win_curve": [[c["iteration"], c.get("win_rate")] for c in result["curve"]], "cached": from_cache}


def train_one(config: dict[str, Any]) -> dict[str, Any]:
    """Train one config (in a worker process or inline) and keep what the tables need. Its folder is overwritten:
    :func:`cached` found no finished run with these settings there, so what is there is unfinished or outdated."""
    return _outcome(asdict(train(TrainConfig.from_dict(config), overwrite=True)), from_cache=False)


def settings(config: dict[str, Any], dataset_sha256: str | None, version: str | None) -> dict[str, Any]:
    """What a cached run must match: the config with every field (a field added to `TrainConfig` after the run
    was made takes its default) but its output folder and its dataset's path, which differ between machines; the
    dataset's content (its manifest SHA-256) and the inspo version that trained instead."""
    full = TrainConfig.from_dict(config).to_dict()
    return {**{k: v for k, v in full.items() if k not in ("out", "dataset")}, "dataset_sha256": dataset_sha256,
            "version": version}


def cached(config: dict[str, Any]) -> dict[str, Any] | None:
    """The outcome of the finished run in ``config["out"]`` if it was made with the same settings, else None."""
    try:
        saved = json.loads((Path(config["out"]) / "metrics.json").read_text())
        made = settings(saved["config"], saved["dataset_sha256"], saved["package"]["version"])
        wanted = settings(config, load_dataset(config["dataset"], verify=False).manifest["manifest_sha256"],
                          package_info()["version"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None  # never run, stopped while writing, not a run, or made by code that recorded less
    except ValueError:  # a field TrainConfig no longer has (made by other code), or no readable dataset
        return None
    return _outcome(saved, from_cache=True) if made == wanted else None


def cached_dataset(path: Path, build: Callable[[], Any]) -> Path:
    """``path`` if it holds a valid dataset, else ``build()`` saved there (a corrupt cache is rebuilt)."""
    try:
        load_dataset(path)
        return path
    except DatasetError:
        return save_dataset(build(), path, overwrite=True)


# -- running many training runs -----------------------------------------------------------------------------------
def run_all(configs: Sequence[dict[str, Any]], jobs: int, on_done: Callable[[int, dict[str, Any]], None]
            ) -> list[dict[str, Any]]:
    """Run every config, ``jobs`` at a time, reading finished ones from the run cache instead; ``on_done(index,
    outcome)`` is called as each one is done."""
    outcomes: list[dict[str, Any]] = [{} for _ in configs]
    todo = []
    for k, cfg in enumerate(configs):
        found = cached(cfg)
        if found is None:
            todo.append(k)
        else:
            outcomes[k] = found
            on_done(k, found)
    if jobs <= 1:
        for k in todo:
            outcomes[k] = train_one(configs[k])
            on_done(k, outcomes[k])
        return outcomes
    # spawn, not fork: forking a process whose torch thread pools already started can deadlock the child.
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(train_one, configs[k]): k for k in todo}
        for future in as_completed(futures):
            k = futures[future]
            outcomes[k] = future.result()
            on_done(k, outcomes[k])
    return outcomes


class Progress:
    """Progress of the runs of a table on stderr (:class:`~inspo.progress.ProgressBar`: a bar on a terminal, a
    plain line every half minute elsewhere), noting the last finished run; tables go to stdout."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.bar = ProgressBar(total, "reproduce")

    def __call__(self, label: str, outcome: dict[str, Any]) -> None:
        self.done += 1
        speed = "cached" if outcome["cached"] else f"{outcome['updates_per_second']:.0f} updates/s"
        self.bar.update(self.done, f"{label}: final {outcome['final']:.4f}, best {outcome['best']:.4f}, {speed}")
        if self.done == self.total:
            self.bar.close()


# -- statistics ---------------------------------------------------------------------------------------------------
def stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (0 for a single value) of per-seed results."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "values": arr.tolist()}


def pm(summary: dict[str, Any] | None, digits: int = 3) -> str:
    """``mean ± std`` of :func:`stats`, or ``n/a`` for None."""
    if summary is None:
        return "n/a"
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def best_after_start(curve: Sequence[Sequence[float]]) -> float:
    """Best evaluated return once the learner has started. Iteration 0 is the policy before any update (behaviour
    cloning, or CFCQL's randomly initialised utilities, which may pick the XOR optimum by chance); behaviour
    cloning has only that one."""
    returns = [r for it, r in curve if it > 0] or [r for _, r in curve]
    return max(returns)


# -- publishing a table -------------------------------------------------------------------------------------------
def provenance(command: str, seeds: Sequence[int], wall_time: float) -> dict[str, Any]:
    """The record's header: how, when and where the table was made."""
    return {"command": command, "seeds": list(seeds), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "package": package_info(), "wall_time_s": round(wall_time, 1),
            "cpu_count": os.cpu_count()}


_HYPER = ("alpha", "beta", "gamma", "lr_policy", "lr_critic", "batch_size", "hidden", "polyak", "rho_max", "z_max",
          "weighting", "order", "local_critic_steps")


def hyper(config: dict[str, Any]) -> str:
    """The training hyper-parameters that shape a result, as ``name=value`` pairs for a table's header."""
    return ", ".join(f"{name}={config[name]}" for name in _HYPER)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table, one line per row (no alignment padding)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cache_note(outcomes: Sequence[dict[str, Any]], cache: Path) -> str:
    """How many runs the run cache supplied, for a table's header."""
    count = sum(o["cached"] for o in outcomes)
    return f"{count} of {len(outcomes)} runs read from the run cache `{cache}`" if count else "no run cached"


def publish(out: Path, name: str, markdown: str, record: dict[str, Any],
            plot: Callable[[dict[str, Any], Path], None]) -> None:
    """Write ``<name>.json``, the figure ``<name>.png`` (``plot(record, path)``) and ``<name>.md`` (which shows the
    figure), and print the markdown. Without matplotlib the tables are still written, the figure is not."""
    write_text(out / f"{name}.json", json.dumps(record, indent=2) + "\n")
    try:
        plot(record, out / f"{name}.png")
        markdown += f"\n![{name}]({name}.png)\n"
    except report.MatplotlibMissing:
        print(f"inspo reproduce: {name}.png not drawn (matplotlib is missing: {report.INSTALL_HINT})",
              file=sys.stderr)
    write_text(out / f"{name}.md", markdown)
    print(markdown, end="")
