"""JaxMARL's own MAPPO (recurrent actor and critic) on one SMAX map, its learning curve written to CSV: the reference
that `inspo online train` is compared with on 5m_vs_6m (results/smax_study.md, twenty-second sitting).

Needs a checkout of FLAIROx/JaxMARL (its `baselines/MAPPO`) and, beside jaxmarl 0.2.0, what that script imports
(flax, optax, distrax, hydra-core, omegaconf, wandb; wandb is never called: its `log` is replaced here):

    python results/smax_jaxmarl_mappo.py JAXMARL_CHECKOUT 5m_vs_6m 1e7 results/smax_online_reference/x.csv [--seed 1]

The config is the checkout's `mappo_homogenous_rnn_smax.yaml` with the map, the step count and the seed replaced.
The rows go to `OUT.part` as they come (JaxMARL's compiled loop cannot resume, so that is the run's progress) and
the file becomes OUT when training ends; an existing OUT is refused. Each row is one update: environment steps so
far, the mean return and win rate of the training episodes that ended during it (sampled actions), the policy's
entropy, and the wall time.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jaxmarl", type=Path, help="a checkout of FLAIROx/JaxMARL")
    parser.add_argument("map", help="SMAX map, e.g. 5m_vs_6m")
    parser.add_argument("steps", type=float, help="TOTAL_TIMESTEPS")
    parser.add_argument("out", type=Path, help="CSV to write")
    parser.add_argument("--seed", type=int, default=0, help="SEED (default 0, the config's)")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists; choose another path or remove it")
    baseline = args.jaxmarl / "baselines" / "MAPPO"
    sys.path.insert(0, str(baseline))
    import jax
    import mappo_rnn_smax  # JaxMARL's script, imported rather than copied
    import wandb
    import yaml

    config = yaml.safe_load((baseline / "config" / "mappo_homogenous_rnn_smax.yaml").read_text())
    config.update(MAP_NAME=args.map, TOTAL_TIMESTEPS=args.steps, SEED=args.seed)
    started = time.perf_counter()
    part = args.out.with_name(args.out.name + ".part")
    with part.open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["env_step", "returns", "win_rate", "entropy", "wall_s"])

        def log(metric: dict) -> None:
            rows.writerow([int(metric["env_step"]), f"{float(metric['returns']):.4f}",
                           f"{float(metric['win_rate']):.4f}", f"{float(metric['entropy']):.4f}",
                           f"{time.perf_counter() - started:.0f}"])
            f.flush()

        wandb.log = log
        train = jax.jit(mappo_rnn_smax.make_train(config))
        jax.block_until_ready(train(jax.random.PRNGKey(config["SEED"])))
    part.replace(args.out)


if __name__ == "__main__":
    main()
