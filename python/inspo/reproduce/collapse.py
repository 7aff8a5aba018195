"""``inspo reproduce collapse``: InSPO on multi-policy SMAX data with the teammate ratio clipped at several
``rho_max`` and with the ratio off, its return, win rate and the effective sample size of the ratio (the
``rho_ess_min`` that InSPO records at each evaluation, :mod:`inspo.algos.ratio_diagnostics`) against iterations;
``smax_collapse.png``, ``smax_collapse.json`` and ``smax_collapse_runs.md``.

Per dataset, every ``rho_max`` and seed, and the ratio-off variant per seed; then, on the first dataset, a short
run of the first and last ``rho_max`` evaluated every ``early_every`` iterations shows how the first iterations go.
The runs go through the run cache of :mod:`inspo.reproduce.runner` (``<out>/cache/``, like every suite's): a finished
run with the same settings is read back, an interrupted one resumes, and the runs that differ only in seed and
``rho_max`` train as one population.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspo.checkpoint import write_text
from inspo.cluster import Cluster
from inspo.data import load_dataset
from inspo.report import figure_class, grid, save_png
from inspo.reproduce.runner import Progress, markdown_table, provenance, run_all
from inspo.reproduce.smax import smax_dataset, smax_dataset_name

__all__ = ["COLLAPSE", "CollapseSuite", "plot_collapse", "reproduce_collapse"]


@dataclass(frozen=True)
class CollapseSuite:
    """What ``inspo reproduce collapse`` runs unless told otherwise."""

    datasets: tuple[str, ...] = ("6h_vs_8z-medium-replay", "2s3z-medium-replay")  # <map>-<quality>
    rho_max: tuple[float, ...] = (100.0, 5.0, 2.0)  # the first is the default of TrainConfig
    seeds: tuple[int, ...] = (0,)
    iters: int = 1000
    bc_steps: int = 5000  # docs of the SMAX study: 1,000 steps leave the clone far below its data
    episodes: int = 1000
    data_seed: int = 0
    eval_episodes: int = 128
    eval_every: int = 100
    early_iters: int = 100  # the short population on the first dataset
    early_every: int = 10
    settings: dict[str, Any] = field(default_factory=lambda: {"hidden": 64, "threads": 1})


COLLAPSE = CollapseSuite()
"""The defaults of ``inspo reproduce collapse``."""


def _curve(metrics: dict[str, Any]) -> list[dict[str, float]]:
    keys = ("iteration", "return", "win_rate", "rho_ess_min", "rho_ess_mean", "rho_clipped")
    return [{k: row[k] for k in keys if k in row} for row in metrics["curve"]]


def reproduce_collapse(out: Path, suite: CollapseSuite = COLLAPSE, policies: Path | None = None,
                       command: str = "inspo reproduce collapse", jobs: int | Cluster = 1,
                       populations: bool = True) -> dict[str, Any]:
    """Train the suite's variants (see the module docstring), write ``<out>/smax_collapse.{json,png}`` and
    ``<out>/smax_collapse_runs.md``; returns the record. ``policies``: a folder of ``<map>/`` folders written by
    ``inspo online train`` (None: ``data/smax_policies``); ``jobs``: runs in parallel (local worker processes), or
    the :class:`~inspo.cluster.Cluster` to run them on; ``populations``: train the runs that differ only in seed
    and ``rho_max`` as one population (:func:`~inspo.reproduce.runner.run_all`)."""
    started = time.perf_counter()
    cache = out / "cache"
    configs: list[dict[str, Any]] = []
    variants: list[dict[str, Any]] = []  # one per config, in order: the variants, then the early runs
    bases = []  # per dataset, what its runs share
    for name in suite.datasets:
        map_name, quality = smax_dataset_name(name)
        data = smax_dataset(map_name, quality, suite.episodes, cache, policies, suite.data_seed)
        runs = cache / "runs" / "collapse" / name
        about = {"dataset": name, "data_win_rate": load_dataset(data, verify=False).manifest["behaviour"]["win_rate"]}
        base = dict(dataset=str(data), bc_steps=suite.bc_steps, eval_episodes=suite.eval_episodes, **suite.settings)
        bases.append(base)
        for seed in suite.seeds:
            for rho_max in suite.rho_max:
                configs.append(dict(base, iters=suite.iters, eval_every=suite.eval_every, seed=seed, rho_max=rho_max,
                                    out=str(runs / f"rho_max{rho_max:g}-seed{seed}")))
                variants.append({**about, "seed": seed, "label": f"rho_max {rho_max:g}"})
            configs.append(dict(base, iters=suite.iters, eval_every=suite.eval_every, seed=seed, use_rho=False,
                                out=str(runs / f"no_rho-seed{seed}")))
            variants.append({**about, "seed": seed, "label": "rho off"})
    split = len(configs)
    first = suite.datasets[0]
    for rho_max in (suite.rho_max[0], suite.rho_max[-1]):
        folder = cache / "runs" / "collapse" / first / f"early-rho_max{rho_max:g}"
        configs.append(dict(bases[0], iters=suite.early_iters, eval_every=suite.early_every, seed=suite.seeds[0],
                            rho_max=rho_max, out=str(folder)))
        variants.append({"dataset": first, "seed": suite.seeds[0], "label": f"rho_max {rho_max:g}"})
    progress = Progress(len(configs))
    run_all(configs, jobs, lambda k, o: progress(f"{variants[k]['dataset']} {variants[k]['label']} seed "
                                                 f"{variants[k]['seed']}", o), populations,
            clones=cache / "clones")
    for k, (config, variant) in enumerate(zip(configs, variants)):  # the run cache is the record: curves with ESS
        metrics = json.loads((Path(config["out"]) / "metrics.json").read_text())
        variant["curve"] = _curve(metrics)
        if k < split:
            variant["behaviour"] = metrics["behaviour_return"]
    record = {**provenance(command, suite.seeds, time.perf_counter() - started), "suite": suite.__dict__,
              "variants": variants[:split], "early": variants[split:]}
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "smax_collapse.json", json.dumps(record, indent=2) + "\n")
    plot_collapse(record, out / "smax_collapse.png")
    write_text(out / "smax_collapse_runs.md", _markdown(record))
    return record


_PANELS = (("return", "evaluation return"), ("win_rate", "win rate"), ("rho_ess_min", "ESS of rho, min over agents"))
_COLOURS = {"rho off": "black"}
_PALETTE = ("tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple")


def _colour(label: str, labels: list[str]) -> str:
    return _COLOURS[label] if label in _COLOURS else _PALETTE[labels.index(label) % len(_PALETTE)]


def plot_collapse(record: dict[str, Any], path: Path) -> None:
    """One row of panels (return, win rate, min-agent ESS against iterations) per dataset, and one for the early
    iterations of the first; a line per variant and seed, the data's return as a dashed line."""
    Figure = figure_class()
    datasets = list(dict.fromkeys(v["dataset"] for v in record["variants"]))
    rows = [(d, [v for v in record["variants"] if v["dataset"] == d]) for d in datasets]
    rows.append((f"{datasets[0]}, first iterations", record["early"]))
    fig, axes = grid(Figure, 3 * len(rows), cols=3, size=(4.4, 3.0))
    labels = list(dict.fromkeys(v["label"] for v in record["variants"] + record["early"]
                                if v["label"] not in _COLOURS))
    for r, (title, runs) in enumerate(rows):
        for c, (key, what) in enumerate(_PANELS):
            ax = axes[3 * r + c]
            for run in runs:
                pts = [(row["iteration"], row[key]) for row in run["curve"] if key in row]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=2.5, linewidth=1.4,
                        color=_colour(run["label"], labels), label=run["label"] if run["seed"] == runs[0]["seed"]
                        else None)
            data = {"return": "behaviour", "win_rate": "data_win_rate"}.get(key)
            if data in runs[0]:
                ax.axhline(runs[0][data], color="gray", linestyle="--", linewidth=1.0, label="data")
            if key == "rho_ess_min":
                ax.set_ylim(0.0, 1.02)
            ax.set_title(f"{title}: {what}", fontsize=9)
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
            if c == 0:
                ax.legend(fontsize=7)
    save_png(fig, path)


