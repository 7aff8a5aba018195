"""MA-ICQ's critic runaway on 3s_vs_5z-medium-replay (`smax_study.md`, twentieth sitting): the largest bootstrap
factor of the critic's target (``target_weight_max``), the critic's TD loss and the evaluation return, per
iteration, for the table's seed-0 config at its searched critic temperature (45.14), at the paper code's 1000, and
at 45.14 with a critic learning rate ten times smaller.

The runs' ``progress.csv`` files are kept in ``smax_icq_runaway/``; made from the study's clone with ``inspo train
--config <the table's seed-0 config> --clones results/smax_study_avx512/cache/clones --iters 30000
[--icq-critic-temp 1000 | --lr-critic 0.0003322]``. (``2s3z_expert_avx512_seed1.csv``, not plotted: the AVX-512
type's 2s3z-expert seed 1 at its searched 309.1, trained again with the factor logged.) Then::

    python results/smax_icq_runaway.py
"""
from __future__ import annotations

import csv
from pathlib import Path

from inspo.report import figure_class, save_png

HERE = Path(__file__).resolve().parent
RUNS = {"critic temperature 45.14 (the search's)": "temp45.csv", "critic temperature 1000 (the paper's code)":
        "temp1000.csv", "45.14, lr_critic / 10": "lr_critic_tenth.csv"}
DATA_RETURN = 0.741  # 3s_vs_5z-medium-replay's own return (the AVX-512 type's data)


def _columns(path: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            for key in ("target_weight_max", "q_loss", "return"):
                if row[key]:  # losses are empty on the cloning and evaluation-only rows
                    out.setdefault(key, []).append((int(row["iteration"]), float(row[key])))
    return out


def main() -> None:
    fig = figure_class()(figsize=(15, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for label, name in RUNS.items():
        cols = _columns(HERE / "smax_icq_runaway" / name)
        for ax, key in zip(axes, ("target_weight_max", "q_loss", "return"), strict=True):
            its, values = zip(*cols[key], strict=True)
            ax.plot(its, values, label=label)
    axes[0].axhline(1.0, color="grey", lw=0.8, ls=":")
    axes[2].axhline(DATA_RETURN, color="black", lw=0.8, ls="--", label="data")
    for ax, title in zip(axes, ("largest bootstrap factor (gamma x weight)", "critic TD loss", "evaluation return"),
                         strict=True):
        ax.set_title(title)
        ax.set_xlabel("iteration")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[2].legend(fontsize=8)
    fig.suptitle("MA-ICQ on 3s_vs_5z-medium-replay, seed 0")
    save_png(fig, HERE / "smax_icq_runaway.png")


if __name__ == "__main__":
    main()
