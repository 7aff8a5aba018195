"""CFCQL: CounterFactual Conservative Q-Learning (Shao et al., NeurIPS 2023), discrete-action version, a baseline.

QMIX-style value decomposition (per-agent ``Q_i(o_i, .)``, monotonic mixer ``Q_tot = f_s(Q_1, ..., Q_N)``), trained
by Q-learning plus a conservative penalty computed *counterfactually, one agent at a time*: for agent i only its own
action leaves the data, its teammates keep their data actions,

    R_i(s, a) = logsumexp_{b available} Q_tot(s, (b, a_-i)) - Q_tot(s, a)          (CQL(H) for agent i),
    loss      = E_D[ 1/2 (Q_tot(s, a) - y)^2 ] + cql_alpha * E_D[ sum_i lambda_i(s) R_i(s, a) ],

with ``y = r + gamma (1-done) Qbar_tot(s', a*)``, ``a*_i = argmax_b Q_i(o_i', b)`` over available actions (double
Q-learning: online argmax, target value). The agent weights ``lambda_i(s)`` are a softmax over agents of
``cfg.cfcql_lambda_temp * KL(p_i || mu_i)``, ``p_i`` the Boltzmann distribution of agent i's counterfactual
``Q_tot(s, (., a_-i))`` and ``mu_i`` the behaviour-cloned policy (the paper's choice that puts the penalty on the
agents that stray furthest from the data); ``cfcql_lambda_temp = 0`` gives uniform ``lambda_i = 1/N``. The
penalty grows with one agent's deviation, not with the size of the joint action space.

The policy is greedy in ``Q_i``. To act through the shared :class:`AgentPolicies` interface, ``pi`` is a copy of
the utility networks whose output layer is divided by ``cfg.cfcql_policy_temp`` (logits ``Q_i / temp``): a
near-greedy Boltzmann policy that a saved checkpoint reproduces exactly.

Deviations from the paper (and its code), all deliberate:
- one-step TD targets on transitions instead of TD(lambda) over episodes; MLP utilities on the agent's observation
  instead of RNNs; Adam, no gradient clipping;
- Polyak-averaged target networks (rate ``cfg.polyak``) instead of hard copies every 200 episodes;
- the near-greedy Boltzmann policy above instead of an argmax (ties are broken uniformly instead of by index);
- ``cql_alpha`` and the temperatures are ours (the paper tunes the penalty weight per dataset).

Data-parallel training (:mod:`inspo.algos.parallel`): every term is per row (``lambda_i`` is a softmax over agents,
not rows) and the loss a mean over rows, so each rank takes its shard of the batch.
"""
from __future__ import annotations

import torch
from torch import Tensor

from inspo import precision
from inspo.algos.batch import Batch
from inspo.algos.learner import Learner
from inspo.algos.mixers import AgentUtilities, QMixer
from inspo.algos.networks import AgentPolicies
from inspo.algos.optim import adam
from inspo.algos.parallel import Shard
from inspo.config import TrainConfig