def _markdown(record: dict[str, Any]) -> str:
    """The runs' numbers: per dataset, each variant's return, win rate and min-agent ESS at every evaluation."""
    lines = ["# InSPO on multi-policy SMAX data: the teammate ratio's effective sample size", "",
             f"Made by `{record['command']}` (seeds {record['seeds']}, {record['wall_time_s']} s). Cells: return / "
             f"win rate / min-agent ESS of rho (clipped-row fraction where above 0).", ""]
    for title, runs in ([(d, [v for v in record["variants"] if v["dataset"] == d])
                         for d in dict.fromkeys(v["dataset"] for v in record["variants"])]
                        + [(f"{record['early'][0]['dataset']}, first iterations", record["early"])]):
        iterations = [row["iteration"] for row in runs[0]["curve"]]
        header = ["variant (seed)", *map(str, iterations)]
        table = []
        for run in runs:
            cells = []
            for row in run["curve"]:
                clip = f" ({row['rho_clipped']:.2f})" if row.get("rho_clipped", 0) > 0 else ""
                cells.append(f"{row['return']:.3f} / {row.get('win_rate', float('nan')):.3f} / "
                             f"{row.get('rho_ess_min', float('nan')):.2f}{clip}")
            table.append([f"{run['label']} ({run['seed']})", *cells])
        data = (f" (data: return {runs[0]['behaviour']:.3f}, win rate {runs[0]['data_win_rate']:.3f})"
                if "behaviour" in runs[0] else "")
        lines += [f"## {title}{data}", "",
                  markdown_table(header, table), ""]
    return "\n".join(lines)
