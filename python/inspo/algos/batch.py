"""The training batch that every learner updates on, and the behaviour log-probabilities that fill its ``logmu_all``
and ``logp_mu`` fields."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from inspo.algos.networks import AgentPolicies


@dataclass
class Batch:
    """Transitions on the training device; ``logp_mu`` is ``[N, B]`` (agent-major, as the kernels take it)."""

    obs: Tensor  # [B, N, obs_dim]
    state: Tensor  # [B, state_dim]
    avail: Tensor  # [B, N, A]
    actions: Tensor  # [B, N]
    reward: Tensor  # [B]
    terminated: Tensor  # [B] float
    next_state: Tensor  # [B, state_dim]
    logmu_all: Tensor  # [B, N, A], -inf where unavailable
    logp_mu: Tensor  # [N, B]
    # Next-step fields for the learners that bootstrap from per-agent networks (the baselines); InSPO ignores them.
    next_obs: Tensor | None = None  # [B, N, obs_dim]
    next_avail: Tensor | None = None  # [B, N, A]
    next_actions: Tensor | None = None  # [B, N], the data's own next joint action where has_next
    has_next: Tensor | None = None  # [B] bool: the episode goes on in the data (not terminated, not truncated)

    def rows(self, index: slice) -> Batch:
        """The transitions ``index`` (e.g. one rank's shard of the batch); ``logp_mu`` is indexed on its row axis."""
        picked = {f.name: None if (x := getattr(self, f.name)) is None else x[index] for f in fields(self)}
        return Batch(**{**picked, "logp_mu": self.logp_mu[:, index]})


def behaviour_log_probs(mu: AgentPolicies, obs: Tensor, avail: Tensor, chunk: int = 65536) -> Tensor:
    """``log mu_i(b | o_i)`` for every row, agent and action, ``[T, N, A]``, -inf where unavailable."""
    out = []
    with torch.no_grad():
        for s in range(0, obs.shape[0], chunk):
            logits = mu.all_logits(obs[s:s + chunk]).masked_fill(~avail[s:s + chunk], -math.inf)
            out.append(torch.log_softmax(logits, dim=-1))
    return torch.cat(out)
