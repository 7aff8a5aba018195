"""Value decomposition for the baselines: per-agent utility networks and two monotonic mixers.

* :class:`AgentUtilities` -- ``Q_i(o_i, .)`` (or ``V_i(o_i)`` with one output) for every agent, on its own
  observation; the same per-agent MLPs (and the same ``shared`` option) as :class:`AgentPolicies`.
* :class:`LinearMixer` -- ``Q_tot(s, a) = sum_i w_i(s) Q_i(o_i, a_i) + b(s)`` with ``w_i(s) >= 0`` from a one-layer
  hypernetwork: the decomposition of MA-ICQ and OMIGA. Linear in the utilities, so ``Q_tot - V_tot =
  sum_i w_i (Q_i - V_i)`` when ``V_tot`` is mixed with the same weights.
* :class:`QMixer` -- the monotonic two-layer mixing network of QMIX (Rashid et al. 2018): hypernetworks on the state
  give non-negative first- and second-layer weights, ELU in between; used by CFCQL.

Both mixers are monotonic in every utility, so neither can represent a joint value such as XOR's, where the best
action of one agent depends on the other's action (the point the known-answer tests make).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from inspo.algos.networks import AgentPolicies, mlp


class AgentUtilities(AgentPolicies):
    """Per-agent value networks ``[..., N, obs_dim] -> [..., N, out]`` (``out`` = actions for Q, 1 for V)."""

    def forward(self, obs: Tensor) -> Tensor:
        return self.all_logits(obs)


class LinearMixer(nn.Module):
    """``Q_tot = sum_i w_i(s) Q_i + b(s)``, ``w_i = |h_w(s)|``, ``(h_w, b)`` one hidden ReLU layer on the state;
    ``normalise``: ``w_i = |h_w(s)|_i / sum_j |h_w(s)|_j``, weights that sum to one in every state."""

    def __init__(self, state_dim: int, n_agents: int, hidden: int, normalise: bool = False) -> None:
        super().__init__()
        self.n_agents, self.normalise = n_agents, normalise
        self.hyper = mlp(state_dim, hidden, n_agents + 1, layers=1)

    def weights(self, state: Tensor) -> tuple[Tensor, Tensor]:
        """Non-negative per-agent weights ``[..., N]`` and the bias ``[...]``."""
        out = self.hyper(state)
        w = out[..., :self.n_agents].abs()
        if self.normalise:  # the clamp keeps a state whose weights all vanish finite (its Q_tot is then its bias)
            w = w / w.sum(-1, keepdim=True).clamp(min=1e-8)
        return w, out[..., self.n_agents]

    def forward(self, qs: Tensor, state: Tensor) -> Tensor:
        """Mix per-agent values ``[..., N]`` at ``state [..., state_dim]`` into ``[...]``."""
        w, b = self.weights(state)
        return (w * qs).sum(-1) + b


class QMixer(nn.Module):
    """QMIX: ``Q_tot = w2(s)^T elu(W1(s)^T q + b1(s)) + b2(s)``, ``W1, w2 >= 0`` (absolute values of hypernetworks
    with one hidden ReLU layer of width ``hidden``); ``embed`` is the mixing layer's width."""

    def __init__(self, state_dim: int, n_agents: int, hidden: int, embed: int = 32) -> None:
        super().__init__()
        self.n_agents, self.embed = n_agents, embed
        self.hyper_w1 = mlp(state_dim, hidden, n_agents * embed, layers=1)
        self.hyper_b1 = nn.Linear(state_dim, embed)
        self.hyper_w2 = mlp(state_dim, hidden, embed, layers=1)
        self.hyper_b2 = mlp(state_dim, embed, 1, layers=1)

    def forward(self, qs: Tensor, state: Tensor) -> Tensor:
        """Mix per-agent values ``[B, *K, N]`` at ``state [B, state_dim]`` into ``[B, *K]``: every one of the ``K``
        value vectors of a row is mixed with that row's hypernetwork weights, which are computed once per row (CFCQL
        mixes ``N * A`` counterfactual vectors per row)."""
        rows, lead = state.shape[0], qs.shape[:-1]
        w1 = self.hyper_w1(state).abs().view(rows, self.n_agents, self.embed)
        hidden = nn.functional.elu(torch.bmm(qs.reshape(rows, -1, self.n_agents), w1) + self.hyper_b1(state)[:, None])
        w2 = self.hyper_w2(state).abs()
        return ((hidden * w2[:, None]).sum(-1) + self.hyper_b2(state)).view(lead)
