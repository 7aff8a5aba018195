"""``inspo reproduce smax``: InSPO and behaviour cloning on generated SMAX datasets, final and best return and win
rate next to the behaviour policy's own, and learning curves; ``smax.md``, ``.json`` and ``.png``. Also the SMAX
datasets and win-rate columns that ``inspo reproduce baselines --env smax`` shares."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from inspo.bc_length import BCLength, BCLengthSettings, cached_bc_length
from inspo.cluster import Cluster
from inspo.config import TrainConfig
from inspo.data import SMAX_QUALITIES, generate_smax, load_dataset
from inspo.report import figure_class, finite, grid, save_png
from inspo.reproduce.plots import groups
from inspo.reproduce.runner import (
    METHOD_NAMES,
    Progress,
    best_after_start,
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

__all__ = ["SMAX", "SMAX_MAPS", "SMAX_METHODS", "SMAX_SETTINGS", "SmaxSuite", "auto_bc_length", "is_smax_name",
           "plot_smax", "reproduce_smax", "smax_available", "smax_dataset", "smax_dataset_name", "win_stats"]


@dataclass(frozen=True)
class SmaxSuite:
    """What ``inspo reproduce smax`` runs unless told otherwise."""

    maps: tuple[str, ...] = ("2s3z", "3s_vs_5z", "5m_vs_6m", "6h_vs_8z")  # the SMAX maps of the paper
    qualities: tuple[str, ...] = ("medium", "expert", "mixed")  # keys of inspo.data.SMAX_QUALITIES
    methods: tuple[str, ...] = ("bc", "inspo")  # in table order
    seeds: tuple[int, ...] = (0, 1, 2)
    iters: int = 2000
    bc_steps: int = 1000
    # bc_steps "auto": how each dataset's cloning length is measured (its hidden, lr and batch size are the runs').
    bc_length: BCLengthSettings = field(default_factory=BCLengthSettings)
    # Episodes per generated dataset: the paper uses 5000; 1000 keeps generation and training within the CPU budget
    # the table was made with.
    episodes: int = 1000
    data_seed: int = 0  # of the generated data: every run of a dataset trains on the same data
    eval_episodes: int = 100  # sampled episodes per evaluation
    evaluations: int = 10  # per run: eval_every = iters // evaluations
    # TrainConfig fields of every run that differ from the defaults (a small network: 2 CPU cores).
    settings: dict[str, Any] = field(default_factory=lambda: {"hidden": 64})


SMAX = SmaxSuite()
"""The defaults of ``inspo reproduce smax``."""

SMAX_MAPS: tuple[str, ...] = SMAX.maps
"""The SMAX maps of the paper, the default of ``inspo reproduce smax``."""

SMAX_METHODS: tuple[str, ...] = SMAX.methods
"""The methods of ``inspo reproduce smax``, in table order."""

SMAX_SETTINGS: dict[str, Any] = SMAX.settings
"""`TrainConfig` fields of every SMAX run that differ from the defaults."""


# -- datasets -----------------------------------------------------------------------------------------------------
def is_smax_name(name: str) -> bool:
    """Whether ``name`` reads ``<map>-<quality>`` with a known quality."""
    try:
        smax_dataset_name(name)
    except ValueError:
        return False
    return True


def smax_dataset_name(name: str) -> tuple[str, str]:
    """``2s3z-medium-replay`` -> (``2s3z``, ``medium-replay``)."""
    for quality in sorted(SMAX_QUALITIES, key=len, reverse=True):  # medium-replay before medium
        if name.endswith(f"-{quality}") and len(name) > len(quality) + 1:
            return name[: -len(quality) - 1], quality
    raise ValueError(f"SMAX dataset name {name!r}: expected <map>-<quality> with a quality among "
                     f"{', '.join(SMAX_QUALITIES)}")


def smax_dataset(map_name: str, quality: str, episodes: int, cache: Path, policies: Path | None,
                 seed: int = SMAX.data_seed, build: bool = True) -> Path | None:
    """The cached SMAX dataset of a map and quality (generated with ``seed`` unless ``build=False``: None if it is not
    there). Online qualities are keyed by the SHA-256 of the policies' ``snapshots.json`` too, so new policies make
    new data."""
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
    return cached_dataset(cache / "data" / "smax" / f"{map_name}-{quality}-n{episodes}-seed{seed}{tag}",
                          lambda: generate_smax(env_name, quality, episodes, seed, policy=policy), build)


def smax_available(map_name: str, quality: str, policies: Path | None) -> bool:
    """Whether the data of ``quality`` can be made for the map (scripted, or a trained policy exists)."""
    from inspo.data.smax import ONLINE_QUALITIES, policy_folder

    if quality not in ONLINE_QUALITIES:
        return True

    try:
        folder = policy_folder(f"smax:{map_name}", None if policies is None else policies / map_name)
    except ValueError:
        return False
    return (folder / "snapshots.json").is_file()


# -- win rates ----------------------------------------------------------------------------------------------------
def _best_win(win_curve: Sequence[Sequence[Any]]) -> float:
    """Highest evaluated win rate once the learner has started (as :func:`runner.best_after_start`)."""
    wins = [w for it, w in win_curve if it > 0 and w is not None] or [w for _, w in win_curve if w is not None]
    return max(wins)


def win_stats(dataset: str, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Win-rate columns of a SMAX row: final and best of the runs, and the behaviour policy's (manifest)."""
    behaviour = load_dataset(dataset, verify=False).manifest["behaviour"]
    return {"final_win": stats([o["final_win_rate"] for o in runs]),
            "best_win": stats([_best_win(o["win_curve"]) for o in runs]),
            "data_win_rate": behaviour["win_rate"], "data_behaviour": behaviour}


