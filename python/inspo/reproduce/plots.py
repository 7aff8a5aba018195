"""The grouped bar charts of ``inspo reproduce``'s tables. matplotlib (the optional extra ``plot``) is imported only
when a figure is drawn: without it, :class:`inspo.report.MatplotlibMissing` says how to install it."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspo.report import figure_class, finite, save_png

__all__ = ["BarSeries", "grouped_bar_chart", "groups", "method_panels", "optimum_line"]


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
    its group. Raises :class:`inspo.report.MatplotlibMissing` without matplotlib."""
    Figure = figure_class()
    n_series = max(len(series) for _, series in panels)
    fig = Figure(figsize=(max(5.0, 0.32 * len(groups) * n_series + 3.0), 3.6 * len(panels)), layout="constrained")
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    width = 0.8 / n_series
    long_labels = any(len(g) > 14 for g in groups)
    for p, (panel_title, series) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, p + 1)
        for k, s in enumerate(series):
            xs = [g - 0.4 + width * (k + 0.5) for g in range(len(groups))]
            means = [m if finite(m) else math.nan for m in s.means]
            ax.bar(xs, means, width=width * 0.92, yerr=s.stds, capsize=3, color=colours[k % len(colours)],
                   label=s.label, error_kw={"elinewidth": 1.0})
        for (label, values), (colour, style) in zip(references, _REFERENCE_STYLES):
            drawn = False
            for g, value in enumerate(values):
                if finite(value):
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
    save_png(fig, Path(path))


def groups(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The rows' datasets, in first-seen order."""
    return list(dict.fromkeys(r["dataset"] for r in rows))


def method_panels(rows: Sequence[dict[str, Any]], seeds: int) -> list[tuple[str, list[BarSeries]]]:
    """Final and best return per dataset (group) and method (series) of ``inspo reproduce`` rows."""
    datasets = groups(rows)
    panels = []
    for key, what in (("final", "final policy"), ("best", "best evaluation")):
        series = []
        for label in dict.fromkeys(r["label"] for r in rows):
            by_data = {r["dataset"]: r[key] for r in rows if r["label"] == label}
            summaries = [by_data.get(g, {"mean": math.nan, "std": 0.0}) for g in datasets]
            series.append(BarSeries(label, [s["mean"] for s in summaries], [s["std"] for s in summaries]))
        panels.append((f"return of the {what}, mean ± std over {seeds} seed{'s' * (seeds > 1)}", series))
    return panels


def optimum_line(rows: Sequence[dict[str, Any]]) -> tuple[str, list[float | None]]:
    """The per-dataset optimum of ``inspo reproduce`` rows, as a reference line of :func:`grouped_bar_chart`."""
    optimum = {r["dataset"]: r["optimum"] for r in rows}
    return "optimum", [optimum[g] for g in groups(rows)]
