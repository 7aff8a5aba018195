"""What every suite of ``inspo reproduce`` shares: the run cache, the job runner, per-seed statistics, and publishing
a table (``<name>.md``, ``.json`` and ``.png``).

The run cache lives in ``<out>/cache/``: a run whose folder already holds the ``metrics.json`` of a finished run
with the same settings (configuration, dataset content and inspo version) is read back, not trained again; any other
run is trained again in its folder: an unfinished run with the same settings resumes from its ``checkpoint.pt``, and
what an outdated run left there is replaced, but for a finished run on other data (another dataset content), which
stops the command before anything trains: its result holds for its data. The ``metrics.json`` files name no folder
of the machine (but on an existing dask cluster's workers, below): the repository keeps those of ``results/cache/``
(``results/.gitignore``), so that a suite made in sittings on several machines resumes from a fresh clone.

Runs that differ only in their seed (and the hyper-parameters a population member may set,
:data:`~inspo.config.MEMBER_FIELDS`) train together as one population (:func:`train_group`,
:func:`inspo.population_training.train_members`): each run's folder ends as its single run's, so the run cache and
the tables are the same as when every run trains alone (``populations=False``, ``inspo reproduce
--no-populations``), but for the timings (a member's wall time and updates/s are its population's).

Runs (or populations) execute in this process, on a local dask cluster (``--jobs K``) or on an existing one
(``--dask-scheduler``, see :mod:`inspo.cluster`). A run on a dask worker writes its folder like any other, and its
outcome is read back from there: the run cache is the one record of what was done, so ``--out`` must be on storage
that every worker shares, and running the command again after an interruption trains only what is missing,
whichever machines did the rest.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspo import report
from inspo.checkpoint import CheckpointError, write_text
from inspo.checkpoint import load as load_checkpoint
from inspo.cluster import Cluster, run_each
from inspo.config import MEMBER_FIELDS, TrainConfig
from inspo.data import DatasetError, dataset_digest, load_dataset, save_dataset
from inspo.errors import InspoError
from inspo.population_training import PREVIOUS, train_members
from inspo.progress import ProgressBar
from inspo.provenance import package_info
from inspo.training import train

__all__ = ["METHOD_NAMES", "Progress", "best_after_start", "cache_note", "cached", "cached_dataset", "hyper",
           "machines", "markdown_table", "pathless", "pm", "population_groups", "provenance", "publish", "run_all",
           "settings", "stats", "train_group", "train_one", "write_text"]

METHOD_NAMES = {"bc": "BC", "icq": "MA-ICQ", "omiga": "OMIGA", "cfcql": "CFCQL", "inspo": "InSPO"}
"""How the tables name each ``TrainConfig.algo``."""


# -- the run cache ------------------------------------------------------------------------------------------------
def _outcome(result: dict[str, Any], from_cache: bool) -> dict[str, Any]:
    """What the tables need from a finished run (``TrainResult`` fields, as in its ``metrics.json``); win rates
    (SMAX) are None where the environment has none."""
    return {"final": result["final_return"], "best": result["best_return"], "behaviour": result["behaviour_return"],
            "optimum": result["optimum"], "updates_per_second": result["updates_per_second"],
            "wall_time": result["wall_time"],
            # Runs made before CPU time was recorded: their wall time, which a single run on one thread spends.
            "cpu_time": result.get("cpu_time", result["wall_time"]),
            "curve": [[c["iteration"], c["return"]] for c in result["curve"]],
            "final_win_rate": result.get("final_win_rate"),
            "machine": _machine(result.get("machine", {})),
            "win_curve": [[c["iteration"], c.get("win_rate")] for c in result["curve"]], "cached": from_cache}


def _machine(machine: dict[str, Any]) -> str | None:
    """A run's machine as a table names it: the CPU model and the instruction set torch used, which tells apart
    machines that report the same model but make other SMAX data (``docs/design.md`` 4.4); None for a run made
    before runs recorded their machine."""
    cpu, isa = machine.get("cpu"), machine.get("torch_cpu_capability")
    return cpu if cpu is None or isa is None else f"{cpu} ({isa})"


def train_one(config: dict[str, Any], clones: str | None = None) -> dict[str, Any]:
    """Train one config (in this process or as a task on a dask worker) and keep what the tables need. A run of
    this config and inspo version that stopped part-way (its worker died, the command was interrupted) resumes from
    its ``checkpoint.pt``; anything else in its folder is outdated (:func:`cached` found no finished run with these
    settings there) and is replaced. ``clones``: the folder of behaviour clones to start from and keep
    (:mod:`inspo.clones`)."""
    cfg = TrainConfig.from_dict(config)
    resume = _resumable(cfg)
    return _outcome(asdict(train(cfg, resume=resume, overwrite=not resume, clones=clones)), from_cache=False)


def _resumable(cfg: TrainConfig) -> bool:
    """Whether ``cfg.out`` holds the checkpoint of an unfinished run that :func:`inspo.train` would resume (same
    config but for the folder's spelling, same dataset content) and that this inspo version made."""
    return _resume_step(cfg) is not None


def _resume_step(cfg: TrainConfig) -> int | None:
    """The step of the checkpoint in ``cfg.out`` if it is one that :func:`_resumable` accepts, else None."""
    try:
        saved = load_checkpoint(Path(cfg.out) / "checkpoint.pt")
        same = replace(TrainConfig.from_dict(saved["config"]), out=cfg.out) == cfg
        ours = (same and saved.get("version") == package_info()["version"]
                and saved["dataset_sha256"] == dataset_digest(cfg.dataset))
        return int(saved["run"]["step"]) if ours else None
    except (CheckpointError, OSError, KeyError, TypeError, ValueError):  # none, corrupt, or made by other code
        return None


def train_group(configs: list[dict[str, Any]], clones: str | None = None) -> list[dict[str, Any]]:
    """Train the configs of a group (:func:`population_groups`) as one population (in this process or as a task on
    a dask worker) and keep what the tables need of each, as :func:`train_one` would: every run's folder ends as its
    single run's. A group whose runs are all fresh trains from the start; one whose runs all stopped at the same
    checkpointed step (a population that was interrupted) resumes together from there; any other group (some runs
    resumable, some not, or resumable at different steps) trains its runs one by one with :func:`train_one`, each
    resuming where it can: the simplest rule that keeps every run what it would be alone. ``clones`` as in
    :func:`train_one`."""
    if len(configs) == 1:
        return [train_one(configs[0], clones)]
    cfgs = [TrainConfig.from_dict(c) for c in configs]
    steps = {_resume_step(cfg) for cfg in cfgs}
    if len(steps) > 1:
        outcomes = []
        for config in configs:
            outcomes.append(train_one(config, clones))
            # What an interrupted population kept of the run; the finished run's folder ends as a single run's.
            (Path(config["out"]) / PREVIOUS).unlink(missing_ok=True)
        return outcomes
    resume = steps != {None}
    result = train_members(cfgs, resume=resume, overwrite=not resume, clones=clones)
    return [_outcome(asdict(r), from_cache=False) for r in result.members]


def population_groups(configs: Sequence[dict[str, Any]]) -> list[list[int]]:
    """The indices of ``configs`` in groups that can train as one population: configs alike in every field but the
    seed, the output folder and the :data:`~inspo.config.MEMBER_FIELDS`, in the order of their first config."""
    groups: dict[str, list[int]] = {}
    for k, config in enumerate(configs):
        shared = {key: v for key, v in TrainConfig.from_dict(config).to_dict().items()
                  if key not in ("seed", "out", *MEMBER_FIELDS)}
        groups.setdefault(json.dumps(shared, sort_keys=True, default=str), []).append(k)
    return list(groups.values())


def pathless(config: dict[str, Any]) -> dict[str, Any]:
    """A recorded config with every field (one added to `TrainConfig` since it was recorded takes its default, the
    same runs) but its output folder and its dataset's path, which differ between machines."""
    return {k: v for k, v in TrainConfig.from_dict(config).to_dict().items() if k not in ("out", "dataset")}


def settings(config: dict[str, Any], dataset_sha256: str | None, version: str | None) -> dict[str, Any]:
    """What a cached run must match: its :func:`pathless` config, the dataset's content (its manifest SHA-256) and
    the inspo version that trained."""
    return {**pathless(config), "dataset_sha256": dataset_sha256, "version": version}


def _saved_run(out: str) -> dict[str, Any] | None:
    """The ``metrics.json`` of the finished run in ``out``, or None (never run, stopped while writing, not a run)."""
    try:
        saved = json.loads((Path(out) / "metrics.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return saved if isinstance(saved, dict) else None


def _refuse_other_data(config: dict[str, Any]) -> None:
    """InspoError if ``config["out"]`` holds a finished run on other data than ``config["dataset"]``: its result
    holds for that data, which may be made again on another machine type (SMAX, ``docs/design.md`` 4.4), so it is
    not replaced unasked, unlike a run of other settings on the same data."""
    made = (_saved_run(config["out"]) or {}).get("dataset_sha256")
    if made is None:
        return
    digest = dataset_digest(config["dataset"])
    if made != digest:
        raise InspoError(f"{config['out']} holds a finished run on other data (manifest SHA-256 {made[:12]}...) than "
                         f"{config['dataset']} ({digest[:12]}...): to keep it, give --out another folder; to train "
                         f"it again on this data, move it away")


def cached(config: dict[str, Any]) -> dict[str, Any] | None:
    """The outcome of the finished run in ``config["out"]`` if it was made with the same settings, else None."""
    saved = _saved_run(config["out"])
    if saved is None:
        return None
    try:
        made = settings(saved["config"], saved["dataset_sha256"], saved["package"]["version"])
        wanted = settings(config, dataset_digest(config["dataset"]), package_info()["version"])
    except (KeyError, TypeError, ValueError):  # made by other code (fields missing or no longer known), or no data
        return None
    return _outcome(saved, from_cache=True) if made == wanted else None


def cached_dataset(path: Path, build: Callable[[], Any], make: bool = True) -> Path | None:
    """``path`` if it holds a valid dataset, else ``build()`` saved there (a corrupt cache is rebuilt; ``make=False``:
    None instead)."""
    try:
        load_dataset(path)
        return path
    except DatasetError:
        return save_dataset(build(), path, overwrite=True) if make else None


# -- running many training runs -----------------------------------------------------------------------------------
def run_all(configs: Sequence[dict[str, Any]], jobs: int | Cluster,
            on_done: Callable[[int, dict[str, Any]], None], populations: bool = True,
            train: bool = True, clones: Path | None = None) -> list[dict[str, Any] | None]:
    """Run every config (``jobs``: that many local processes, or the :class:`~inspo.cluster.Cluster` to run on),
    reading finished ones from the run cache instead; ``on_done(index, outcome)`` is called as each one is done.
    ``populations``: the configs that differ only in seed (and member hyper-parameters) train together, one task
    per group (:func:`population_groups`, :func:`train_group`); else one task per config. ``train=False``: only
    read the run cache, the outcome of a run not found there is None (a partial table). ``clones``: a folder of
    behaviour clones (:mod:`inspo.clones`) that the runs start from and keep, so that the methods trained on the
    same data with the same seed clone once."""
    cluster = jobs if isinstance(jobs, Cluster) else Cluster(workers=jobs)
    outcomes: list[dict[str, Any] | None] = [None for _ in configs]
    todo = []
    for k, cfg in enumerate(configs):
        found = cached(cfg)
        if found is None:
            todo.append(k)
        else:
            outcomes[k] = found
            on_done(k, found)
    if not train:
        return outcomes
    for k in todo:
        _refuse_other_data(configs[k])
    pending = [configs[k] for k in todo]
    groups = [[todo[i] for i in g] for g in population_groups(pending)] if populations else [[k] for k in todo]
    # Workers of an existing cluster may start in other folders (other machines): they get absolute paths. Local
    # workers share this working folder, so the runs' records keep the paths as given (no folder of this machine).
    where = None if clones is None else os.path.abspath(clones) if cluster.external else str(clones)
    train_task = functools.partial(train_group, clones=where)
    if not cluster.parallel:
        for g, group_outcomes in run_each(train_task, [[configs[k] for k in group] for group in groups], cluster):
            for k, outcome in zip(groups[g], group_outcomes):
                outcomes[k] = outcome
                on_done(k, outcome)
        return outcomes
    tasks = [[{**configs[k], "out": os.path.abspath(configs[k]["out"]),
               "dataset": os.path.abspath(configs[k]["dataset"])} if cluster.external else configs[k]
              for k in group] for group in groups]
    for g, _ in run_each(train_task, tasks, cluster):
        for k, task in zip(groups[g], tasks[g]):
            found = cached(configs[k])
            if found is None:
                raise InspoError(f"a dask worker finished the run {task['out']}, but this process finds no "
                                 f"metrics.json of it there: --out must be on storage that every worker shares")
            outcomes[k] = {**found, "cached": False}
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
    pairs = [f"{name}={config[name]}" for name in _HYPER]
    if config.get("normalize_state"):  # named only where set: the tables made without it read as before
        pairs.append("normalize_state=True")
    if config.get("critic_alpha") is not None:
        pairs.append(f"critic_alpha={config['critic_alpha']}")
    return ", ".join(pairs)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table, one line per row (no alignment padding)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machines(outcomes: Sequence[dict[str, Any] | None]) -> dict[str, int]:
    """How many of the finished runs each machine made (:func:`_machine`; ``"not recorded"`` for runs older than
    the record)."""
    return dict(Counter(o["machine"] or "not recorded" for o in outcomes if o is not None))


def cache_note(outcomes: Sequence[dict[str, Any] | None], cache: Path, unmade: int = 0) -> str:
    """How many runs the run cache supplied (and how many are missing from a partial table), for a table's header.
    ``unmade``: the runs of a partial table's datasets that are not made yet, which have no outcome."""
    count = sum(o is not None and o["cached"] for o in outcomes)
    missing = sum(o is None for o in outcomes) + unmade
    note = (f"{count} of {len(outcomes) + unmade} runs read from the run cache `{cache}`" if count
            else "no run cached")
    return note + (f"; partial table: {missing} runs not made yet" if missing else "")


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
