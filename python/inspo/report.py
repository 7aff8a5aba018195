"""``inspo report``: learning curves as PNG files and a markdown summary, for a training run or a search.

- A training run's folder (``inspo train --out DIR``): ``return.png`` (the evaluation return with its spread, the
  data's own return and the optimum where known), then one figure per group of what the curve records —
  ``losses.png``, ``entropy.png``, ``weights.png`` (weight statistics), ``other.png`` — and ``report.md`` with the
  final and best return, the data's return, timings and the configuration. A run still going or stopped early (no
  ``metrics.json`` yet) is read from its ``checkpoint.pt``.
- A search's folder (``inspo tune --out DIR``): ``trials.png`` (every trial's return and the best so far),
  ``params.png`` (the return against each searched parameter), ``incumbent.png`` (the incumbent's learning
  curve) and ``report.md`` with the incumbent, the default and the best trials.

The files go to ``DIR/report/`` unless ``--out`` says otherwise; each is written atomically. The figures of
``inspo reproduce`` (grouped bar charts of its tables) are drawn here too: :func:`plot_matrix`,
:func:`plot_bridge`, :func:`plot_baselines`. Needs matplotlib (the optional extra ``plot``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

import numpy as np

from inspo.checkpoint import atomic_write

__all__ = ["BarSeries", "MatplotlibMissing", "ProgressBar", "Report", "add_parser", "grouped_bar_chart",
           "plot_baselines", "plot_bridge", "plot_matrix", "report", "report_run", "report_tune"]

INSTALL_HINT = "pip install 'inspo[plot]'"
_DPI = 110


class ProgressBar:
    """A one-line progress bar on a terminal (stderr by default); silent when the stream is not a terminal."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream: TextIO | None = None,
                 width: int = 24) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.label, self.width = max(total, 1), label, width
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(enabled and isatty is not None and isatty())
        self.start = time.perf_counter()
        self.drawn = False

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled:
            return
        frac = min(max(done / self.total, 0.0), 1.0)
        filled = int(round(frac * self.width))
        elapsed = time.perf_counter() - self.start
        eta = f" eta {elapsed / done * (self.total - done):.0f}s" if 0 < done < self.total else ""
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
                          f"{elapsed:.0f}s{eta}  {note}\x1b[K")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.enabled and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


@dataclass
class Report:
    """What :func:`report` wrote: the markdown file and the images, in the order the markdown shows them."""

    markdown: str
    images: list[str] = field(default_factory=list)


class MatplotlibMissing(RuntimeError):
    """matplotlib (the optional extra ``plot``) is not installed, so no figure can be drawn."""


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MatplotlibMissing(f"inspo report needs matplotlib to draw its figures: {INSTALL_HINT}") from exc
    return Figure


def _save_png(fig: Any, path: Path) -> None:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=_DPI))


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()))


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}"
    return str(x)


def _budget(cfg: dict[str, Any]) -> str:
    if cfg.get("algo") == "bc":
        return f"{cfg.get('bc_steps')} behaviour-cloning steps"
    return f"{cfg.get('iters')} iterations after {cfg.get('bc_steps')} behaviour-cloning steps"


# -- training runs ------------------------------------------------------------------------------------------------

_RESERVED = ("iteration", "return", "return_std")


def curve_statistics(curve: list[dict[str, Any]]) -> list[str]:
    """The statistics a curve records besides the return, in order of first appearance."""
    keys: list[str] = []
    for row in curve:
        keys += [k for k in row if k not in _RESERVED and k not in keys and _finite(row[k])]
    return keys


def metric_groups(curve: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The curve's statistics with at least two values (a curve to draw; ``bc_nll``, recorded once before the
    learner starts, is not), sorted into the report's figures."""
    keys = [k for k in curve_statistics(curve) if len(_series(curve, k)[0]) >= 2]
    groups: dict[str, list[str]] = {"losses": [], "entropy": [], "weights": [], "other": []}
    for k in keys:
        if k.endswith("loss") or k.endswith("nll"):
            groups["losses"].append(k)
        elif "entropy" in k:
            groups["entropy"].append(k)
        elif any(w in k for w in ("weight", "rho", "lambda")):
            groups["weights"].append(k)
        else:
            groups["other"].append(k)
    return {g: ks for g, ks in groups.items() if ks}


_GROUP_TITLES = {"losses": "Losses", "entropy": "Policy entropy", "weights": "Weight statistics",
                 "other": "Other statistics"}


