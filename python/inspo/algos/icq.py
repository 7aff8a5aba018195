"""MA-ICQ: multi-agent Implicit Constraint Q-learning (Yang et al., "Believe What You See: Implicit Constraint
Approach for Offline Multi-Agent Reinforcement Learning", NeurIPS 2021), a baseline.

The implicit constraint: the optimal policy of the behaviour-regularised problem is ``pi*(a|s) ∝ mu(a|s)
exp(Q(s,a)/alpha)``, so expectations under ``pi*`` are expectations under the data re-weighted by
``exp(Q/alpha)/Z``; neither the critic nor the actor ever evaluates an action that is not in the data. Per iteration:

1. critic (per-agent ``Q_i(o_i, a_i)`` mixed linearly, ``Q_tot = sum_i w_i(s) Q_i + b(s)``, ``w_i >= 0``): TD to
   ``r + gamma * [exp(Qbar_tot(s', a')/alpha_Q) / Z] * Qbar_tot(s', a')`` where ``a'`` is the *data's* next joint
   action and ``Z`` is approximated by the mean of ``exp(./alpha_Q)`` over the mini-batch (a softmax over the batch);
2. actors (decentralised ``pi_i(a_i|o_i)``): weighted log-likelihood of the data actions with weights
   ``exp(w_i(s) A_i / alpha) / Z_i`` (softmax over the batch), ``A_i = Q_i(o_i, a_i) - sum_b pi_i(b|o_i) Q_i(o_i, b)``.
   The joint policy ``prod_i pi_i`` is then ``∝ mu exp((Q_tot - V_tot)/alpha)`` because the mixer is linear.

Deviations from the paper (and its code), all deliberate:
- one-step TD targets on transitions instead of TD(lambda) over whole episodes (our data is sampled by
  transition); rows whose episode was truncated by the time limit have no next data action and are left out of the
  critic loss;
- utilities take the agent's observation (the paper's ``Q_i(tau_i, a_i)`` uses an RNN over the history; our
  environments are fully observed), MLPs instead of RNNs, Adam instead of RMSprop, no gradient clipping;
- Polyak-averaged target networks (rate ``cfg.polyak``) instead of hard copies every 600 steps;
- the mixer is ``|hypernet(s)|`` weights plus a state bias as written in the paper (the released code normalises
  the weights to sum to one and drops the bias; ``cfg.icq.mixer = "normalised"`` normalises them and keeps the
  bias), and ``w_i`` multiplies the advantage inside the exponential as in the paper's decomposed objective (the
  released code multiplies the whole weight by ``w_i`` outside);
- the actors start from the behaviour-cloned ``mu`` (the fixed point of the weighted likelihood does not depend on
  the start); ``alpha`` is ``cfg.alpha`` (the same KL-to-behaviour strength as InSPO's), ``alpha_Q`` is
  ``cfg.icq_critic_temp`` (1000 in the paper's code, i.e. nearly SARSA on the data).

Why the critic temperature must stay large: the target bootstraps a row with ``gamma`` times its weight,
``exp((Qbar_tot - m)/alpha_Q)`` with ``m = alpha_Q log mean exp(Qbar_tot/alpha_Q)`` over the batch, so a row whose
next value lies more than ``alpha_Q * ln(1/gamma)`` above ``m`` is bootstrapped with a factor above 1. Data whose
values spread wider than that let the critic run away (``results/smax_study.md``, twentieth sitting: at
``alpha_Q = 45``, a bound of 0.45, on SMAX data whose returns spread over 0-2). The iteration's largest factor is
logged as ``target_weight_max``. It is not the only way: with the factor mostly below 1 a critic can also run away
through the paper's mixer weights, which nothing bounds (the same record, twenty-first sitting: 2s3z-expert at
``alpha_Q = 309``, where ``cfg.icq.mixer = "normalised"`` holds).

Data-parallel training (:mod:`inspo.algos.parallel`): both softmaxes over the batch, and the critic loss's
normaliser, are computed on the whole global batch on every rank; only the trained networks' forward/backward is
split into the ranks' shards.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from inspo import precision
from inspo.algos.batch import Batch
from inspo.algos.learner import Learner
from inspo.algos.mixers import AgentUtilities, LinearMixer
from inspo.algos.networks import AgentPolicies
from inspo.algos.optim import adam
from inspo.algos.parallel import Shard
from inspo.config import TrainConfig


class ICQ(Learner):
    """The MA-ICQ learner; ``mu`` (behaviour cloning) only initialises the actors."""

    STATE = ("pi", "q", "mixer", "q_target", "mixer_target", "pi_opt", "critic_opt")

    def __init__(self, cfg: TrainConfig, mu: AgentPolicies, state_dim: int, device: torch.device,
                 generator: torch.Generator, shard: Shard | None = None) -> None:
        super().__init__(cfg, mu, state_dim, device, generator, shard)
        n = self.n_agents
        self.pi = copy.deepcopy(mu)
        self.pi_opt = adam(self.pi.parameters(), cfg.lr_policy)
        self.q = AgentUtilities(n, self.obs_dim, self.n_actions, cfg.hidden, cfg.shared_policy).to(device)
        self.mixer = LinearMixer(state_dim, n, cfg.hidden, normalise=cfg.icq.mixer == "normalised").to(device)
        self.q_target = self.target(self.q)
        self.mixer_target = self.target(self.mixer)
        self.critic_opt = adam([*self.q.parameters(), *self.mixer.parameters()], cfg.lr_critic)

    # -- 1. critic: in-sample implicit-constraint target -------------------------------------------------------
    def critic_step(self, b: Batch) -> dict[str, Tensor]:
        cfg, mine = self.cfg, self.shard.rows(b.reward.shape[0])
        with torch.no_grad():
            q_next = self.q_target(b.next_obs).gather(-1, b.next_actions[..., None]).squeeze(-1)  # [B, N]
            qtot_next = self.mixer_target(q_next, b.next_state)  # [B]
            # exp(Q/alpha_Q) / Z with Z the batch mean: a softmax over the rows that have a next data action.
            logits = (qtot_next / cfg.icq.critic_temp).masked_fill(~b.has_next, -torch.inf)
            ic_weight = torch.softmax(logits, dim=0) * b.has_next.sum()
            bootstrap = torch.where(b.has_next, ic_weight * qtot_next, 0.0)  # (no such row: NaN softmax, unused)
            target = b.reward + cfg.gamma * (1.0 - b.terminated) * bootstrap
            # Truncated rows have neither a next data action nor a terminal target.
            rows = (b.has_next | (b.terminated > 0)).to(target.dtype)
        q_taken = self.q(b.obs[mine]).gather(-1, b.actions[mine, :, None]).squeeze(-1)
        err = (self.mixer(q_taken, b.state[mine]) - target[mine]).pow(2)
        loss = self.shard.total(rows[mine] * err) / rows.sum().clamp(min=1.0)
        self.shard.require_finite(q_loss=loss)
        self.gradient_step(loss, self.critic_opt)
        self.update_targets()
        factor = cfg.gamma * torch.where(b.has_next, ic_weight, 0.0).max()  # 0 where nothing is bootstrapped
        return {"q_loss": loss.detach(), "target_weight_max": factor}

    # -- 2. actors: decomposed in-sample advantage weighting ---------------------------------------------------
    def actor_step(self, b: Batch) -> dict[str, Tensor]:
        cfg, mine = self.cfg, self.shard.rows(b.reward.shape[0])
        logits = self.pi.all_logits(b.obs[mine])  # [B / world, N, A]
        with torch.no_grad():
            qs = self.q(b.obs)  # [B, N, A]
            # The weights need every row's policy: one process has them already (the same numbers, no gradient).
            every = logits.detach() if self.shard.world == 1 else self.pi.all_logits(b.obs)
            probs = torch.softmax(every.masked_fill(~b.avail, -torch.inf), dim=-1)
            baseline = (probs * qs.masked_fill(~b.avail, 0.0)).sum(-1)
            adv = qs.gather(-1, b.actions[..., None]).squeeze(-1) - baseline  # [B, N]
            w, _ = self.mixer.weights(b.state)  # [B, N]
            # exp(w_i A_i / alpha) / Z_i, Z_i approximated over the batch: a softmax over rows, per agent.
            weight = torch.softmax(w * adv / cfg.alpha, dim=0)
        logp, entropy = self.k.masked_softmax_stats(logits, b.avail[mine], b.actions[mine])
        loss = -self.shard.total(weight[mine] * logp, dim=0).mean()
        self.shard.require_finite(policy_loss=loss)
        self.gradient_step(loss, self.pi_opt)
        return {"policy_loss": loss.detach(), "entropy": entropy.detach().mean(),
                "weight_max": weight.max() * weight.shape[0], "advantage_mean": adv.mean()}

    @precision.matmuls
    def update(self, b: Batch) -> dict[str, Tensor]:
        """One MA-ICQ iteration (critic step, then actor step) on a uniformly sampled batch."""
        return {**self.critic_step(b), **self.actor_step(b)}
