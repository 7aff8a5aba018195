"""Behaviour cloning of the data's policy mu: the first phase of every run, and the whole of ``algo="bc"``."""
from __future__ import annotations

import torch
from torch import Tensor

from inspo import precision
from inspo.algos.common import kernel_backend
from inspo.algos.networks import AgentPolicies
from inspo.algos.optim import FusedAdam
from inspo.algos.parallel import Shard
from inspo.config import TrainConfig


class BehaviourCloning:
    """Per-agent behaviour cloning of the data's policy mu, by masked log-likelihood; ``shard`` is this process's
    part of data-parallel training (default: a single process)."""

    def __init__(self, cfg: TrainConfig, n_agents: int, obs_dim: int, n_actions: int, device: torch.device,
                 shard: Shard | None = None) -> None:
        self.cfg = cfg
        self.shard = shard or Shard()
        self.k = kernel_backend(cfg.backend)
        self.policy = AgentPolicies(n_agents, obs_dim, n_actions, cfg.hidden, cfg.shared_policy).to(device)
        self.opt = FusedAdam(list(self.policy.parameters()), cfg.lr_policy)

    @precision.matmuls
    def update(self, obs: Tensor, avail: Tensor, actions: Tensor) -> Tensor:
        """One step on a batch ``[B, N, ...]`` (this rank's shard of the global batch); returns the negative
        log-likelihood per agent and row (a scalar tensor)."""
        logits = self.policy.all_logits(obs)
        logp, _ = self.k.masked_softmax_stats(logits, avail, actions)
        loss = -logp.mean()
        grads = torch.autograd.grad(loss, self.opt.params)
        self.shard.average_(grads)
        self.opt.step(grads)
        return loss.detach()

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.opt.load_state_dict(state["opt"])