def _series(curve: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(row["iteration"], row[key]) for row in curve if _finite(row.get(key))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _grid(Figure: Any, n: int, cols: int = 3, size: tuple[float, float] = (4.4, 3.2)) -> tuple[Any, list[Any]]:
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def _plot_metric(ax: Any, xs: list[float], ys: list[float], title: str) -> None:
    ax.plot(xs, ys, marker="o" if len(xs) <= 40 else None, markersize=3, linewidth=1.4, color="tab:blue")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)
    positive = [y for y in ys if y > 0]
    if len(positive) == len(ys) and len(ys) > 1 and max(ys) / min(ys) > 1e3:
        ax.set_yscale("log")


def _plot_returns(ax: Any, curves: list[tuple[str | None, list[dict[str, Any]]]], behaviour: float | None,
                  optimum: float | None) -> None:
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for k, (label, curve) in enumerate(curves):
        colour = colours[k % len(colours)]
        xs, ys = _series(curve, "return")
        if not xs:
            continue
        _, std = _series(curve, "return_std")
        ax.plot(xs, ys, marker="o" if len(xs) <= 40 else None, markersize=3.5, linewidth=1.8, color=colour,
                label=label or "evaluation return")
        if len(std) == len(ys) and any(s > 0 for s in std):
            ax.fill_between(xs, [y - s for y, s in zip(ys, std)], [y + s for y, s in zip(ys, std)], color=colour,
                            alpha=0.18, linewidth=0, label=None if label else "± std over episodes")
        best = max(range(len(ys)), key=lambda i: ys[i])
        ax.plot([xs[best]], [ys[best]], marker="*", markersize=12, color=colour, linestyle="none",
                label=f"best {ys[best]:.4g} (iteration {xs[best]:g})")
    if _finite(behaviour):
        ax.axhline(behaviour, color="gray", linestyle="--", linewidth=1.2, label=f"data (behaviour) {behaviour:.4g}")
    if _finite(optimum):
        ax.axhline(optimum, color="black", linestyle=":", linewidth=1.2, label=f"optimum {optimum:.4g}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _load_run(run_dir: Path) -> dict[str, Any]:
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        m["status"] = "finished"
        return m
    state = run_dir / "checkpoint.pt"
    if state.is_file():  # a run still going, or stopped: its last saved state has the curve so far
        from inspo import checkpoint

        saved = checkpoint.load(state)
        run, cfg = saved["run"], saved["config"]
        curve = list(run["curve"])
        total = cfg["bc_steps"] + cfg["iters"]
        return {"config": cfg, "env": None, "curve": curve, "status": f"unfinished: step {run['step']} of {total}",
                "final_return": curve[-1]["return"] if curve else None,
                "best_return": run["best_return"] if curve else None, "behaviour_return": None, "optimum": None,
                "wall_time": run.get("wall_time"), "updates_per_second": None, "bc_nll": run.get("bc_nll")}
    raise FileNotFoundError(f"{run_dir} has neither metrics.json nor checkpoint.pt (nor tune.json): "
                            "not the --out folder of inspo train or inspo tune")


def report_run(run_dir: str | Path, out: str | Path | None = None, progress: bool = False) -> Report:
    """Render a training run's folder: PNG learning curves and ``report.md`` (see the module docstring)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report"
    m = _load_run(run_dir)
    curve, cfg = m["curve"], m.get("config") or {}
    if not curve:
        raise ValueError(f"{run_dir}: the run has not evaluated its policy yet; nothing to plot")
    Figure = _figure_class()
    groups = metric_groups(curve)
    bar = ProgressBar(1 + len(groups) + 1, "report", enabled=progress)
    images: list[tuple[str, str]] = []

    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.add_subplot()
    _plot_returns(ax, [(None, curve)], m.get("behaviour_return"), m.get("optimum"))
    ax.set_title(f"{cfg.get('algo', '?')} on {m.get('env') or cfg.get('dataset', '?')}: evaluation return")
    _save_png(fig, out / "return.png")
    images.append(("Evaluation return", "return.png"))
    bar.update(1, "return.png")

    for g, keys in groups.items():
        fig, axes = _grid(Figure, len(keys))
        for ax, key in zip(axes, keys):
            _plot_metric(ax, *_series(curve, key), key)
        fig.suptitle(_GROUP_TITLES[g])
        _save_png(fig, out / f"{g}.png")
        images.append((_GROUP_TITLES[g], f"{g}.png"))
        bar.update(len(images), f"{g}.png")

    best_row = max((r for r in curve if _finite(r.get("return"))), key=lambda r: r["return"])
    final, best = m.get("final_return"), m.get("best_return")
    behaviour, optimum = m.get("behaviour_return"), m.get("optimum")
    lines = [f"# Training report: `{run_dir.name}`", "",
             f"- run folder: `{run_dir}` ({m['status']})",
             f"- method: `{cfg.get('algo')}` (order `{cfg.get('order')}`), environment: `{m.get('env') or '?'}`",
             f"- dataset: `{cfg.get('dataset')}`",
             f"- {_budget(cfg)}; {len(curve)} evaluations of {cfg.get('eval_episodes')} episodes"
             f"{' (greedy)' if cfg.get('eval_greedy') else ''}, seed {cfg.get('seed')}",
             "", "## Results", "", "| measure | value |", "| --- | --- |",
             f"| final return | {_fmt(final)} (iteration {curve[-1]['iteration']}) |",
             f"| best return | {_fmt(best)} (iteration {best_row['iteration']}) |"]
    if _finite(behaviour):
        lines.append(f"| data (behaviour) return | {_fmt(behaviour)} |")
    if _finite(optimum):
        lines.append(f"| optimum | {_fmt(optimum)} |")
        if _finite(final) and optimum:
            lines.append(f"| final / optimum | {final / optimum:.1%} |")
    if _finite(m.get("bc_nll")):
        lines.append(f"| behaviour-cloning NLL | {_fmt(m['bc_nll'])} |")
    if _finite(m.get("wall_time")):
        lines.append(f"| wall time | {m['wall_time']:.1f} s |")
    if _finite(m.get("updates_per_second")) and m["updates_per_second"]:
        lines.append(f"| updates per second | {m['updates_per_second']:.1f} |")
    lines += ["", "## Learning curves", ""]
    for title, name in images:
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    stats = curve_statistics(curve)
    if stats:
        lines += ["## Statistics at the evaluations", "", "| statistic | first | last | min | max |",
                  "| --- | --- | --- | --- | --- |"]
        for k in stats:
            _, ys = _series(curve, k)
            lines.append(f"| {k} | {_fmt(ys[0])} | {_fmt(ys[-1])} | {_fmt(min(ys))} | {_fmt(max(ys))} |")
        lines.append("")
    lines += ["## Configuration", "", "<details><summary>TrainConfig</summary>", "", "```json",
              json.dumps(cfg, indent=2), "```", "", "</details>", ""]
    _write_text(out / "report.md", "\n".join(lines))
    bar.update(bar.total, "report.md")
    bar.close()
    return Report(markdown=str(out / "report.md"), images=[str(out / name) for _, name in images])


# -- searches -----------------------------------------------------------------------------------------------------


def report_tune(tune_dir: str | Path, out: str | Path | None = None, progress: bool = False) -> Report:
    """Render an ``inspo tune`` folder: the trials, the parameters against the return, the incumbent's curve."""
    tune_dir = Path(tune_dir)
    out = Path(out) if out is not None else tune_dir / "report"
    s = json.loads((tune_dir / "tune.json").read_text())
    trials, space = s["trials"], s["space"]
    if not trials:
        raise ValueError(f"{tune_dir}: the search has no finished trial yet; nothing to plot")
    Figure = _figure_class()
    done = [t for t in trials if t["return"] is not None]
    failed = [t for t in trials if t["return"] is None]
    inc = s.get("incumbent") or (max(done, key=lambda t: t["return"]) if done else None)
    default = next((t for t in done if t.get("default")), None)
    bar = ProgressBar(4, "report", enabled=progress)
    images: list[tuple[str, str]] = []

    fig = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = fig.add_subplot()
    if done:
        ax.scatter([t["trial"] for t in done], [t["return"] for t in done], s=22, color="tab:blue", label="trial",
                   zorder=3)
        running, best, xs = [], -math.inf, []
        for t in trials:
            if t["return"] is not None:
                best = max(best, t["return"])
            if math.isfinite(best):
                xs.append(t["trial"])
                running.append(best)
        ax.step(xs, running, where="post", color="tab:green", linewidth=1.6, label="best so far")
        low = min(t["return"] for t in done)
        if failed:
            ax.scatter([t["trial"] for t in failed], [low] * len(failed), marker="x", color="tab:red", s=30,
                       label="failed", zorder=3)
    if default is not None:
        ax.scatter([default["trial"]], [default["return"]], marker="s", s=60, facecolors="none",
                   edgecolors="black", label=f"default {default['return']:.4g}", zorder=4)
    if inc is not None:
        ax.scatter([inc["trial"]], [inc["return"]], marker="*", s=160, color="tab:orange",
                   label=f"incumbent {inc['return']:.4g}", zorder=5)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{s['objective']} return")
    ax.set_title(f"SMAC3 search: {len(trials)} trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _save_png(fig, out / "trials.png")
    images.append(("Return of each trial", "trials.png"))
    bar.update(1, "trials.png")

    if done:
        fig, axes = _grid(Figure, len(space))
        for ax, (name, p) in zip(axes, space.items()):
            ax.scatter([t["params"][name] for t in done], [t["return"] for t in done], s=18, color="tab:blue")
            if default is not None:
                ax.scatter([default["params"][name]], [default["return"]], marker="s", s=50, facecolors="none",
                           edgecolors="black", label="default")
            if inc is not None:
                ax.scatter([inc["params"][name]], [inc["return"]], marker="*", s=130, color="tab:orange",
                           label="incumbent")
            if p["log"]:
                ax.set_xscale("log")
            pad = (p["upper"] / p["lower"]) ** 0.03 if p["log"] else None
            if pad:
                ax.set_xlim(p["lower"] / pad, p["upper"] * pad)
            else:
                margin = 0.03 * (p["upper"] - p["lower"])
                ax.set_xlim(p["lower"] - margin, p["upper"] + margin)
            ax.set_title(name, fontsize=10)
            ax.set_ylabel("return")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8, loc="best")
        fig.suptitle("Return against each searched parameter")
        _save_png(fig, out / "params.png")
        images.append(("Return against each parameter", "params.png"))
    bar.update(2, "params.png")

    if inc is not None:
        result = tune_dir / "trials" / f"{inc['trial']:04d}" / "result.json"
        runs = json.loads(result.read_text()).get("runs", []) if result.is_file() else []
        if runs:
            fig = Figure(figsize=(7.5, 4.4), layout="constrained")
            ax = fig.add_subplot()
            _plot_returns(ax, [(f"seed {r['seed']}" if len(runs) > 1 else None, r["curve"]) for r in runs],
                          None, None)
            ax.set_title(f"Incumbent (trial {inc['trial']}): evaluation return")
            _save_png(fig, out / "incumbent.png")
            images.append(("Incumbent's learning curve", "incumbent.png"))
    bar.update(3, "incumbent.png")

    base = s["base_config"]
    lines = [f"# Hyper-parameter search: `{tune_dir.name}`", "",
             f"- folder: `{tune_dir}`; SMAC3 {s['smac']['version']} ({s['smac']['facade']}, seed {s['smac']['seed']})",
             f"- method: `{base.get('algo')}`, dataset: `{base.get('dataset')}`, {_budget(base)} per training",
             f"- objective: the {s['objective']} return, averaged over training seeds {s['seeds']}",
             f"- trials: {len(trials)} of {s['n_trials']} ({len(failed)} failed), {s['workers']} in parallel"
             + (f", {s['wall_time']:.0f} s" if _finite(s.get("wall_time")) else " (still running)"), ""]
    if inc is not None:
        lines += ["## Incumbent", "",
                  f"Return **{_fmt(inc['return'])}** (trial {inc['trial']})"
                  + (f", against **{_fmt(default['return'])}** for the default (trial {default['trial']})."
                     if default is not None else "."), "",
                  f"Train it: `inspo train --config {tune_dir / 'incumbent.json'} --out DIR`", "",
                  "| parameter | default | incumbent | range |", "| --- | --- | --- | --- |"]
        for name, p in space.items():
            scale = ", log" if p["log"] else ""
            lines.append(f"| {name} | {_fmt(p['default'])} | {_fmt(inc['params'][name])} | "
                         f"[{_fmt(p['lower'])}, {_fmt(p['upper'])}]{scale} |")
        lines.append("")
    lines += ["## Figures", ""]
    for title, name in images:
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    ranked = sorted(done, key=lambda t: -t["return"])
    names = list(space)
    lines += ["## Trials by return", "", "| rank | trial | return | " + " | ".join(names) + " | note |",
              "| --- " * (len(names) + 4) + "|"]
    for k, t in enumerate(ranked, 1):
        note = ", ".join(x for x in ("default" if t.get("default") else "",
                                     "incumbent" if inc and t["trial"] == inc["trial"] else "") if x)
        lines.append(f"| {k} | {t['trial']} | {_fmt(t['return'])} | "
                     + " | ".join(_fmt(t["params"][n]) for n in names) + f" | {note} |")
    for t in failed:
        lines.append(f"| – | {t['trial']} | {t['status']} | " + " | ".join(_fmt(t["params"][n]) for n in names)
                     + f" | see trials/{t['trial']:04d}/result.json |")
    lines.append("")
    _write_text(out / "report.md", "\n".join(lines))
    bar.update(4, "report.md")
    bar.close()
    return Report(markdown=str(out / "report.md"), images=[str(out / name) for _, name in images])


# -- the tables of inspo reproduce ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BarSeries:
    """One bar per group (a method, or the tabular solver): mean and std; a NaN mean draws no bar there."""

    label: str
    means: Sequence[float]
    stds: Sequence[float]


# (colour, line style) of the reference lines, in the order they are given: the optimum first by convention.
_REFERENCE_STYLES = (("black", ":"), ("tab:gray", "--"), ("tab:red", "-."))


def grouped_bar_chart(path: str | Path, title: str, groups: Sequence[str],
                      panels: Sequence[tuple[str, Sequence[BarSeries]]],
                      references: Sequence[tuple[str, Sequence[float | None]]] = (), ylabel: str = "return") -> None:
    """Write a PNG with one panel per ``(panel title, series)``, stacked: in each group a bar per series with its
    std as an error bar, and each reference (label, one value per group, None for none) as a horizontal line across
    its group. Raises :class:`MatplotlibMissing` without matplotlib."""
    Figure = _figure_class()
    n_series = max(len(series) for _, series in panels)
    fig = Figure(figsize=(max(5.0, 0.32 * len(groups) * n_series + 3.0), 3.6 * len(panels)), layout="constrained")
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    width = 0.8 / n_series
    long_labels = any(len(g) > 14 for g in groups)
    for p, (panel_title, series) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, p + 1)
        for k, s in enumerate(series):
            xs = [g - 0.4 + width * (k + 0.5) for g in range(len(groups))]
            means = [m if _finite(m) else math.nan for m in s.means]
            ax.bar(xs, means, width=width * 0.92, yerr=s.stds, capsize=3, color=colours[k % len(colours)],
                   label=s.label, error_kw={"elinewidth": 1.0})
        for (label, values), (colour, style) in zip(references, _REFERENCE_STYLES):
            drawn = False
            for g, value in enumerate(values):
                if _finite(value):
                    ax.hlines(value, g - 0.45, g + 0.45, colors=colour, linestyles=style, linewidth=1.6,
                              label=None if drawn else label)
                    drawn = True
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xticks(range(len(groups)), groups, rotation=25 if long_labels else 0,
                      ha="right" if long_labels else "center", fontsize=8 if long_labels else 9)
        ax.set_ylabel(ylabel)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title)
    _save_png(fig, Path(path))


