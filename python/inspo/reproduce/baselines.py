"""``inspo reproduce baselines --env {xor,mne,bridge,smax,all}``: behaviour cloning, MA-ICQ, OMIGA, CFCQL and InSPO
in one trainer on every dataset of an environment, one table per environment: ``baselines_<env>.md``, ``.json`` and
``.png``."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspo.bc_length import BCLength, BCLengthSettings
from inspo.cluster import Cluster
from inspo.config import TrainConfig
from inspo.data import MATRIX_PRESETS, generate_matrix
from inspo.reproduce.bridge import BRIDGE, bridge_buffer
from inspo.reproduce.plots import grouped_bar_chart, groups, method_panels, optimum_line
from inspo.reproduce.runner import (
    METHOD_NAMES,
    Progress,
    best_after_start,
    cache_note,
    cached_dataset,
    hyper,
    machines,
    markdown_table,
    pm,
    provenance,
    publish,
    run_all,
    stats,
)
from inspo.reproduce.smax import (
    SMAX,
    auto_bc_length,
    is_smax_name,
    plot_smax,
    smax_dataset,
    smax_dataset_name,
    win_stats,
)

__all__ = ["BASELINES", "BASELINE_ENVS", "BASELINE_METHODS", "BaselineEnv", "BaselinesSuite", "baseline_configs",
           "check_hyper", "plot_baselines", "reproduce_baselines"]


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
    episodes: int = 5000  # default episodes per generated dataset (matrix games: one-step episodes; Bridge: none)


def _default_envs() -> dict[str, BaselineEnv]:
    # Every method gets the same KL-to-behaviour strength alpha as InSPO on the task; InSPO's entropy weight beta = 1
    # on M-NE (docs/design.md section 3). Matrix games are one-step: gamma = 0. These are the settings of the first
    # baseline
    # table (a script, results/baselines.py, replaced by this suite), so its runs stay valid entries of the run cache.
    return {
        "xor": BaselineEnv("XOR", ("xor-aa-ab-ba", "xor-uniform", "xor-ab-ba"), 3000, 500, 12,
                           {"gamma": 0.0, "alpha": 0.2}, {}),
        "mne": BaselineEnv("M-NE", ("mne-imbalanced", "mne-balanced"), 3000, 500, 12,
                           {"gamma": 0.0, "alpha": 1.0}, {"inspo": {"beta": 1.0}}),
        "bridge": BaselineEnv("Bridge", BRIDGE.datasets, 10000, 2000, 10, {"eval_episode_limit": BRIDGE.eval_limit},
                              {}),
        # SMAX: `<map>-<quality>` datasets (generated); the default list is the one the committed table was made
        # with, any map and quality can be named with --datasets.
        "smax": BaselineEnv("SMAX", ("2s3z-medium", "6h_vs_8z-medium"), 1000, 1000, 10, {"hidden": 64}, {},
                            episodes=SMAX.episodes),
    }


@dataclass(frozen=True)
class BaselinesSuite:
    """What ``inspo reproduce baselines`` runs unless told otherwise."""

    methods: tuple[str, ...] = ("bc", "icq", "omiga", "cfcql", "inspo")  # in table order
    envs: dict[str, BaselineEnv] = field(default_factory=_default_envs)  # in the order of the tables
    # What --env all runs: SMAX is left out (trained policies, and hours of CPU).
    all_envs: tuple[str, ...] = ("xor", "mne", "bridge")
    seeds: tuple[int, ...] = (0, 1, 2)
    eval_episodes: int = 100  # Bridge and SMAX: sampled episodes per evaluation (matrix games: exact)
    data_seed: int = 0  # of the generated data: every run of a dataset trains on the same data
    # SMAX with bc_steps "auto": how each dataset's cloning length is measured (hidden, lr and batch size: the runs').
    bc_length: BCLengthSettings = field(default_factory=BCLengthSettings)


BASELINES = BaselinesSuite()
"""The defaults of ``inspo reproduce baselines``."""

BASELINE_METHODS: tuple[str, ...] = BASELINES.methods
"""The methods of ``inspo reproduce baselines``, in table order."""

BASELINE_ENVS: dict[str, BaselineEnv] = BASELINES.envs
"""The environments of ``inspo reproduce baselines``; ``--env all`` runs those of ``BASELINES.all_envs``."""


def _baseline_dataset(env: str, name: str, episodes: int, data_root: Path, cache: Path, data_seed: int,
                      build: bool = True) -> Path | None:
    """The dataset ``name`` in the cache, made there first if needed (``build=False``: None if it is not there)."""
    if env == "bridge":
        return bridge_buffer(name, data_root, cache)
    if env == "smax":
        map_name, quality = smax_dataset_name(name)
        return smax_dataset(map_name, quality, episodes, cache, None, data_seed, build)
    game = MATRIX_PRESETS[name][0]
    return cached_dataset(cache / "data" / f"{name}-n{episodes}-seed{data_seed}",
                          lambda: generate_matrix(game, name, episodes, data_seed), build)


_PROTOCOL_FIELDS = ("dataset", "algo", "seed", "out", "iters", "bc_steps", "eval_every", "eval_episodes", "eval")


def check_hyper(env: str, hyper: dict[str, Any], suite: BaselinesSuite = BASELINES) -> None:
    """Raise ValueError naming the first bad entry of per-dataset hyper-parameters ``{dataset or SMAX map: {method:
    {TrainConfig field: value}}}`` (``--hyper FILE``): an unknown dataset or method, a field that is not a training
    hyper-parameter (the protocol's own fields: budget, seed, evaluation, paths), or a value TrainConfig refuses."""
    if not isinstance(hyper, dict):
        raise ValueError(f"hyper-parameters: expected {{dataset or map: {{method: {{field: value}}}}}}, got "
                         f"{type(hyper).__name__}")
    for key, methods in hyper.items():
        known = key in suite.envs[env].datasets or (env == "smax" and (is_smax_name(key) or _is_smax_map(key)))
        if not known or not isinstance(methods, dict):
            raise ValueError(f"hyper-parameters: {key!r} is not a dataset of {env}"
                             + (" or a SMAX map" if env == "smax" else "") + " with a {method: {...}} table")
        for method, fields in methods.items():
            # A method left out of this suite (--methods) may still have its entry: the file serves every run.
            if method not in BASELINES.methods or not isinstance(fields, dict):
                raise ValueError(f"hyper-parameters of {key}: {method!r} is not one of {', '.join(BASELINES.methods)} "
                                 f"with a {{field: value}} table")
            fixed = sorted(set(fields) & set(_PROTOCOL_FIELDS))
            if fixed:
                raise ValueError(f"hyper-parameters of {key} {method}: {', '.join(fixed)} belong to the protocol "
                                 f"(budget, seed, evaluation, paths), not to a method's hyper-parameters")
            TrainConfig.from_dict({"dataset": "unused", "algo": method, **suite.envs[env].settings, **fields})


def _is_smax_map(name: str) -> bool:
    from inspo.envs.smax import smax_maps

    return name in smax_maps()


def _overrides(env: str, hyper: dict[str, Any], name: str, method: str) -> dict[str, Any]:
    """A run's entries of ``hyper``: those of its SMAX map, then those of its dataset (which win)."""
    found = dict(hyper.get(smax_dataset_name(name)[0], {}).get(method, {})) if env == "smax" else {}
    return {**found, **hyper.get(name, {}).get(method, {})}


def baseline_configs(env: str, paths: dict[str, Path], seeds: Sequence[int], cache: Path, iters: int,
                     bc_steps: int | dict[str, int], eval_every: int, eval_episodes: int,
                     suite: BaselinesSuite = BASELINES,
                     hyper: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[tuple[str, str, int]]]:
    """The ``TrainConfig`` dicts of ``inspo reproduce baselines`` for one environment on the datasets ``{name:
    path}``, and their ``(dataset, method, seed)``, datasets outermost. ``bc_steps``: one count, or one per
    dataset; ``hyper``: per-dataset (SMAX: or per-map) entries of each method (:func:`check_hyper`)."""
    spec = suite.envs[env]
    configs, keys = [], []
    for name, data in paths.items():
        steps = bc_steps[name] if isinstance(bc_steps, dict) else bc_steps
        for method in suite.methods:
            for seed in seeds:
                values = {**spec.settings, **spec.per_method.get(method, {}), **_overrides(env, hyper or {}, name,
                                                                                            method)}
                if env in ("bridge", "smax"):
                    values["eval_episodes"] = eval_episodes
                configs.append(TrainConfig.from_dict({
                    "dataset": str(data), "algo": method, "iters": iters, "bc_steps": steps, "eval_every": eval_every,
                    "seed": seed, "out": str(cache / "runs" / "baselines" / name / method / f"seed{seed}"),
                    **values}).to_dict())
                keys.append((name, method, seed))
    return configs, keys


def reproduce_baselines(env: str, seeds: Sequence[int], out: Path, iters: int | None = None,
                        bc_steps: int | str | None = None, datasets: Sequence[str] | None = None,
                        episodes: int | None = None, eval_episodes: int = BASELINES.eval_episodes,
                        data_root: Path = BRIDGE.data_root, jobs: int | Cluster = 1, command: str = "",
                        suite: BaselinesSuite = BASELINES, populations: bool = True,
                        hyper: dict[str, Any] | None = None, evaluations: int | None = None,
                        partial: bool = False, name: str | None = None,
                        title: str | None = None) -> dict[str, Any]:
    """Train every method of ``suite.methods`` on the datasets of one environment of ``suite.envs``; write
    ``baselines_<env>.md``, ``.json`` and ``.png`` to ``out``; return the record.

    Args:
        env: ``xor``, ``mne``, ``bridge`` or ``smax``.
        iters, bc_steps: the budget of every run (None: the environment's default). SMAX also takes
            ``bc_steps="auto"``: each dataset's held-out cloning length (:func:`~inspo.reproduce.smax.auto_bc_length`,
            measured once, the same for every method and seed of the dataset, reported with its held-out NLL).
        datasets: a subset of the environment's datasets (None: all of them; SMAX: any ``<map>-<quality>``).
        episodes: matrix games and SMAX: episodes per generated dataset (seed ``suite.data_seed``; None: the
            environment's default).
        eval_episodes: Bridge and SMAX: sampled episodes per evaluation (the matrix games are evaluated exactly).
        data_root: Bridge: the folder of the AlberDICE buffers that are not shipped in ``data/``.
        jobs: runs in parallel (local worker processes), or the :class:`~inspo.cluster.Cluster` to run them on.
        populations: train the runs that differ only in their seed as one population each
            (:func:`~inspo.reproduce.runner.run_all`).
        command: the command line recorded in the table's header.
        hyper: hyper-parameters per dataset (SMAX: or per map) and method, over the environment's settings
            (:func:`check_hyper`), e.g. the incumbents of a tuning search; recorded in the table.
        evaluations: evaluations per run (None: the environment's).
        partial: train nothing; tabulate the runs the run cache holds and list the missing ones (a study made in
            several sittings). Datasets and cloning lengths not made yet are missing too.
        name: the table's file name (None: ``baselines_<env>``); title: its heading (None: the suite's).
    """
    if env not in suite.envs:
        raise ValueError(f"unknown baselines environment {env!r}; expected one of {', '.join(suite.envs)}")
    spec = suite.envs[env]
    datasets = list(spec.datasets if datasets is None else datasets)
    unknown = [name for name in datasets if name not in spec.datasets and not (env == "smax" and is_smax_name(name))]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a dataset of {env}; expected some of {', '.join(spec.datasets)}")
    if bc_steps == "auto" and env != "smax":
        raise ValueError(f"bc_steps 'auto' (each dataset's held-out cloning length) is for SMAX; got env {env!r}")
    check_hyper(env, hyper or {}, suite)
    hyper = {key: {m: fields for m, fields in methods.items() if m in suite.methods}
             for key, methods in (hyper or {}).items()}
    iters = spec.iters if iters is None else iters
    bc_steps = spec.bc_steps if bc_steps is None else bc_steps
    episodes = spec.episodes if episodes is None else episodes
    every = max(iters // (spec.evaluations if evaluations is None else evaluations), 1)
    started = time.perf_counter()
    cache = out / "cache"
    paths: dict[str, Path] = {}
    lengths: dict[str, BCLength] = {}
    for dataset in datasets:  # a partial table makes nothing: what is not there yet is missing
        path = _baseline_dataset(env, dataset, episodes, data_root, cache, suite.data_seed, build=not partial)
        found = (auto_bc_length(path, cache, spec.settings, suite.bc_length, measure=not partial)
                 if path is not None and bc_steps == "auto" else None)
        if path is not None and (found is not None or bc_steps != "auto"):
            paths[dataset] = path
            if found is not None:
                lengths[dataset] = found
    ready = list(paths)  # in the order of datasets
    configs, keys = baseline_configs(env, paths, seeds, cache, iters,
                                     {d: f.steps for d, f in lengths.items()} if bc_steps == "auto" else bc_steps,
                                     every, eval_episodes, suite, hyper)
    progress = Progress(len(configs))
    outcomes = run_all(configs, jobs, lambda k, o: progress(" ".join(map(str, keys[k])), o), populations,
                       train=not partial, clones=cache / "clones")

    unmade = [d for d in datasets if d not in paths]
    rows, missing = [], [f"{d} (no dataset or cloning length yet)" for d in unmade]
    for dataset in ready:
        for method in suite.methods:
            mine = [(cfg, key, o) for cfg, key, o in zip(configs, keys, outcomes) if key[:2] == (dataset, method)]
            runs = [(cfg, o) for cfg, _, o in mine if o is not None]
            not_made = [str(key[2]) for _, key, o in mine if o is None]
            if not_made:
                missing.append(f"{dataset} {method}: seed{'s' * (len(not_made) > 1)} {', '.join(not_made)}")
            if not runs:
                continue
            rows.append({"dataset": dataset, "method": method, "label": METHOD_NAMES[method],
                         "seeds_done": [cfg["seed"] for cfg, _ in runs],
                         "final": stats([o["final"] for _, o in runs]),
                         "best": stats([best_after_start(o["curve"]) for _, o in runs]),
                         "data_return": runs[0][1]["behaviour"], "optimum": runs[0][1]["optimum"],
                         **(win_stats(runs[0][0]["dataset"], [o for _, o in runs]) if env == "smax" else {}),
                         "bc_steps": runs[0][0]["bc_steps"],
                         "bc_heldout_nll": lengths[dataset].heldout_nll if dataset in lengths else None,
                         "wall_time_s": stats([o["wall_time"] for _, o in runs]),
                         "cpu_time_s": stats([o["cpu_time"] for _, o in runs]),
                         "curves": [o["curve"] for _, o in runs],
                         "win_curves": [o["win_curve"] for _, o in runs] if env == "smax" else None,
                         "config": {k: v for k, v in runs[0][0].items() if k not in ("seed", "out")}})
    if not rows and partial and not paths:
        raise ValueError(f"none of this table's datasets (with its cloning length) is in {cache} yet: a partial table "
                         f"reads the run cache's records only for data made here, since they are matched by content "
                         f"(run the command without --partial to make the data)")
    if not rows:
        raise ValueError("no run of this table is in the run cache " + str(cache) + " yet: nothing to tabulate"
                         if partial else "no run to tabulate")
    record = {**provenance(command, seeds, time.perf_counter() - started), "env": env, "env_title": spec.title,
              "title": title or f"Baselines on {spec.title}: BC, MA-ICQ, OMIGA, CFCQL and InSPO in one trainer",
              "methods": list(suite.methods), "iters": iters, "bc_steps": bc_steps, "eval_every": every,
              "hyper": hyper, "partial": partial, "missing": missing, "unmade_datasets": unmade,
              "compute_cpu_hours": round(sum(r["cpu_time_s"]["mean"] * len(r["seeds_done"]) for r in rows) / 3600, 2),
              "machines": machines(outcomes),
              "bc_lengths": {d: f.to_dict() for d, f in lengths.items()}, "rows": rows}
    publish(out, name or f"baselines_{env}", _markdown(record, spec, configs[0], outcomes, cache, ready, episodes,
                                                       eval_episodes, suite.data_seed), record, plot_baselines)
    return record


def _markdown(record: dict[str, Any], spec: BaselineEnv, config: dict[str, Any],
              outcomes: Sequence[dict[str, Any] | None], cache: Path, datasets: Sequence[str], episodes: int,
              eval_episodes: int, data_seed: int) -> str:
    """``baselines_<env>.md`` of a record of :func:`reproduce_baselines` (``config``: the first run's)."""
    env, rows, seeds, every = record["env"], record["rows"], record["seeds"], record["eval_every"]
    if env == "bridge":
        evaluation = (f"{eval_episodes} sampled episodes of at most {config['eval_episode_limit']} steps, every "
                      f"{every} iterations; the data return is over the buffers' episodes of at most 50 steps")
    elif env == "smax":
        evaluation = (f"{eval_episodes} sampled SMAX episodes every {every} iterations (win rate: fraction won; "
                      f"best win rate: the highest after the start); data: {episodes} episodes per dataset "
                      f"generated with seed {data_seed} (`inspo.data.generate_smax`)")
    else:
        evaluation = (f"the exact expected payoff of the product policy, every {every} iterations; data: {episodes} "
                      f"one-step episodes sampled with seed {data_seed} (`inspo.data.generate_matrix`)")
    per_method = "; ".join(f"{METHOD_NAMES[m]}: " + ", ".join(f"{k}={v}" for k, v in extra.items())
                           for m, extra in spec.per_method.items())
    tuned = "; ".join(f"{key} {METHOD_NAMES[m]}: " + ", ".join(f"{k}={v}" for k, v in fields.items())
                      for key, methods in record["hyper"].items() for m, fields in methods.items() if fields)
    cloning = (f"{record['bc_steps']} behaviour-cloning steps" if record["bc_steps"] != "auto" else
               "behaviour cloning for each dataset's held-out length (`inspo.bc_length`, given under each dataset)")

    def seeds_done(r: dict[str, Any]) -> str:
        return str(len(seeds)) if len(r["seeds_done"]) == len(seeds) else f"{len(r['seeds_done'])} of {len(seeds)}"

    sections = []
    for name in datasets:
        mine = [r for r in rows if r["dataset"] == name]
        if not mine:
            continue
        curves = _curve_table(mine)
        optimum = mine[0]["optimum"]
        if env == "smax":
            length = record["bc_lengths"].get(name)
            clone = (f"; cloning length {length['steps']} steps (held-out NLL {length['heldout_nll']:.4f})"
                     if length else "")
            sections.append(f"## {name}\n\ndata return {mine[0]['data_return']:.3f}, data win rate "
                            f"{mine[0]['data_win_rate']:.3f}{clone}\n\n" + markdown_table(
                                ["method", "final return", "final win rate", "best return", "best win rate", "seeds",
                                 "CPU time per run (s)"],
                                [[r["label"], pm(r["final"]), pm(r["final_win"]), pm(r["best"]),
                                  pm(r["best_win"]), seeds_done(r), f"{r['cpu_time_s']['mean']:.0f}"]
                                 for r in mine]) + curves)
            continue
        sections.append(f"## {name}\n\ndata return {mine[0]['data_return']:.3f}, optimum "
                        f"{'n/a' if optimum is None else f'{optimum:.4f}'}\n\n" + markdown_table(
                            ["method", "final return", "best return", "seeds", "CPU time per run (s)"],
                            [[r["label"], pm(r["final"]), pm(r["best"]), seeds_done(r),
                              f"{r['cpu_time_s']['mean']:.0f}"] for r in mine]) + curves)
    sections_text = "\n\n".join(sections)
    made_on = ", ".join(f"{cpu} ({count} runs)" for cpu, count in record["machines"].items())
    missing = record["missing"]
    unmade_runs = len(record["unmade_datasets"]) * len(record["methods"]) * len(seeds)
    missing_text = "\n\n## Not made yet\n\n" + "\n".join(f"- {m}" for m in missing) if missing else ""
    return f"""# {record['title']}

Made by `{record['command']}` on {record['date']} (torch {record['torch']}, {record['cpu_count']} CPUs, \
{record['wall_time_s']:.0f} s wall time; {cache_note(outcomes, cache, unmade_runs)}; the runs in the table took \
{record['compute_cpu_hours']} CPU-hours of training and evaluation: CPU time of the training process, a \
population's shared by its members; a run that started from a behaviour clone made by an earlier run on the same \
data and seeds (`inspo.clones`) leaves the cloning out, so BC reads 0 s where another method cloned first; made on \
{made_on}).

- Return: mean ± std (ddof=1) over seeds {list(seeds)} of the final policy and of the best evaluated policy after \
the learner started (iteration 0, the policy before any update, is left out of *best*); evaluation: {evaluation}.
- Every run: {cloning} (the BC row; the starting point of the InSPO, MA-ICQ and OMIGA actors), then \
{record['iters']} iterations; {hyper(config)}; {per_method or "no method-specific setting"}. The baselines' own \
settings are the `TrainConfig` defaults (MA-ICQ critic temperature {config['icq']['critic_temp']}, CFCQL \
cql_alpha={config['cfcql']['cql_alpha']}, agent-weight temperature {config['cfcql']['lambda_temp']}, policy \
temperature {config['cfcql']['policy_temp']}){f"; tuned over them: {tuned}" if tuned else ""}.

{sections_text}{missing_text}
"""


def _curve_table(rows: Sequence[dict[str, Any]], columns: int = 5) -> str:
    """The mean return over the seeds of each method of one dataset at iteration 0 and at ``columns`` more of the
    iterations that every run evaluated, evenly spread up to the last, to show whether the runs converged; empty when
    no learner was evaluated after the start (BC alone)."""
    learners = [(r["label"], [{int(it): value for it, value in curve} for curve in r["curves"]])
                for r in rows if all(len(curve) > 1 for curve in r["curves"])]
    if not learners:
        return ""
    common = sorted(set.intersection(*(set(points) for _, runs in learners for points in runs)))
    marks = sorted({common[round(k * (len(common) - 1) / columns)] for k in range(columns + 1)})
    table = [[label] + [f"{sum(p[it] for p in runs) / len(runs):.3f}" for it in marks] for label, runs in learners]
    return ("\n\nMean return over the seeds, by iteration:\n\n"
            + markdown_table(["iteration"] + [f"{it:,}" for it in marks], table))


def plot_baselines(record: dict[str, Any], path: str | Path) -> None:
    """``baselines_<env>.png`` of ``inspo reproduce baselines``: final and best return per dataset and method with
    the optimum as a line; on SMAX, every method's learning curves (return and win rate) per dataset instead
    (:func:`~inspo.reproduce.smax.plot_smax`)."""
    rows = record["rows"]
    if record["env"] == "smax":
        plot_smax(record, path)
        return
    grouped_bar_chart(path, f"Baselines and InSPO on {record['env_title']}", groups(rows),
                      method_panels(rows, len(record["seeds"])), [optimum_line(rows)])
