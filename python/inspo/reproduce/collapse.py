"""``inspo reproduce collapse``: InSPO on multi-policy SMAX data with the teammate ratio clipped at several
``rho_max`` and with the ratio off, its return, win rate and the effective sample size of the ratio (the
``rho_ess_min`` that InSPO records at each evaluation, :mod:`inspo.algos.ratio_diagnostics`) against iterations;
``smax_collapse.png``, ``smax_collapse.json`` and ``smax_collapse_runs.md``.

Per dataset and seed, the ``rho_max`` values train as one population (``--per-member rho_max=...``, the same
behaviour-cloned mu for every member) and the ratio-off variant as a single run; then, on the first dataset, a short
population of the first and last ``rho_max`` evaluated every ``early_every`` iterations shows how the first
iterations go. Datasets and runs are cached under ``<out>/cache/``: a population or run whose folder holds the
finished result of the same config is read back, anything else there is trained again from scratch.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspo.checkpoint import write_text
from inspo.config import TrainConfig
from inspo.data import load_dataset
from inspo.errors import InspoError
from inspo.population_training import read_summary, train_population
from inspo.report import figure_class, grid, save_png
from inspo.reproduce.runner import markdown_table, provenance
from inspo.reproduce.smax import smax_dataset, smax_dataset_name
from inspo.training import train

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


def _population(cfg: TrainConfig) -> list[dict[str, Any]]:
    """The members' ``metrics.json`` of the population ``cfg``, trained unless its folder holds it finished."""
    try:
        done = read_summary(cfg.out)
        cached = done.get("status") == "done" and done["config"] == cfg.to_dict()
    except (FileNotFoundError, InspoError):
        cached = False
    if not cached:
        train_population(cfg, overwrite=True)
    return [json.loads((Path(m.out) / "metrics.json").read_text()) for m in cfg.members()]


def _single(cfg: TrainConfig) -> dict[str, Any]:
    """The ``metrics.json`` of the run ``cfg``, trained unless its folder holds it finished."""
    path = Path(cfg.out) / "metrics.json"
    if not (path.is_file() and json.loads(path.read_text())["config"] == cfg.to_dict()):
        train(cfg, overwrite=True)
    return json.loads(path.read_text())


def _curve(metrics: dict[str, Any]) -> list[dict[str, float]]:
    keys = ("iteration", "return", "win_rate", "rho_ess_min", "rho_ess_mean", "rho_clipped")
    return [{k: row[k] for k in keys if k in row} for row in metrics["curve"]]


def reproduce_collapse(out: Path, suite: CollapseSuite = COLLAPSE, policies: Path | None = None,
                       command: str = "inspo reproduce collapse") -> dict[str, Any]:
    """Train the suite's variants (see the module docstring), write ``<out>/smax_collapse.{json,png}`` and
    ``<out>/smax_collapse_runs.md``; returns the record. ``policies``: a folder of ``<map>/`` folders written by
    ``inspo online train`` (None: ``data/smax_policies``)."""
    started = time.perf_counter()
    cache = out / "cache"
    variants: list[dict[str, Any]] = []
    for name in suite.datasets:
        map_name, quality = smax_dataset_name(name)
        data = smax_dataset(map_name, quality, suite.episodes, cache, policies, suite.data_seed)
        runs = cache / "runs" / "collapse" / name
        data_win = load_dataset(data, verify=False).manifest["behaviour"]["win_rate"]
        base = dict(dataset=str(data), iters=suite.iters, bc_steps=suite.bc_steps, eval_every=suite.eval_every,
                    eval_episodes=suite.eval_episodes, **suite.settings)
        for seed in suite.seeds:
            pop = TrainConfig(**base, seed=seed, per_member={"rho_max": list(suite.rho_max)},
                              out=str(runs / f"rho_max-seed{seed}"))
            for rho_max, metrics in zip(suite.rho_max, _population(pop)):
                variants.append({"dataset": name, "seed": seed, "label": f"rho_max {rho_max:g}",
                                 "behaviour": metrics["behaviour_return"], "data_win_rate": data_win,
                                 "curve": _curve(metrics)})
            off = TrainConfig(**base, seed=seed, use_rho=False, out=str(runs / f"no_rho-seed{seed}"))
            metrics = _single(off)
            variants.append({"dataset": name, "seed": seed, "label": "rho off",
                             "behaviour": metrics["behaviour_return"], "data_win_rate": data_win,
                             "curve": _curve(metrics)})
    first = suite.datasets[0]
    early_rho = [suite.rho_max[0], suite.rho_max[-1]]
    map_name, quality = smax_dataset_name(first)
    early = TrainConfig(dataset=str(smax_dataset(map_name, quality, suite.episodes, cache, policies,
                                                 suite.data_seed)),
                        iters=suite.early_iters, bc_steps=suite.bc_steps, eval_every=suite.early_every,
                        eval_episodes=suite.eval_episodes, **suite.settings, seed=suite.seeds[0],
                        per_member={"rho_max": early_rho}, out=str(cache / "runs" / "collapse" / f"{first}-early"))
    early_runs = [{"dataset": first, "seed": suite.seeds[0], "label": f"rho_max {r:g}", "curve": _curve(m)}
                  for r, m in zip(early_rho, _population(early))]
    record = {**provenance(command, suite.seeds, time.perf_counter() - started), "suite": suite.__dict__,
              "variants": variants, "early": early_runs}
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