# -- the suite ----------------------------------------------------------------------------------------------------
def auto_bc_length(data: Path, cache: Path, settings: dict[str, Any] = SMAX.settings,
                   rule: BCLengthSettings = SMAX.bc_length, measure: bool = True) -> BCLength | None:
    """The held-out behaviour-cloning length of a dataset (:mod:`inspo.bc_length` by ``rule``, with the hidden width,
    learning rate and batch size of runs made with the ``TrainConfig`` fields ``settings``), measured once and kept in
    ``<cache>/bc_length/``, keyed by the dataset's content and the settings (``measure=False``: None if it was not
    measured yet)."""
    run = TrainConfig(dataset=str(data), **settings)
    rule = replace(rule, hidden=run.hidden, lr=run.lr_policy, batch_size=run.batch_size)
    return cached_bc_length(data, cache / "bc_length", rule, measure)


def reproduce_smax(maps: Sequence[str], qualities: Sequence[str], seeds: Sequence[int], iters: int,
                   bc_steps: int | str,
                   episodes: int, eval_episodes: int, out: Path, policies: Path | None = None,
                   jobs: int | Cluster = 1, evaluations: int | None = None, command: str = "",
                   suite: SmaxSuite = SMAX, populations: bool = True) -> dict[str, Any]:
    """Train InSPO and behaviour cloning on SMAX datasets of every map and quality; write ``smax.md``,
    ``smax.json`` and ``smax.png`` to ``out``; return the record.

    Args:
        maps: SMAX map names (``2s3z``, ...).
        qualities: data qualities (keys of :data:`inspo.data.SMAX_QUALITIES`); an online quality whose map has no
            trained policy is left out of the table, which says so.
        iters, bc_steps: the budget of every run (BC: the cloning steps alone). ``bc_steps="auto"``: each
            dataset's held-out cloning length (:func:`auto_bc_length`, seed ``suite.bc_length.seed``), the same
            for every method and seed of the dataset, reported in the table with its held-out NLL.
        episodes: episodes per generated dataset (seed ``suite.data_seed``).
        eval_episodes: sampled episodes per evaluation (``evaluations`` per run; None: ``suite.evaluations``).
        policies: a folder of ``<map>/`` folders written by ``inspo online train`` (None: ``data/smax_policies``).
        jobs: runs in parallel (local worker processes), or the :class:`~inspo.cluster.Cluster` to run them on.
        populations: train the runs that differ only in their seed as one population each
            (:func:`~inspo.reproduce.runner.run_all`).
        command: the command line recorded in the table's header.
        suite: the methods, the data seed and the hyper-parameters.
    """
    unknown = [q for q in qualities if q not in SMAX_QUALITIES]
    if unknown:
        raise ValueError(f"unknown SMAX quality {', '.join(map(repr, unknown))}; expected some of "
                         f"{', '.join(SMAX_QUALITIES)}")
    if bc_steps != "auto" and (isinstance(bc_steps, bool) or not isinstance(bc_steps, int) or bc_steps < 0):
        raise ValueError(f"bc_steps must be a non-negative integer or 'auto', got {bc_steps!r}")
    started = time.perf_counter()
    cache = out / "cache"
    lengths: dict[str, BCLength] = {}
    every = max(iters // (suite.evaluations if evaluations is None else evaluations), 1)
    configs, keys, missing = [], [], []
    for map_name in maps:
        for quality in qualities:
            if not smax_available(map_name, quality, policies):
                missing.append(f"{map_name}-{quality}")
                continue
            data = smax_dataset(map_name, quality, episodes, cache, policies, suite.data_seed)
            if bc_steps == "auto":
                lengths[f"{map_name}-{quality}"] = auto_bc_length(data, cache, suite.settings, suite.bc_length)
            steps = lengths[f"{map_name}-{quality}"].steps if bc_steps == "auto" else bc_steps
            for method in suite.methods:
                for seed in seeds:
                    configs.append(TrainConfig(
                        dataset=str(data), algo=method, iters=iters, bc_steps=steps, eval_every=every,
                        eval_episodes=eval_episodes, seed=seed, **suite.settings,
                        out=str(cache / "runs" / "smax" / f"{map_name}-{quality}" / method / f"seed{seed}")).to_dict())
                    keys.append((map_name, quality, method, seed))
    if not configs:
        raise ValueError(f"no SMAX dataset can be made: {', '.join(missing)} need online-trained policies "
                         f"(`inspo online train`, then --policies DIR)")
    progress = Progress(len(configs))
    outcomes = run_all(configs, jobs, lambda k, o: progress(" ".join(map(str, keys[k])), o), populations,
                       clones=cache / "clones")

    rows = []
    for map_name in maps:
        for quality in qualities:
            for method in suite.methods:
                runs = [(cfg, o) for cfg, key, o in zip(configs, keys, outcomes) if key[:3] == (map_name, quality,
                                                                                                 method)]
                if not runs:
                    continue
                rows.append({"map": map_name, "quality": quality, "dataset": f"{map_name}-{quality}",
                             "method": method, "label": METHOD_NAMES[method],
                             "final": stats([o["final"] for _, o in runs]),
                             "best": stats([best_after_start(o["curve"]) for _, o in runs]),
                             "data_return": runs[0][1]["behaviour"],
                             **win_stats(runs[0][0]["dataset"], [o for _, o in runs]),
                             "wall_time_s": stats([o["wall_time"] for _, o in runs]),
                             "bc_steps": runs[0][0]["bc_steps"],
                             "bc_heldout_nll": (lengths[f"{map_name}-{quality}"].heldout_nll
                                                if bc_steps == "auto" else None),
                             "curves": [o["curve"] for _, o in runs], "win_curves": [o["win_curve"] for _, o in runs],
                             "config": {k: v for k, v in runs[0][0].items() if k not in ("seed", "out")}})
    record = {**provenance(command, seeds, time.perf_counter() - started), "maps": list(maps),
              "qualities": list(qualities), "methods": list(suite.methods), "iters": iters, "bc_steps": bc_steps,
              "episodes": episodes, "eval_episodes": eval_episodes, "eval_every": every, "missing": missing,
              "bc_lengths": {name: found.to_dict() for name, found in lengths.items()}, "rows": rows}
    publish(out, "smax", _markdown(record, configs[0], outcomes, cache, policies, suite.data_seed), record, plot_smax)
    return record


def _source(row: dict[str, Any]) -> str:
    """The data column: the quality, and for an online quality the policy snapshots that played it."""
    b = row["data_behaviour"]
    if b.get("kind") != "smax-online":
        return row["quality"]
    files = [c["file"].rsplit("/", 1)[-1] if c else "heuristic" for c in b["checkpoints"]]
    note = f"{', '.join(files[:3])}{f', ... {files[-1]}' if len(files) > 3 else ''}"
    return f"{row['quality']} ({note})"


def _markdown(record: dict[str, Any], config: dict[str, Any], outcomes: Sequence[dict[str, Any]], cache: Path,
              policies: Path | None, data_seed: int) -> str:
    """``smax.md`` of a record of :func:`reproduce_smax` (``config``: the first run's)."""
    command, seeds, missing = record["command"], record["seeds"], record["missing"]
    episodes, eval_episodes, every = record["episodes"], record["eval_episodes"], record["eval_every"]
    iters, bc_steps = record["iters"], record["bc_steps"]
    auto = bc_steps == "auto"
    table = markdown_table(
        ["map", "data", "method", "data return", "data win rate", "final return", "final win rate", "best return",
         "best win rate"] + ["BC steps", "BC held-out NLL"] * auto,
        [[r["map"], _source(r), r["label"], f"{r['data_return']:.3f}", f"{r['data_win_rate']:.3f}", pm(r["final"]),
          pm(r["final_win"]), pm(r["best"]), pm(r["best_win"])]
         + ([str(r["bc_steps"]), f"{r['bc_heldout_nll']:.4f}"] if auto else []) for r in record["rows"]])
    rule = next(iter(record["bc_lengths"].values()), {}).get("settings", {})
    cloning = (f"behaviour cloning for each dataset's held-out length (columns BC steps and BC held-out NLL: "
               f"`inspo.bc_length` with {', '.join(f'{k}={v}' for k, v in rule.items())}: every "
               f"{rule.get('heldout_every')}th episode held out, measured once), then {iters} iterations; "
               f"{hyper(config)}. BC: the same cloning alone." if auto else
               f"{bc_steps} behaviour-cloning steps, then {iters} iterations; {hyper(config)}. BC: the same "
               f"{bc_steps} cloning steps alone.")
    missing_note = (f"\n- Not in the table (no online-trained policy for the map): {', '.join(missing)}."
                    if missing else "")
    return f"""# SMAX: InSPO and behaviour cloning on generated datasets

Made by `{command}` on {record['date']} (torch {record['torch']}, {record['cpu_count']} CPUs, \
{record['wall_time_s']:.0f} s wall time; {cache_note(outcomes, cache)}).

- Data: {episodes} episodes per dataset (the paper: 5000), generated with seed {data_seed} by \
`inspo.data.generate_smax`; the online qualities are played by the MAPPO snapshots of `inspo online train` (the \
files named in the data column, from {'`data/smax_policies/<map>`' if policies is None else f'`{policies}/<map>`'}). \
Data return and win rate: the behaviour policy's own, over the recorded episodes.
- Return: undiscounted team return (SMAX: damage dealt, normalised to 1 per enemy team, plus 1 for a win); win \
rate: fraction of episodes won; both over {eval_episodes} sampled episodes per evaluation, mean ± std (ddof=1) \
over seeds {list(seeds)}.
- InSPO: {cloning}
- Best: the highest return (win rate) of the evaluations made every {every} iterations after the learner started, \
selected on the evaluation episodes themselves (optimistic).{missing_note}

{table}
"""


def plot_smax(record: dict[str, Any], path: str | Path) -> None:
    """``smax.png`` of ``inspo reproduce smax`` (and the SMAX figures of the baselines and study suites): one panel
    per dataset (map, quality) with the learning curve of each method (mean over seeds; return solid, win rate
    dashed on the right axis; a method evaluated once, behaviour cloning, as a horizontal line) and the data's own
    return (dotted). A method keeps its colour in every panel, and one legend below the panels names them."""
    Figure = figure_class()
    rows = record["rows"]
    datasets = groups(rows)
    fig, axes = grid(Figure, len(datasets), cols=3, size=(4.8, 3.4))
    # Colours by the method's place in METHOD_NAMES, so that partial and complete tables draw it alike.
    methods = [name for name in METHOD_NAMES.values() if any(r["label"] == name for r in rows)]
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    colours = {name: palette[k % len(palette)] for k, name in enumerate(METHOD_NAMES.values())}
    for ax, name in zip(axes, datasets):
        wins = ax.twinx()
        wins.set_ylim(-0.02, 1.02)
        wins.set_ylabel("win rate", fontsize=8)
        mine = [r for r in rows if r["dataset"] == name]
        for row in mine:
            colour = colours[row["label"]]
            for key, axis, style in (("curves", ax, "-"), ("win_curves", wins, "--")):
                curves = [c for c in row[key] if c and all(finite(v) for _, v in c)]
                if not curves:
                    continue
                length = min(len(c) for c in curves)
                xs = [c[0] for c in curves[0][:length]]
                ys = np.mean([[v for _, v in c[:length]] for c in curves], axis=0)
                if length == 1:  # behaviour cloning: one evaluation, drawn across the panel
                    axis.axhline(ys[0], linestyle=style, color=colour, linewidth=1.4)
                    continue
                axis.plot(xs, ys, style, color=colour, linewidth=1.6, marker="o" if length <= 20 else None,
                          markersize=3)
        ax.axhline(mine[0]["data_return"], color="gray", linestyle=":", linewidth=1.2)
        ax.set_title(f"{name} (data return {mine[0]['data_return']:.3g}, win rate {mine[0]['data_win_rate']:.2f})",
                     fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D  # matplotlib is there: figure_class found it

    key = [Line2D([], [], color=colours[m], linewidth=2, label=m) for m in methods] + [
        Line2D([], [], color="black", linestyle=style, label=what)
        for style, what in (("-", "return"), ("--", "win rate"), (":", "data return"))]
    # One row under two or more panels; a lone panel is too narrow for it.
    fig.legend(handles=key, loc="outside lower center", ncols=len(key) if len(datasets) > 1 else 4, fontsize=8)
    seeds = len(record["seeds"])
    fig.suptitle(f"SMAX learning curves, mean over {seeds} seed{'s' * (seeds > 1)}", fontsize=11)
    save_png(fig, Path(path))