class CFCQL(Learner):
    """The CFCQL learner; ``mu`` (behaviour cloning) is used for the agent weights ``lambda_i``."""

    STATE = ("q", "mixer", "q_target", "mixer_target", "opt")  # pi is a function of q (sync_policy)

    def __init__(self, cfg: TrainConfig, mu: AgentPolicies, state_dim: int, device: torch.device,
                 generator: torch.Generator, shard: Shard | None = None) -> None:
        super().__init__(cfg, mu, state_dim, device, generator, shard)
        n, obs_dim, n_actions = self.n_agents, self.obs_dim, self.n_actions
        self.q = AgentUtilities(n, obs_dim, n_actions, cfg.hidden, cfg.shared_policy).to(device)
        self.mixer = QMixer(state_dim, n, cfg.hidden).to(device)
        self.q_target = self.target(self.q)
        self.mixer_target = self.target(self.mixer)
        self.opt = adam([*self.q.parameters(), *self.mixer.parameters()], cfg.lr_critic)
        self.pi = AgentPolicies(n, obs_dim, n_actions, cfg.hidden, cfg.shared_policy).to(device).requires_grad_(False)
        self.sync_policy()

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.sync_policy()

    @torch.no_grad()
    def sync_policy(self) -> None:
        """``pi``'s logits := ``Q_i / cfcql_policy_temp`` (copy the utilities, scale their output layer)."""
        self.pi.nets.load_state_dict(self.q.nets.state_dict())
        for p in self.pi.nets.stacked()[-2:]:  # the output layer's weight and bias
            p.div_(self.cfg.cfcql.policy_temp)

    def counterfactual_q(self, qs: Tensor, q_taken: Tensor, state: Tensor) -> Tensor:
        """``Q_tot(s, (b, a_-i))`` for every agent i and own action b, ``[B, N, A]``: agent i's data action replaced
        by b, the teammates' data actions kept."""
        rows, n, n_actions = qs.shape
        own = torch.eye(n, dtype=torch.bool, device=qs.device)[:, None, :]  # [N, 1, N]: slot i of copy i
        joint = torch.where(own, qs[..., None], q_taken[:, None, None, :])  # [B, N, A, N]
        return self.mixer(joint.reshape(rows, n * n_actions, n), state).view(rows, n, n_actions)

    @precision.matmuls
    def update(self, b: Batch) -> dict[str, Tensor]:
        """One CFCQL step (TD plus counterfactual conservative penalty) on a uniformly sampled batch."""
        cfg = self.cfg
        b = b.rows(self.shard.rows(b.reward.shape[0]))
        with torch.no_grad():
            greedy = self.q(b.next_obs).masked_fill(~b.next_avail, -torch.inf).argmax(-1, keepdim=True)
            q_next = self.q_target(b.next_obs).gather(-1, greedy).squeeze(-1)  # [B, N]
            target = b.reward + cfg.gamma * (1.0 - b.terminated) * self.mixer_target(q_next, b.next_state)
        qs = self.q(b.obs)  # [B, N, A]
        q_taken = qs.gather(-1, b.actions[..., None]).squeeze(-1)  # [B, N]
        q_tot = self.mixer(q_taken, b.state)
        td_loss = 0.5 * (q_tot - target).pow(2).mean()

        cf = self.counterfactual_q(qs, q_taken, b.state)  # [B, N, A]
        penalty = torch.logsumexp(cf.masked_fill(~b.avail, -torch.inf), dim=-1) - q_tot.unsqueeze(-1)  # [B, N]
        with torch.no_grad():
            if cfg.cfcql.lambda_temp > 0:
                # KL(p_i || mu_i) = -H(p_i) - sum_b p_i(b) log mu_i(b), p_i the Boltzmann policy of the counterfactuals.
                _, entropy = self.k.masked_softmax_stats(cf.detach(), b.avail, b.actions)
                p = torch.softmax(cf.detach().masked_fill(~b.avail, -torch.inf), dim=-1)
                kl = -entropy - (p * b.logmu_all.masked_fill(~b.avail, 0.0)).sum(-1)
                lam = torch.softmax(cfg.cfcql.lambda_temp * kl, dim=-1)  # over agents
            else:
                lam = torch.full_like(penalty, 1.0 / self.n_agents)
        cql_loss = (lam * penalty).sum(-1).mean()
        loss = td_loss + cfg.cfcql.cql_alpha * cql_loss
        self.shard.require_finite(td_loss=td_loss, cql_loss=cql_loss)
        self.gradient_step(loss, self.opt)
        self.update_targets()
        self.sync_policy()
        return {"td_loss": td_loss.detach(), "cql_loss": cql_loss.detach(), "loss": loss.detach(),
                "q_taken_mean": q_tot.detach().mean(), "lambda_max": lam.max()}
