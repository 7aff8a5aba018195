"""MA-ICQ's two critic runaways in the SMAX study (`smax_study.md`, twentieth and twenty-first sittings).

``plot`` draws ``smax_icq_runaway.png`` from the runs' ``progress.csv`` files kept in ``smax_icq_runaway/``:

- top row, 3s_vs_5z-medium-replay seed 0 (the first route): the largest bootstrap factor of the critic's target
  (``target_weight_max``), the critic's TD loss and the evaluation return, at the search's critic temperature
  (45.14), at the paper code's 1000, at 45.14 with a critic learning rate ten times smaller, and at 45.14 with the
  mixer's weights normalised to sum to one (the released code's mixer);
- bottom row, the AVX-512 type's 2s3z-expert seed 1 at its searched 309.1 (the second route): the largest sum of
  the mixer's weights over a batch's states, the TD loss and the return, with the paper's mixer and with the
  normalised one.

``train CONFIG OUT [FLAGS]`` trains one of these runs with the mixer's scale logged beside the learner's own
metrics (``w_sum``, ``w_sum_max``: the mean and largest ``sum_i w_i(s)`` of the batch; ``bias_mean``: the mixer's
mean state bias; ``q_taken``: the mean utility of the data actions; ``q_avail_max``, ``q_avail_min``: the extreme
utilities of any available action; ``qtot``: the mean mixed value of the data actions), FLAGS added to ``inspo
train``'s. Run from the study's clone, where the table's configs and clones are, e.g. for the bottom row::

    python results/smax_icq_runaway.py train <2s3z-expert icq seed1 config.json> OUT [--icq-mixer normalised]
    python results/smax_icq_runaway.py plot

The other seeds' normalised runs (``2s3z_expert_avx512_seed{0,2,3,4}_normalised.csv``, not plotted) are those of
the record's five-seed table. The top row's first three runs were made with ``inspo train --config <the table's
seed-0 config> --clones results/smax_study_avx512/cache/clones --iters 30000 [--icq-critic-temp 1000 | --lr-critic
0.0003322]``; its fourth, 40,000 iterations long, with ``train <that config> OUT --icq-mixer normalised``.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from inspo import cli
from inspo.algos.batch import Batch
from inspo.algos.icq import ICQ
from inspo.report import figure_class, save_png

HERE = Path(__file__).resolve().parent / "smax_icq_runaway"
FIRST = {"critic temperature 45.14 (the search's)": "temp45.csv", "critic temperature 1000 (the paper's code)":
         "temp1000.csv", "45.14, lr_critic / 10": "lr_critic_tenth.csv",
         "45.14, normalised mixer weights": "temp45_normalised.csv"}
SECOND = {"the paper's mixer (the table's run)": "2s3z_expert_avx512_seed1.csv",
          "normalised mixer weights": "2s3z_expert_avx512_seed1_normalised.csv"}
DATA_RETURN = {"3s_vs_5z-medium-replay": 0.741, "2s3z-expert": 1.954}  # the AVX-512 type's data


def train(config: str, out: str, flags: list[str]) -> int:
    """One ``inspo train --config config --out out *flags`` run with the mixer's scale logged."""
    critic_step = ICQ.critic_step

    def logged(self: ICQ, b: Batch) -> dict[str, torch.Tensor]:
        metrics = critic_step(self, b)
        with torch.no_grad():
            w, bias = self.mixer.weights(b.state)
            qs = self.q(b.obs)
            taken = qs.gather(-1, b.actions[..., None]).squeeze(-1)
            available = qs[b.avail]
        return {**metrics, "w_sum": w.sum(-1).mean(), "w_sum_max": w.sum(-1).max(), "bias_mean": bias.mean(),
                "q_taken": taken.mean(), "q_avail_max": available.max(), "q_avail_min": available.min(),
                "qtot": ((w * taken).sum(-1) + bias).mean()}
    ICQ.critic_step = logged
    return cli.main(["train", "--config", config, "--clones", "results/smax_study_avx512/cache/clones", "--out", out,
                     *flags])


def _column(path: Path, key: str) -> tuple[list[int], list[float]]:
    its, values = [], []
    with path.open() as f:
        for row in csv.DictReader(f):
            if row.get(key):  # losses are empty on the cloning and evaluation-only rows
                its.append(int(row["iteration"]))
                values.append(float(row[key]))
    return its, values


def plot() -> None:
    fig = figure_class()(figsize=(15, 8), layout="constrained")
    axes = fig.subplots(2, 3)
    rows = (("3s_vs_5z-medium-replay", FIRST, "target_weight_max", "largest bootstrap factor (gamma x weight)"),
            ("2s3z-expert", SECOND, "w_sum_max", "largest sum of the mixer's weights"))
    for row, (dataset, runs, scale, scale_title) in zip(axes, rows, strict=True):
        for label, name in runs.items():
            for ax, key in zip(row, (scale, "q_loss", "return"), strict=True):
                ax.plot(*_column(HERE / name, key), label=label)
        row[2].axhline(DATA_RETURN[dataset], color="black", lw=0.8, ls="--", label="data")
        for ax, title in zip(row, (scale_title, "critic TD loss", "evaluation return"), strict=True):
            ax.set_title(title)
            ax.set_xlabel("iteration")
        row[0].set_yscale("log")
        row[1].set_yscale("log")
        row[0].set_ylabel(dataset)
        row[2].legend(fontsize=8)
    axes[0][0].axhline(1.0, color="grey", lw=0.8, ls=":")
    fig.suptitle("MA-ICQ's critic runaways: 3s_vs_5z-medium-replay seed 0 (top), 2s3z-expert seed 1 (bottom)")
    save_png(fig, HERE.parent / "smax_icq_runaway.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="one instrumented MA-ICQ run")
    t.add_argument("config")
    t.add_argument("out")
    t.add_argument("flags", nargs=argparse.REMAINDER, help="more `inspo train` flags, e.g. --icq-mixer normalised")
    sub.add_parser("plot", help="draw smax_icq_runaway.png")
    args = parser.parse_args()
    if args.command == "train":
        raise SystemExit(train(args.config, args.out, args.flags))
    plot()


if __name__ == "__main__":
    main()
