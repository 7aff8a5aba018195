"""``inspo report``: learning curves as PNG files and a markdown summary, for a training run or a search.

- A training run's folder (``inspo train --out DIR``): ``return.png`` (the evaluation return with its spread, the
  data's own return and the optimum where known), then one figure per group of what the curve records —
  ``losses.png``, ``entropy.png``, ``weights.png`` (weight statistics), ``other.png`` — and ``report.md`` with the
  final and best return, the data's return, timings and the configuration. A run still going or stopped early (no
  ``metrics.json`` yet) is read from its ``checkpoint.pt``.
- A search's folder (``inspo tune --out DIR``): ``trials.png`` (every trial's return and the best so far),
  ``curves.png`` (every trial's learning curve, the incumbent's highlighted), ``params.png`` (the return against
  each searched parameter), ``incumbent.png`` (the incumbent's learning curve per seed) and ``report.md`` with the
  incumbent, the default and the trials ranked.

The files go to ``DIR/report/`` unless ``--out`` says otherwise; each is written atomically. Needs matplotlib (the
optional extra ``plot``), imported only when a figure is drawn (:func:`figure_class`); the figures of
``inspo reproduce`` (:mod:`inspo.reproduce.plots`) are drawn with the same helpers.
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspo.checkpoint import atomic_write, write_text
from inspo.progress import ProgressBar

__all__ = ["INSTALL_HINT", "MatplotlibMissing", "Report", "add_parser", "figure_class", "finite",
           "grid", "report", "report_run", "report_tune", "save_png"]

INSTALL_HINT = "pip install 'inspo[plot]'"
_DPI = 110


@dataclass
class Report:
    """What :func:`report` wrote: the markdown file and the images, in the order the markdown shows them."""

    markdown: str
    images: list[str] = field(default_factory=list)


class MatplotlibMissing(RuntimeError):
    """matplotlib (the optional extra ``plot``) is not installed, so no figure can be drawn."""


def figure_class() -> Any:
    """matplotlib's ``Figure``, imported on first use; :class:`MatplotlibMissing` (with the install hint) without
    matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MatplotlibMissing(f"inspo report needs matplotlib to draw its figures: {INSTALL_HINT}") from exc
    return Figure


