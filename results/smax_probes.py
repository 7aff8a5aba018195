"""Two probes of the SMAX study's finished runs, read from their checkpoints (`smax_study.md`, fifteenth sitting).

``value``: CFCQL's mixed value at the data's actions against what the data can be worth (each row's discounted
return-to-go), and the share of the data action in each agent's softmax over its counterfactual values.

``advantage``: whether InSPO's per-agent advantage points where MA-ICQ moved its policy. Per agent and data row,
within the actions mu takes there (mu > 1e-3), each quantity centred over those actions: InSPO's advantage
``Qloc_i(s, b) - Vloc_i(s)``, MA-ICQ's ``Q_i(o_i, b) - E_mu Q_i``, and each policy's move ``log pi_i(b) - log mu_i(b)``;
the correlations between them over rows, agents and actions, and each policy's KL divergence from mu.

Run from the study's clone (its `results/cache` holds the checkpoints and the data); 8,192 data rows drawn with
seed 1::

    python results/smax_probes.py value results/cache/runs/baselines/2s3z-mixed/cfcql/seed0
    python results/smax_probes.py advantage results/cache/runs/baselines/2s3z-medium/inspo/seed0 \\
        results/cache/runs/baselines/2s3z-medium/icq/seed0
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from inspo import checkpoint
from inspo.algos.batch import Batch
from inspo.algos.bc import BehaviourCloning
from inspo.algos.learner import Learner
from inspo.algos.parallel import Shard
from inspo.config import TrainConfig
from inspo.data import load_dataset
from inspo.training import build_learner
from inspo.training_data import batch, behaviour_columns, to_device

ROWS = 8192


def restore(run: str) -> tuple[Learner, TrainConfig, Batch, np.ndarray]:
    """The learner of ``run``'s last checkpoint, its config, ROWS rows of its data with its clone's columns, and
    their indices."""
    saved = checkpoint.load(f"{run}/checkpoint.pt")
    cfg = TrainConfig.from_dict(saved["config"])
    data = to_device(load_dataset(cfg.dataset, recorded_env=False), torch.device("cpu"), torch.float32,
                     cfg.normalize_state)
    n_agents, n_actions = data["avail"].shape[1:]
    bc = BehaviourCloning(cfg, n_agents, data["obs"].shape[-1], n_actions, torch.device("cpu"), Shard())
    bc.load_state_dict(saved["bc"])
    data.update(behaviour_columns(bc.policy, data))
    learner = build_learner(cfg, bc.policy, data["state"].shape[-1], torch.device("cpu"), torch.Generator(), Shard())
    learner.load_state_dict(saved["learner"])
    rows = torch.randint(data["obs"].shape[0], (ROWS,), generator=torch.Generator().manual_seed(1))
    return learner, cfg, batch(data, rows), rows.numpy()


def return_to_go(dataset: str, gamma: float) -> np.ndarray:
    """Every row's discounted return to the end of its episode."""
    reward = np.load(f"{dataset}/reward.npy").astype(np.float64)
    ends = np.r_[np.load(f"{dataset}/episode_start.npy")[1:].astype(bool), True]
    out, acc = np.zeros_like(reward), 0.0
    for i in range(len(reward) - 1, -1, -1):
        acc = reward[i] + gamma * (0.0 if ends[i] else acc)
        out[i] = acc
    return out


@torch.no_grad()
def value(run: str) -> dict[str, float]:
    learner, cfg, b, rows = restore(run)
    qs = learner.q(b.obs)
    q_taken = qs.gather(-1, b.actions[..., None]).squeeze(-1)
    cf = learner.counterfactual_q(qs, q_taken, b.state).masked_fill(~b.avail, -torch.inf)
    share = torch.softmax(cf, -1).gather(-1, b.actions[..., None]).squeeze(-1)
    worth = return_to_go(cfg.dataset, cfg.gamma)
    return {"q_tot": learner.mixer(q_taken, b.state).mean().item(), "return_to_go": float(worth[rows].mean()),
            "return_to_go_max": float(worth.max()), "data_action_share": share.mean().item()}


@torch.no_grad()
def advantage(inspo_run: str, icq_run: str) -> dict[str, float]:
    inspo, cfg, b, _ = restore(inspo_run)
    icq = restore(icq_run)[0]
    log_mu = b.logmu_all
    taken = b.avail & (log_mu.exp() > 1e-3)

    def log_pi(policy) -> torch.Tensor:
        return torch.log_softmax(policy.all_logits(b.obs).masked_fill(~b.avail, -torch.inf), -1)

    def centred(x: torch.Tensor) -> torch.Tensor:
        mean = x.masked_fill(~taken, 0).sum(-1, keepdim=True) / taken.sum(-1, keepdim=True).clamp(min=1)
        return (x - mean)[taken].double()

    def corr(x: torch.Tensor, y: torch.Tensor) -> float:
        x, y = centred(x), centred(y)
        return float((x - x.mean()) @ (y - y.mean()) / ((x - x.mean()).norm() * (y - y.mean()).norm()))

    tau, ratio = inspo.tau, cfg.alpha / inspo.tau
    adv_inspo = []
    for i in range(inspo.n_agents):
        qloc = inspo.local_q.forward_member(b.state, i)
        adv_inspo.append(qloc - tau * torch.logsumexp(ratio * log_mu[:, i] + qloc / tau, -1, keepdim=True))
    adv_inspo = torch.stack(adv_inspo, 1)
    qs = icq.q(b.obs)
    adv_icq = qs - (log_mu.exp() * qs.masked_fill(~b.avail, 0)).sum(-1, keepdim=True)
    move_inspo, move_icq = log_pi(inspo.pi) - log_mu, log_pi(icq.pi) - log_mu

    def kl(log_p: torch.Tensor) -> float:
        return float((log_p.exp() * (log_p - log_mu).masked_fill(~b.avail, 0)).sum(-1).mean())

    return {"corr(A_inspo, move_icq)": corr(adv_inspo, move_icq), "corr(A_icq, move_icq)": corr(adv_icq, move_icq),
            "corr(A_inspo, A_icq)": corr(adv_inspo, adv_icq), "corr(A_inspo, move_inspo)": corr(adv_inspo, move_inspo),
            "corr(move_inspo, move_icq)": corr(move_inspo, move_icq),
            "std_A_inspo": float(centred(adv_inspo).std()), "std_A_icq": float(centred(adv_icq).std()),
            "kl_inspo_mu": kl(log_pi(inspo.pi)), "kl_icq_mu": kl(log_pi(icq.pi))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="probe", required=True)
    sub.add_parser("value", help="CFCQL's value level").add_argument("run")
    adv = sub.add_parser("advantage", help="InSPO's advantage against MA-ICQ's move")
    adv.add_argument("inspo_run")
    adv.add_argument("icq_run")
    args = parser.parse_args()
    found = value(args.run) if args.probe == "value" else advantage(args.inspo_run, args.icq_run)
    print(json.dumps({k: round(v, 4) for k, v in found.items()}, indent=1))


if __name__ == "__main__":
    main()
