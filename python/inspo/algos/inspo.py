"""InSPO: In-Sample Sequential Policy Optimization (Liu et al., AAAI 2025), as reconstructed in docs/design.md section
1.

Read top to bottom: behaviour cloning of mu (once), then per iteration
  1. policy evaluation: joint critic Q(s, a) by TD to V(s'), in-sample V(s) by the exponential loss;
  2. a sequential pass over the agents in a fresh random order; agent i
     - takes the teammate ratio rho_i = prod_{j != i} pi_j / mu_j at the dataset actions from the log-prob stack
       (its predecessors already hold their updated rows),
     - fits its local critic Qloc_i(s, .) to Qbar(s, a) on rows resampled in proportion to rho_i,
     - weights the rows by exp((Qloc_i - Vloc_i) / tau - (beta / tau) log mu_i), Vloc_i being the exact local soft
       value, and takes a weighted log-likelihood step on its own policy,
     - refreshes its row of the log-prob stack.
In one process, step 1 and the whole of step 2 (on the agents' networks stacked ``[N, ...]``) each run as one call:
``critic_update`` and ``sequential_update``, the C++ ops of :mod:`inspo.ops` (``backend="fused"``) or their
pure-PyTorch twins in :mod:`inspo.reference` (``backend="torch"``). The Python code below runs where those calls do
not apply: a policy shared by the agents, data-parallel training, ``compile=True`` (step 1); there the ratios and
weights come from the kernels of the backend.

Data-parallel training (:mod:`inspo.algos.parallel`): every rank computes the batch-wide quantities (Qbar, the
log-prob stack, rho, the resampled rows, the weights and their normaliser) on the whole global batch, and only the
trained networks' forward/backward on its own shard of the (resampled) rows.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from inspo import precision, reference
from inspo.algos.batch import Batch
from inspo.algos.finite import FiniteWatch
from inspo.algos.learner import Learner
from inspo.algos.networks import AgentPolicies, JointCritic, StackedMLP, mlp
from inspo.algos.optim import BETAS, EPS, FusedAdam
from inspo.algos.parallel import Shard
from inspo.algos.ratio_diagnostics import teammate_ratio_diagnostics
from inspo.config import TrainConfig


class InSPO(Learner):
    """The InSPO learner; ``mu`` is the behaviour-cloned policy (frozen), ``pi`` starts as a copy of it."""

    STATE = ("pi", "q", "q_target", "v", "local_q", "pi_opt", "critic_opt", "local_opt")

    def __init__(self, cfg: TrainConfig, mu: AgentPolicies, state_dim: int, device: torch.device,
                 generator: torch.Generator, shard: Shard | None = None) -> None:
        super().__init__(cfg, mu, state_dim, device, generator, shard)
        n_actions = self.n_actions
        self.tau = cfg.alpha + cfg.beta
        # The joint critic's soft value has the policy's temperature unless the critic_alpha ablation sets it apart.
        self.critic_alpha = cfg.alpha if cfg.critic_alpha is None else cfg.critic_alpha
        self.critic_tau = self.critic_alpha + cfg.beta
        self.pi = copy.deepcopy(mu)
        # One Adam state per agent (per member of the stacks): updating agent i changes nothing of its teammates.
        self.pi_opt = FusedAdam(self.pi.nets.stacked(), cfg.lr_policy, stacked=True)
        self.q = JointCritic(state_dim, self.n_agents, n_actions, cfg.hidden).to(device)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = mlp(state_dim, cfg.hidden, 1).to(device)
        self.critic_opt = FusedAdam([*self.q.parameters(), *self.v.parameters()], cfg.lr_critic)
        self.local_q = StackedMLP(self.n_agents, state_dim, cfg.hidden, n_actions).to(device)
        self.local_opt = FusedAdam(self.local_q.stacked(), cfg.lr_critic, stacked=True)
        # The whole pass in one call of the backend's sequential_update (one process, a network per agent);
        # otherwise the Python loop.
        self.one_call_pass = not self.pi.shared and self.shard.world == 1
        # Compiled, the losses' forward and backward run as generated code instead of one dispatched op at a time.
        self._critic_losses = torch.compile(self.critic_losses) if cfg.compile else self.critic_losses
        # The policy-evaluation step in one call of the backend's critic_update too, unless it is to be compiled.
        self.one_call_critic = self.shard.world == 1 and not cfg.compile
        # The one-call paths read nothing back: their losses' finiteness is checked by the trainer, every
        # cfg.check_every iterations (:meth:`check_finite`). Data-parallel training checks at once, on every rank.
        self.finite = FiniteWatch()
        # The log-prob stack inside an iteration skips the twin's row checks, which read the data on the host: the
        # rows come from a dataset whose actions were checked available when it was loaded.
        self._softmax = reference.softmax_stats if cfg.backend == "torch" else self.k.masked_softmax_stats
        self.matmul_dtype = precision.matmul_dtype(cfg.precision)  # the one-call paths' (they ignore autocast)

    # -- 1. policy evaluation -------------------------------------------------------------------------------
    def critic_losses(self, b: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """``(Qbar(s, a) of the whole batch, Q loss, V loss)`` (losses: this rank's rows): the losses of
        ``critic_update`` for data-parallel training and ``compile=True``."""
        cfg, tau, rows = self.cfg, self.critic_tau, self.shard.rows(b.reward.shape[0])
        with torch.no_grad():
            target = b.reward[rows] + cfg.gamma * (1.0 - b.terminated[rows]) * self.v(b.next_state[rows]).squeeze(-1)
            qbar = self.q_target(b.state, b.actions)  # every row: the policy pass needs all of them
        state = b.state[rows]
        q_loss = (self.q(state, b.actions[rows]) - target).pow(2).mean()
        v = self.v(state).squeeze(-1)
        # Exponential loss whose minimiser is the regularised soft value tau log sum_a mu^(alpha/tau) exp(Q/tau)
        # (tau and alpha the critic's).
        z = torch.clamp((qbar[rows] - v) / tau - (cfg.beta / tau) * b.logp_mu[:, rows].sum(0), max=cfg.z_max)
        v_loss = torch.exp(z).mean() + v.mean() / tau
        return qbar, q_loss, v_loss

    def critic_step(self, b: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """One step on Q and V; returns ``(Qbar(s, a) of the whole batch, Q loss, V loss)`` (losses: this rank's)."""
        if self.one_call_critic:
            cfg, opt = self.cfg, self.critic_opt
            return self.k.critic_update(
                list(self.q.parameters()), list(self.q_target.parameters()), list(self.v.parameters()),
                *opt.state(), b.state, b.actions, b.reward, b.terminated, b.next_state, b.logp_mu,
                n_actions=self.q.n_actions, alpha=self.critic_alpha, beta=cfg.beta, gamma=cfg.gamma, z_max=cfg.z_max,
                polyak=cfg.polyak, lr=cfg.lr_critic, adam_betas=BETAS, adam_eps=EPS, matmul_dtype=self.matmul_dtype)
        qbar, q_loss, v_loss = self._critic_losses(b)
        grads = torch.autograd.grad(q_loss + v_loss, self.critic_opt.params)
        self.shard.average_(grads)
        self.critic_opt.step(grads)
        with torch.no_grad():
            torch._foreach_lerp_(list(self.q_target.parameters()), list(self.q.parameters()), self.cfg.polyak)
        return qbar, q_loss.detach(), v_loss.detach()

    # -- 2. the sequential pass -----------------------------------------------------------------------------
    def agent_logp(self, b: Batch, agent: int) -> tuple[Tensor, Tensor]:
        """Log-prob of the dataset action and entropy of ``agent``'s current policy, ``[B]`` each."""
        logits = self.pi.logits(b.obs[:, agent], agent)
        return self.k.masked_softmax_stats(logits, b.avail[:, agent], b.actions[:, agent])

    def logp_stack(self, b: Batch) -> Tensor:
        """Log-prob of the dataset actions under every agent's current policy, ``[N, B]`` (one softmax call)."""
        logp, _ = self._softmax(self.pi.all_logits(b.obs), b.avail, b.actions)
        return logp.t().contiguous()

    def order(self) -> Tensor:
        """This iteration's order of the agents, an int64 tensor on the generator's device (never read by the
        host in the one-call pass)."""
        if self.cfg.order == "random":
            return torch.randperm(self.n_agents, generator=self.gen, device=self.gen.device)
        return torch.arange(self.n_agents, device=self.gen.device)

    def policy_pass(self, b: Batch, qbar: Tensor) -> dict[str, Tensor]:
        """Update every agent once, in this iteration's order; returns loss and weight statistics."""
        with torch.no_grad():
            logp_pi = self.logp_stack(b)
        order = self.order()
        if not self.one_call_pass:
            return self.policy_loop(b, qbar, logp_pi, order)
        cfg = self.cfg
        pi, lq = self.pi_opt, self.local_opt
        out = self.k.sequential_update(
            pi.params, *pi.state(), lq.params, *lq.state(), logp_pi,
            b.obs, b.state, b.avail, b.actions, b.logmu_all, b.logp_mu, qbar, order, alpha=cfg.alpha, beta=cfg.beta,
            rho_max=cfg.rho_max, z_max=cfg.z_max, lr_policy=cfg.lr_policy, lr_critic=cfg.lr_critic, adam_betas=BETAS,
            adam_eps=EPS, local_critic_steps=cfg.local_critic_steps, sequential=cfg.order != "simultaneous",
            use_rho=cfg.use_rho, resample=cfg.weighting == "resample", generator=self.gen,
            matmul_dtype=self.matmul_dtype)
        stats = dict(zip(("policy_loss", "local_q_loss", "entropy", "weight_max"), out.unbind()))
        self.finite.note(local_q_loss=stats["local_q_loss"], policy_loss=stats["policy_loss"])
        return stats

    def policy_loop(self, b: Batch, qbar: Tensor, logp_pi: Tensor, order: Tensor) -> dict[str, Tensor]:
        """The pass of :meth:`policy_pass` as a Python loop over the agents, for what ``sequential_update`` does not
        cover: a policy shared by the agents and data-parallel training. Otherwise the same pass, step for step, as
        :func:`inspo.reference.sequential_update` (tests hold them equal)."""
        cfg, tau, n = self.cfg, self.tau, self.n_agents
        rows = qbar.shape[0]
        mine = self.shard.rows(rows)
        sequential = cfg.order != "simultaneous"
        if not sequential and cfg.use_rho:
            # Every agent sees the pre-iteration teammates: all ratios in one kernel call.
            rho_all, _ = self.k.advantage_weights(qbar, qbar, logp_pi, b.logp_mu, None, -1, tau, cfg.beta,
                                                  cfg.rho_max, cfg.z_max)
        stats = {"policy_loss": qbar.new_zeros(()), "local_q_loss": qbar.new_zeros(()),
                 "entropy": qbar.new_zeros(()), "weight_max": qbar.new_zeros(())}
        order = order.tolist()
        for i in order:
            if not cfg.use_rho:
                rho = torch.ones_like(qbar)
            elif sequential:
                # Only rho is used here (it picks the local critic's rows); q and v are placeholders.
                rho, _ = self.k.advantage_weights(qbar, qbar, logp_pi, b.logp_mu, None, i, tau, cfg.beta,
                                                  cfg.rho_max, cfg.z_max)
            else:
                rho = rho_all[i]
            if cfg.weighting == "resample":
                sel = torch.multinomial(rho, rows, replacement=True, generator=self.gen)
                row_w = None
            else:
                sel = torch.arange(rows, device=qbar.device)
                row_w = rho
            # This rank's shard of the (resampled) rows: the only ones its networks' forward/backward see.
            sel_mine = sel[mine]
            # index_select: the same gather as x[sel] without advanced indexing's set-up cost, large on small rows.
            state, target = b.state.index_select(0, sel_mine), qbar.index_select(0, sel_mine)
            a_i = b.actions[sel_mine, i]

            # Local critic: E over teammates' current policies of Q(s, a_i, a_-i), from dataset joint actions only.
            for _ in range(cfg.local_critic_steps):
                params = self.local_q.member(i)  # gradients with respect to agent i's slices only
                err = (self.local_q.run(state, params).gather(-1, a_i[:, None]).squeeze(-1) - target).pow(2)
                lq_loss = err.mean() if row_w is None else self.shard.total(row_w[mine] * err) / row_w.sum()
                self.shard.require_finite(local_q_loss=lq_loss)
                grads = torch.autograd.grad(lq_loss, params)
                self.shard.average_(grads)
                self.local_opt.step(grads, i)

            with torch.no_grad():
                qloc = self.local_q.forward_member(b.state, i)  # [B, A]
                # Exact soft value over the agent's own actions; -inf (unavailable) entries drop out.
                vloc = tau * torch.logsumexp((cfg.alpha / tau) * b.logmu_all[:, i] + qloc / tau, dim=-1)
                q_a = qloc.gather(-1, b.actions[:, i, None]).squeeze(-1)
                _, expadv = self.k.advantage_weights(q_a, vloc, logp_pi, b.logp_mu, None, i, tau, cfg.beta,
                                                     cfg.rho_max, cfg.z_max)
                w = expadv.index_select(0, sel) if row_w is None else expadv * row_w

            member = self.pi.member(i)
            params = self.pi.nets.member(member)
            logits = self.pi.logits(b.obs[sel_mine, i], i, params)
            logp, entropy = self.k.masked_softmax_stats(logits, b.avail[sel_mine, i], a_i)
            loss = -self.shard.total(w[mine] * logp) / w.sum()
            self.shard.require_finite(policy_loss=loss)
            grads = torch.autograd.grad(loss, params)
            self.shard.average_(grads)
            self.pi_opt.step(grads, member)

            # The last agent's successors (none) read no ratio: its refresh would be discarded.
            if sequential and i != order[-1]:
                with torch.no_grad():
                    if self.pi.shared:  # a shared network moved every agent's policy
                        logp_pi = self.logp_stack(b)
                    else:
                        logp_pi[i] = self.agent_logp(b, i)[0]
            stats["policy_loss"] += loss.detach() / n
            stats["local_q_loss"] += lq_loss.detach() / n
            stats["entropy"] += entropy.detach().mean() / n
            stats["weight_max"] = torch.maximum(stats["weight_max"], w.max())
        return stats

    @precision.matmuls
    def update(self, b: Batch) -> dict[str, Tensor]:
        """One InSPO iteration on a uniformly sampled batch."""
        qbar, q_loss, v_loss = self.critic_step(b)
        if self.shard.world > 1:
            self.shard.require_finite(q_loss=q_loss, v_loss=v_loss)
        else:
            self.finite.note(q_loss=q_loss, v_loss=v_loss)
        stats = self.policy_pass(b, qbar)
        stats.update(q_loss=q_loss, v_loss=v_loss)
        return stats

    def diagnostics(self, b: Batch) -> dict[str, float]:
        """The teammate ratios of the current policies on ``b``
        (:func:`~inspo.algos.ratio_diagnostics.teammate_ratio_diagnostics`): ``rho_ess_min``, ``rho_ess_mean`` and
        ``rho_clipped``. Reported with ``use_rho`` off too, where no ratio is used: there they say how far the
        teammates moved from mu."""
        with torch.no_grad():
            return teammate_ratio_diagnostics(self.logp_stack(b), b.logp_mu, self.cfg.rho_max)

    def check_finite(self) -> None:
        """Raise FloatingPointError naming every loss that was non-finite since the learner began (one read from
        the device; the trainer calls it every ``cfg.check_every`` iterations)."""
        self.finite.check()