def save_png(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` as a PNG, atomically."""
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=_DPI))


def finite(x: Any) -> bool:
    """Whether ``x`` is a finite number (not None, not a bool, not NaN or infinite)."""
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
        keys += [k for k in row if k not in _RESERVED and k not in keys and finite(row[k])]
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
    pts = [(row["iteration"], row[key]) for row in curve if finite(row.get(key))]
    return [p[0] for p in pts], [p[1] for p in pts]


def grid(Figure: Any, n: int, cols: int = 3, size: tuple[float, float] = (4.4, 3.2)) -> tuple[Any, list[Any]]:
    """A figure of ``n`` panels, ``cols`` to a row, each ``size`` inches; returns the figure and its axes."""
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
    if finite(behaviour):
        ax.axhline(behaviour, color="gray", linestyle="--", linewidth=1.2, label=f"data (behaviour) {behaviour:.4g}")
    if finite(optimum):
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
                "final_return": curve[-1].get("return") if curve else None,
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
    if not any(finite(row.get("return")) for row in curve):
        raise ValueError(f"{run_dir}: the run trained without evaluation (eval 'none'), so it has no returns to "
                         f"report; evaluate its final.pt with inspo evaluate --env ENV")
    Figure = figure_class()
    groups = metric_groups(curve)
    bar = ProgressBar(1 + len(groups) + 1, "report", enabled=progress)
    images: list[tuple[str, str]] = []

    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.add_subplot()
    _plot_returns(ax, [(None, curve)], m.get("behaviour_return"), m.get("optimum"))
    ax.set_title(f"{cfg.get('algo', '?')} on {m.get('env') or cfg.get('dataset', '?')}: evaluation return")
    save_png(fig, out / "return.png")
    images.append(("Evaluation return", "return.png"))
    bar.update(1, "return.png")

    for g, keys in groups.items():
        fig, axes = grid(Figure, len(keys))
        for ax, key in zip(axes, keys):
            _plot_metric(ax, *_series(curve, key), key)
        fig.suptitle(_GROUP_TITLES[g])
        save_png(fig, out / f"{g}.png")
        images.append((_GROUP_TITLES[g], f"{g}.png"))
        bar.update(len(images), f"{g}.png")

    best_row = max((r for r in curve if finite(r.get("return"))), key=lambda r: r["return"])
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
    if finite(behaviour):
        lines.append(f"| data (behaviour) return | {_fmt(behaviour)} |")
    if finite(optimum):
        lines.append(f"| optimum | {_fmt(optimum)} |")
        if finite(final) and optimum:
            lines.append(f"| final / optimum | {final / optimum:.1%} |")
    if finite(m.get("bc_nll")):
        lines.append(f"| behaviour-cloning NLL | {_fmt(m['bc_nll'])} |")
    if finite(m.get("wall_time")):
        lines.append(f"| wall time | {m['wall_time']:.1f} s |")
    if finite(m.get("updates_per_second")) and m["updates_per_second"]:
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
    write_text(out / "report.md", "\n".join(lines))
    bar.update(bar.total, "report.md")
    bar.close()
    return Report(markdown=str(out / "report.md"), images=[str(out / name) for _, name in images])


# -- searches -----------------------------------------------------------------------------------------------------


def report_tune(tune_dir: str | Path, out: str | Path | None = None, progress: bool = False) -> Report:
    """Render an ``inspo tune`` folder: the trials' returns and learning curves, the parameters against the return,
    the incumbent's curve, and ``report.md`` (see the module docstring)."""
    tune_dir = Path(tune_dir)
    out = Path(out) if out is not None else tune_dir / "report"
    s = json.loads((tune_dir / "tune.json").read_text())
    trials, space = s["trials"], s["space"]
    if not trials:
        raise ValueError(f"{tune_dir}: the search has no finished trial yet; nothing to plot")
    Figure = figure_class()
    done = [t for t in trials if t["return"] is not None]
    failed = [t for t in trials if t["return"] is None]
    inc = s.get("incumbent") or (max(done, key=lambda t: t["return"]) if done else None)
    default = next((t for t in done if t.get("default") and t.get("iters") == (inc or {}).get("iters")), None)
    bar = ProgressBar(5, "report", enabled=progress)
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
    from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{s['objective']} return")
    ax.set_title(f"SMAC3 search: {len(trials)} trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    save_png(fig, out / "trials.png")
    images.append(("Return of each trial", "trials.png"))
    bar.update(1, "trials.png")

    curves = {t["trial"]: _mean_curve(tune_dir, t["trial"]) for t in done}
    if any(curves.values()):
        fig = Figure(figsize=(7.5, 4.4), layout="constrained")
        ax = fig.add_subplot()
        for t in done:  # thin lines: the shape of the search; the incumbent (and the default) drawn over them
            xs, ys = _series(curves[t["trial"]], "return")
            special = inc is not None and t["trial"] == inc["trial"]
            if xs and not special:
                ax.plot(xs, ys, linewidth=0.8, alpha=0.45, color="tab:blue", linestyle="--" if t.get("default")
                        else "-", label="default" if default is not None and t is default else None)
        if inc is not None and curves.get(inc["trial"]):
            ax.plot(*_series(curves[inc["trial"]], "return"), linewidth=2.4, color="tab:orange", marker="o",
                    markersize=3, label=f"incumbent (trial {inc['trial']})", zorder=5)
        ax.plot([], [], linewidth=0.8, color="tab:blue", label=f"the other trials ({len(done) - 1})")
        ax.set_xlabel("iteration")
        ax.set_ylabel("evaluation return" + (" (mean over seeds)" if len(s["seeds"]) > 1 else ""))
        ax.set_title("Learning curve of every trial")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        save_png(fig, out / "curves.png")
        images.append(("Learning curve of every trial", "curves.png"))
    bar.update(2, "curves.png")

    if done:
        fig, axes = grid(Figure, len(space))
        for ax, (name, p) in zip(axes, space.items()):
            # A categorical parameter is drawn at the position of its choice, labelled with it.
            x = (lambda v: p["choices"].index(v)) if "choices" in p else (lambda v: v)
            ax.scatter([x(t["params"][name]) for t in done], [t["return"] for t in done], s=18, color="tab:blue")
            if default is not None:
                ax.scatter([x(default["params"][name])], [default["return"]], marker="s", s=50, facecolors="none",
                           edgecolors="black", label="default")
            if inc is not None:
                ax.scatter([x(inc["params"][name])], [inc["return"]], marker="*", s=130, color="tab:orange",
                           label="incumbent")
            if "choices" in p:
                ax.set_xticks(range(len(p["choices"])), [str(c) for c in p["choices"]])
                ax.set_xlim(-0.5, len(p["choices"]) - 0.5)
            elif p["log"]:
                ax.set_xscale("log", base=2 if p.get("type") == "int" else 10)  # sizes: 16, 32, 64, ...
                if p.get("type") == "int":
                    ax.xaxis.set_major_formatter(ScalarFormatter())
                    ax.xaxis.set_minor_formatter(NullFormatter())
                pad = (p["upper"] / p["lower"]) ** 0.03
                ax.set_xlim(p["lower"] / pad, p["upper"] * pad)
            else:
                margin = 0.03 * (p["upper"] - p["lower"])
                ax.set_xlim(p["lower"] - margin, p["upper"] + margin)
            ax.set_title(name, fontsize=10)
            ax.set_ylabel("return")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8, loc="best")
        fig.suptitle("Return against each searched parameter")
        save_png(fig, out / "params.png")
        images.append(("Return against each parameter", "params.png"))
    bar.update(3, "params.png")

    if inc is not None:
        result = tune_dir / "trials" / f"{inc['trial']:04d}" / "result.json"
        runs = json.loads(result.read_text()).get("runs", []) if result.is_file() else []
        if runs:
            fig = Figure(figsize=(7.5, 4.4), layout="constrained")
            ax = fig.add_subplot()
            _plot_returns(ax, [(f"seed {r['seed']}" if len(runs) > 1 else None, r["curve"]) for r in runs],
                          None, None)
            ax.set_title(f"Incumbent (trial {inc['trial']}): evaluation return")
            save_png(fig, out / "incumbent.png")
            images.append(("Incumbent's learning curve", "incumbent.png"))
    bar.update(4, "incumbent.png")

    base, fid = s["base_config"], s.get("fidelity")
    lines = [f"# Hyper-parameter search: `{tune_dir.name}`", "",
             f"- folder: `{tune_dir}`; SMAC3 {s['smac']['version']} ({s['smac']['facade']}, seed {s['smac']['seed']})",
             f"- method: `{base.get('algo')}`, dataset: `{base.get('dataset')}`, {_budget(base)} per training",
             f"- objective: the {s['objective']} return, averaged over training seeds {s['seeds']}",
             *([f"- multi-fidelity (Hyperband, eta {fid['eta']}): {fid['min']} to {fid['max']} iterations per trial; "
                "the incumbent is the best trial at the highest budget reached"] if fid else []),
             f"- trials: {len(trials)} of {s['n_trials']} ({len(failed)} failed), {s['workers']} in parallel"
             + (f", {s['wall_time']:.0f} s" if finite(s.get("wall_time")) else " (still running)"), ""]
    if inc is not None:
        lines += ["## Incumbent", "",
                  f"Return **{_fmt(inc['return'])}** (trial {inc['trial']})"
                  + (f", against **{_fmt(default['return'])}** for the default (trial {default['trial']})."
                     if default is not None else "."), "",
                  f"Train it: `inspo train --config {tune_dir / 'incumbent.json'} --out DIR`", "",
                  "| parameter | default | incumbent | range |", "| --- | --- | --- | --- |"]
        for name, p in space.items():
            where = ("{" + ", ".join(map(str, p["choices"])) + "}" if "choices" in p else
                     f"[{_fmt(p['lower'])}, {_fmt(p['upper'])}]" + (", log" if p["log"] else ""))
            lines.append(f"| {name} | {_fmt(p['default'])} | {_fmt(inc['params'][name])} | {where} |")
        lines.append("")
    lines += ["## Figures", ""]
    for title, name in images:
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    ranked = sorted(done, key=lambda t: -t["return"])
    names = list(space)
    cols = ["iters", *names] if fid else names  # multi-fidelity: the budget each trial trained for

    def row(t: dict[str, Any]) -> str:
        return " | ".join(([_fmt(t["iters"])] if fid else []) + [_fmt(t["params"][n]) for n in names])

    lines += ["## Trials by return", "", "| rank | trial | return | " + " | ".join(cols) + " | note |",
              "| --- " * (len(cols) + 4) + "|"]
    for k, t in enumerate(ranked, 1):
        note = ", ".join(x for x in ("default" if t.get("default") else "",
                                     "incumbent" if inc and t["trial"] == inc["trial"] else "") if x)
        lines.append(f"| {k} | {t['trial']} | {_fmt(t['return'])} | {row(t)} | {note} |")
    for t in failed:
        lines.append(f"| – | {t['trial']} | {t['status']} | {row(t)} | see trials/{t['trial']:04d}/result.json |")
    lines.append("")
    write_text(out / "report.md", "\n".join(lines))
    bar.update(5, "report.md")
    bar.close()
    return Report(markdown=str(out / "report.md"), images=[str(out / name) for _, name in images])


def _mean_curve(tune_dir: Path, trial: int) -> list[dict[str, Any]]:
    """A trial's evaluation return at each evaluation, averaged over its training seeds (empty if not recorded)."""
    path = tune_dir / "trials" / f"{trial:04d}" / "result.json"
    runs = [r["curve"] for r in json.loads(path.read_text()).get("runs", [])] if path.is_file() else []
    rows = [[row for row in curve if finite(row.get("return"))] for curve in runs]
    return [{"iteration": group[0]["iteration"], "return": sum(r["return"] for r in group) / len(group)}
            for group in zip(*rows)]


def report(path: str | Path, out: str | Path | None = None, progress: bool = False) -> Report:
    """Render the folder of an ``inspo tune`` search (it has ``tune.json``) or of an ``inspo train`` run."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder")
    render: Callable[..., Report] = report_tune if (path / "tune.json").is_file() else report_run
    return render(path, out, progress=progress)


def _cmd_report(args: argparse.Namespace) -> int:
    if args.marl_eval is not None:
        from inspo import jsonio
        from inspo.marl_eval import marl_eval_record

        record = marl_eval_record(args.run_dir)
        jsonio.write(args.marl_eval, record)
        print(json.dumps({"marl_eval": args.marl_eval, "runs": len(args.run_dir)}, indent=2))
        return 0
    if args.out is not None and len(args.run_dir) > 1:
        raise ValueError(f"--out names one report folder, but {len(args.run_dir)} runs were given; leave it out "
                         f"(each report goes to RUN_DIR/report)")
    for run_dir in args.run_dir:
        result = report(run_dir, args.out, progress=True)
        print(json.dumps({"markdown": result.markdown, "images": result.images}, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``inspo report`` on the CLI's sub-command parser."""
    p = sub.add_parser("report", help="learning curves (PNG) and a markdown summary of a run or a search",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="+", help="the --out folder(s) of inspo train or inspo tune")
    p.add_argument("--out", default=None, help="folder for the report, with one RUN_DIR (default: RUN_DIR/report)")
    p.add_argument("--marl-eval", default=None, metavar="OUT.json",
                   help="instead of figures, write the runs' per-episode evaluation returns in marl-eval's JSON "
                        "layout to OUT.json (default: no export)")
    p.set_defaults(func=_cmd_report)