def _groups(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The rows' datasets, in first-seen order."""
    return list(dict.fromkeys(r["dataset"] for r in rows))


def _method_panels(rows: Sequence[dict[str, Any]], seeds: int) -> list[tuple[str, list[BarSeries]]]:
    """Final and best return per dataset (group) and method (series) of ``inspo reproduce`` rows."""
    groups = _groups(rows)
    panels = []
    for key, what in (("final", "final policy"), ("best", "best evaluation")):
        series = []
        for label in dict.fromkeys(r["label"] for r in rows):
            by_data = {r["dataset"]: r[key] for r in rows if r["label"] == label}
            stats = [by_data.get(g, {"mean": math.nan, "std": 0.0}) for g in groups]
            series.append(BarSeries(label, [s["mean"] for s in stats], [s["std"] for s in stats]))
        panels.append((f"return of the {what}, mean ± std over {seeds} seed{'s' * (seeds > 1)}", series))
    return panels


def _optimum_line(rows: Sequence[dict[str, Any]]) -> tuple[str, list[float | None]]:
    optimum = {r["dataset"]: r["optimum"] for r in rows}
    return "optimum", [optimum[g] for g in _groups(rows)]


def plot_matrix(record: dict[str, Any], path: str | Path) -> None:
    """``matrix.png`` of ``inspo reproduce matrix``: tabular and neural J per row, and the SPEC value."""
    rows = record["rows"]
    groups = [f"{'XOR' if r['game'] == 'xor' else 'M-NE'} {r['data']}: {r['setting']}" for r in rows]
    none = {"mean": math.nan, "std": 0.0}  # the rho-disabled row has no tabular value
    series = [BarSeries(label, [(r[key] or none)["mean"] for r in rows], [(r[key] or none)["std"] for r in rows])
              for label, key in (("tabular J", "tabular"), ("neural J (final)", "neural_final"))]
    grouped_bar_chart(path, "Matrix games: exact tabular solver vs neural trainer",
                      groups, [(f"J, mean ± std over {len(record['seeds'])} seeds", series)],
                      [("SPEC section 3", [r["spec_j"] for r in rows])], ylabel="J")


def plot_bridge(record: dict[str, Any], path: str | Path) -> None:
    """``bridge.png`` of ``inspo reproduce bridge``: final and best return per dataset and method, and the optimum."""
    rows = record["rows"]
    grouped_bar_chart(path, "Bridge: InSPO and behaviour cloning", _groups(rows),
                      _method_panels(rows, len(record["seeds"])), [_optimum_line(rows)])


def plot_baselines(record: dict[str, Any], path: str | Path) -> None:
    """``baselines_<env>.png`` of ``inspo reproduce baselines``: final and best return per dataset and method."""
    rows = record["rows"]
    grouped_bar_chart(path, f"Baselines and InSPO on {record['env_title']}", _groups(rows),
                      _method_panels(rows, len(record["seeds"])), [_optimum_line(rows)])


def plot_smax(record: dict[str, Any], path: str | Path) -> None:
    """``smax.png`` of ``inspo reproduce smax``: one panel per dataset (map, quality) with the learning curve of
    each method (mean over seeds; return solid, win rate dashed on the right axis; a method evaluated once, behaviour
    cloning, as a horizontal line) and the data's own return."""
    Figure = _figure_class()
    rows = record["rows"]
    datasets = _groups(rows)
    fig, axes = _grid(Figure, len(datasets), cols=3, size=(4.8, 3.4))
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for ax, name in zip(axes, datasets):
        wins = ax.twinx()
        wins.set_ylim(-0.02, 1.02)
        wins.set_ylabel("win rate", fontsize=8)
        mine = [r for r in rows if r["dataset"] == name]
        for k, row in enumerate(mine):
            colour = colours[k % len(colours)]
            for key, axis, style, what in (("curves", ax, "-", "return"), ("win_curves", wins, "--", "win rate")):
                curves = [c for c in row[key] if c and all(_finite(v) for _, v in c)]
                if not curves:
                    continue
                length = min(len(c) for c in curves)
                xs = [c[0] for c in curves[0][:length]]
                ys = np.mean([[v for _, v in c[:length]] for c in curves], axis=0)
                if length == 1:  # behaviour cloning: one evaluation, drawn across the panel
                    axis.axhline(ys[0], linestyle=style, color=colour, linewidth=1.4,
                                 label=f"{row['label']} {what} {ys[0]:.3g}")
                    continue
                axis.plot(xs, ys, style, color=colour, linewidth=1.6, marker="o" if length <= 20 else None,
                          markersize=3, label=f"{row['label']} {what}")
        ax.axhline(mine[0]["data_return"], color="gray", linestyle=":", linewidth=1.2,
                   label=f"data return {mine[0]['data_return']:.3g}")
        ax.set_title(f"{name} (data win rate {mine[0]['data_win_rate']:.2f})", fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("return")
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()
        extra = wins.get_legend_handles_labels()
        ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="lower right")
    fig.suptitle(f"SMAX: InSPO and BC learning curves, mean over {len(record['seeds'])} seed"
                 f"{'s' * (len(record['seeds']) > 1)}")
    _save_png(fig, Path(path))


def report(path: str | Path, out: str | Path | None = None, progress: bool = False) -> Report:
    """Render the folder of an ``inspo tune`` search (it has ``tune.json``) or of an ``inspo train`` run."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder")
    render: Callable[..., Report] = report_tune if (path / "tune.json").is_file() else report_run
    return render(path, out, progress=progress)


def _cmd_report(args: argparse.Namespace) -> int:
    result = report(args.run_dir, args.out, progress=True)
    print(json.dumps({"markdown": result.markdown, "images": result.images}, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``inspo report`` on the CLI's sub-command parser."""
    p = sub.add_parser("report", help="learning curves (PNG) and a markdown summary of a run or a search",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="the --out folder of inspo train or inspo tune")
    p.add_argument("--out", default=None, help="folder for the report (default: RUN_DIR/report)")
    p.set_defaults(func=_cmd_report)
