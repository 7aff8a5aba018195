"""Populations trained as one: P InSPO runs (:class:`StackedInSPO`) or P behaviour clonings (:class:`StackedBC`)
with every network stacked over members and agents (:mod:`inspo.algos.stacking`), so that one batched op serves
all members where P single runs would make P calls.

Member p ends every iteration exactly where its own learner, updated alone on the same batch, would (to float
rounding): the same arithmetic as :func:`inspo.reference.critic_update` and
:func:`inspo.reference.sequential_update` with a member axis in front, member p's hyper-parameters broadcast over its
rows, its own Adam moments and step counts, and its own generator drawing what the single learner draws, in the
same order (the agents' order, then one resampling of the rows per agent). In the sequential pass every member has
its own agent at position k: its rows of the stacks are gathered by a device index (never read by the host), stepped
and written back. The members' losses are summed, so that each member's gradients are its own.

Built from the members' freshly initialised learners; :meth:`StackedInSPO.sync` writes the population's state back
into them (checkpoints keep the single-run format) and :meth:`StackedInSPO.reload` reads them (on resume).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from inspo import reference
from inspo.algos.batch import Batch
from inspo.algos.bc import BehaviourCloning
from inspo.algos.common import kernel_backend, policy_sizes
from inspo.algos.finite import MemberWatch
from inspo.algos.inspo import InSPO
from inspo.algos.stacking import (
    StackedNets,
    agreed,
    batched_mlp,
    leaves,
    lr_groups,
    stack_params,
    unstack_params,
)

STATS = ("policy_loss", "local_q_loss", "entropy", "weight_max", "q_loss", "v_loss")
"""A member's statistics, in the order an InSPO learner returns them."""


def _softmax(backend: str):
    # The kernel of the members' backend, without the twin's row checks (they read the data on the host).
    return reference.softmax_stats if backend == "torch" else kernel_backend(backend).masked_softmax_stats


def _check_members(members: Sequence, kind: type, name: str) -> None:
    if not members:
        raise ValueError(f"{name} needs at least one member, got none")
    for p, m in enumerate(members):
        if not isinstance(m, kind):
            raise ValueError(f"{name} stacks {kind.__name__} members; member {p} is a {type(m).__name__}")
        if m.shard.world > 1:
            raise ValueError(f"{name} trains in one process; member {p} is rank {m.shard.rank} of {m.shard.world}")
        if m.cfg.shared_policy:
            raise ValueError(f"{name} stacks per-agent policies; member {p} has shared_policy=True (train it alone)")


def _check_tensors(what: str, tensors_per_member: Sequence[Sequence[Tensor]]) -> None:
    """Every member's ``what`` has the same shapes, dtype and device."""
    agreed(f"{what} shapes", [[tuple(t.shape) for t in ts] for ts in tensors_per_member])
    agreed(f"{what} dtype", [ts[0].dtype for ts in tensors_per_member])
    agreed(f"{what} device", [ts[0].device for ts in tensors_per_member])


class StackedInSPO:
    """P InSPO learners trained as one population (see the module docstring); ``learners[p]`` is member p's ordinary
    learner, whose generator (``gen``) member p draws from."""

    # Settings every member must share: they shape the networks or the pass. The others (seed, alpha, beta, gamma,
    # polyak, lr_policy, lr_critic, rho_max, z_max, critic_alpha, and what only the trainer reads) may differ.
    SHARED = ("batch_size", "hidden", "order", "weighting", "use_rho", "local_critic_steps", "dtype", "device")

    def __init__(self, learners: Sequence[InSPO]) -> None:
        _check_members(learners, InSPO, "StackedInSPO")
        self.learners = list(learners)
        cfgs = [m.cfg for m in learners]
        for field in self.SHARED:
            agreed(field, [getattr(c, field) for c in cfgs])
        for field in ("n_agents", "obs_dim", "n_actions"):
            agreed(field, [getattr(m, field) for m in learners])
        agreed("state_dim", [m.v[0].in_features for m in learners])
        _check_tensors("policy", [m.pi_opt.params for m in learners])
        _check_tensors("critic", [m.critic_opt.params for m in learners])
        _check_tensors("local critic", [m.local_opt.params for m in learners])
        first = learners[0]
        cfg = first.cfg
        self.n_members, self.n_agents, self.n_actions = len(learners), first.n_agents, first.n_actions
        self.sequential, self.use_rho = cfg.order != "simultaneous", cfg.use_rho
        self.resample, self.local_critic_steps = cfg.weighting == "resample", cfg.local_critic_steps
        self._softmax = _softmax(cfg.backend)
        like = first.pi_opt.params[0]
        p_, n = self.n_members, self.n_agents

        def column(values: Sequence[float]) -> Tensor:  # [P, 1]: broadcast over a member's rows
            return torch.tensor(list(values), dtype=like.dtype, device=like.device)[:, None]

        tau = [c.alpha + c.beta for c in cfgs]
        self.tau = column(tau)
        self.alpha_tau = column([c.alpha / t for c, t in zip(cfgs, tau)])
        self.beta_tau = column([c.beta / t for c, t in zip(cfgs, tau)])
        critic_tau = [m.critic_tau for m in learners]
        self.critic_tau = column(critic_tau)
        self.critic_beta_tau = column([c.beta / t for c, t in zip(cfgs, critic_tau)])
        self.gamma = column([c.gamma for c in cfgs])
        self.log_rho_max = column([math.log(c.rho_max) for c in cfgs])
        self.z_max = column([c.z_max for c in cfgs])
        polyak = [c.polyak for c in cfgs]
        self.polyak: float | Tensor = polyak[0] if len(set(polyak)) == 1 else column(polyak)
        self.lr_policy = lr_groups([c.lr_policy for c in cfgs])
        self.lr_critic = lr_groups([c.lr_critic for c in cfgs])
        self.seeds = [c.seed for c in cfgs]
        self.finite = MemberWatch(self.seeds)

        # The stacks: member p's agent i at row p * N + i, member p's critics at row p.
        self.pi = StackedNets.of([m.pi_opt for m in learners])
        self.local_q = StackedNets.of([m.local_opt for m in learners])
        self.critic = StackedNets.of([m.critic_opt for m in learners])  # [*Q, *V]
        self.n_q = len(list(first.q.parameters()))
        self.q_target = stack_params([list(m.q_target.parameters()) for m in learners])
        # Constant indices: each member's first row in the [P * N] stacks.
        device = like.device
        self._first_agent = torch.arange(p_, device=device)[:, None] * n
        self._fixed_rows = (self._first_agent + torch.arange(n, device=device)).t().contiguous()  # [N, P]
        self.random_order = cfg.order == "random"

    # -- the population interface ---------------------------------------------------------------------------
    def update(self, batches: Sequence[Batch]) -> list[dict[str, Tensor]]:
        """One InSPO iteration of every member, member p on ``batches[p]``; member p's statistics (as its learner's
        ``update`` returns them)."""
        b = StackedBatch(batches)
        qbar, q_loss, v_loss = self.critic_step(b)
        self.finite.note(q_loss=q_loss, v_loss=v_loss)
        stats = self.policy_pass(b, qbar)
        self.finite.note(local_q_loss=stats[1], policy_loss=stats[0])
        columns = [s.unbind(0) for s in (*stats, q_loss, v_loss)]
        return [dict(zip(STATS, member)) for member in zip(*columns)]

    def check_finite(self) -> None:
        """Raise FloatingPointError naming every member (index and seed) and loss that turned non-finite since the
        population began (one read from the device)."""
        self.finite.check()

    def sync(self) -> None:
        """Write the population's networks and optimiser states into the member learners."""
        ms = self.learners
        self.pi.copy_to([m.pi_opt for m in ms])
        self.local_q.copy_to([m.local_opt for m in ms])
        self.critic.copy_to([m.critic_opt for m in ms])
        unstack_params(self.q_target, [list(m.q_target.parameters()) for m in ms])

    def reload(self) -> None:
        """Read the member learners' networks and optimiser states into the population (after a resume loaded
        them)."""
        ms = self.learners
        self.pi.copy_from([m.pi_opt for m in ms])
        self.local_q.copy_from([m.local_opt for m in ms])
        self.critic.copy_from([m.critic_opt for m in ms])
        unstack_params(self.q_target, [list(m.q_target.parameters()) for m in ms], back=True)

    # -- 1. policy evaluation: reference.critic_update with a member axis ----------------------------------
    @torch.no_grad()
    def critic_step(self, b: StackedBatch) -> tuple[Tensor, Tensor, Tensor]:
        """One step on every member's Q and V; ``(Qbar(s, a) [P, B] before the step, Q loss [P], V loss [P])``."""
        c, nq = self.critic, self.n_q
        target = b.reward + self.gamma * (1.0 - b.terminated) * batched_mlp(b.next_state, c.params[nq:]).squeeze(-1)
        x = torch.cat([b.state, F.one_hot(b.actions, self.n_actions).to(b.state.dtype).flatten(-2)], dim=-1)
        qbar = batched_mlp(x, self.q_target).squeeze(-1)
        params = leaves(c.params)
        with torch.enable_grad():
            q_loss = (batched_mlp(x, params[:nq]).squeeze(-1) - target).pow(2).mean(1)
            value = batched_mlp(b.state, params[nq:]).squeeze(-1)
            # clamp, not minimum: a tie passes the whole gradient, as in the single learner.
            z = torch.clamp((qbar - value) / self.critic_tau - self.critic_beta_tau * b.logp_mu.sum(1), max=self.z_max)
            v_loss = torch.exp(z).mean(1) + value.mean(1) / self.critic_tau[:, 0]
            grads = torch.autograd.grad((q_loss + v_loss).sum(), params)
        c.adam_step(grads, self.lr_critic)
        q = c.params[:nq]
        if isinstance(self.polyak, float):
            torch._foreach_lerp_(self.q_target, q, self.polyak)
        else:
            for t, s in zip(self.q_target, q, strict=True):
                t.lerp_(s, self.polyak.view(-1, *[1] * (s.dim() - 1)))
        return qbar, q_loss.detach(), v_loss.detach()

    # -- 2. the sequential pass: reference.sequential_update with a member axis ----------------------------
    def agent_rows(self) -> Tensor:
        """``[N, P]``: at ``[k, p]`` the stack row of member p's k-th agent of this iteration, each member's order
        drawn from its own generator as its learner draws it."""
        if not self.random_order:
            return self._fixed_rows
        orders = torch.stack([m.order() for m in self.learners]).to(self._first_agent.device)
        return (self._first_agent + orders).t().contiguous()

    @torch.no_grad()
    def policy_pass(self, b: StackedBatch, qbar: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Every member's pass over its agents in its own order; ``(policy_loss, local_q_loss, entropy,
        weight_max)``, ``[P]`` each."""
        n, members, rows = self.n_agents, self.n_members, qbar.shape[1]
        logp_pi = self._softmax(batched_mlp(b.obs, self.pi.params), b.avail, b.agent_actions)[0]  # [P * N, B]
        agent_rows = self.agent_rows()
        first_row = self._first_agent // n * rows  # each member's first row in the [P * B] batch rows
        zero = qbar.new_zeros(members)
        policy_loss, local_q_loss, entropy, weight_max = zero, zero, zero, zero
        if self.use_rho:
            diff = logp_pi - b.logp_mu_rows
            if not self.sequential:
                # Every agent sees the pre-iteration teammates: all ratios at once.
                per = diff.view(members, n, rows)
                rho_all = torch.exp(torch.minimum(per.sum(1, keepdim=True) - per, self.log_rho_max[:, :, None]))
                rho_all = rho_all.view(members * n, rows)
        for k in range(n):
            i = agent_rows[k]  # [P], never read by the host

            if not self.use_rho:
                rho = torch.ones_like(qbar)
            elif self.sequential:
                # Member p's agent's ratio: the sum of its teammates' log-ratios (its predecessors' rows refreshed).
                diff = logp_pi - b.logp_mu_rows
                log_rho = diff.view(members, n, rows).sum(1) - diff.index_select(0, i)
                rho = torch.exp(torch.minimum(log_rho, self.log_rho_max))
            else:
                rho = rho_all.index_select(0, i)
            obs_i, avail_i, actions_i = b.obs.index_select(0, i), b.avail.index_select(0, i), \
                b.agent_actions.index_select(0, i)
            state_s, target, obs_s, avail_s, a_s = b.state, qbar, obs_i, avail_i, actions_i
            if self.resample:
                sel = torch.stack([torch.multinomial(rho[p], rows, replacement=True, generator=m.gen)
                                   for p, m in enumerate(self.learners)])
                flat = (sel + first_row).view(-1)
                state_s, target, obs_s, avail_s, a_s = (
                    t.flatten(0, 1).index_select(0, flat).view(t.shape)
                    for t in (b.state, qbar, obs_i, avail_i, actions_i))
                row_w = None
            else:
                row_w = rho
            a_col = a_s.unsqueeze(-1)

            # Local critic: E over teammates' current policies of Q(s, a_i, a_-i), from dataset joint actions only.
            critic = self.local_q.gather(i)
            for _ in range(self.local_critic_steps):
                params = leaves(critic.params)
                with torch.enable_grad():
                    err = (batched_mlp(state_s, params).gather(-1, a_col).squeeze(-1) - target).pow(2)
                    lq_loss = err.mean(1) if row_w is None else (row_w * err).sum(1) / row_w.sum(1)
                    grads = torch.autograd.grad(lq_loss.sum(), params)
                critic.adam_step(grads, self.lr_critic)
            self.local_q.put(i, critic)

            # Exact local soft value over the agent's own actions; -inf (unavailable) entries drop out.
            qloc = batched_mlp(b.state, critic.params)  # [P, B, A]
            logmu_i = b.logmu_all.index_select(0, i)
            vloc = self.tau * torch.logsumexp(self.alpha_tau[:, :, None] * logmu_i + qloc / self.tau[:, :, None], -1)
            q_a = qloc.gather(-1, actions_i.unsqueeze(-1)).squeeze(-1)
            z = (q_a - vloc) / self.tau - self.beta_tau * b.logp_mu_rows.index_select(0, i)
            expadv = torch.exp(torch.minimum(z, self.z_max))
            w = expadv.gather(1, sel) if row_w is None else expadv * row_w

            policy = self.pi.gather(i)
            params = leaves(policy.params)
            with torch.enable_grad():
                logp, ent = self._softmax(batched_mlp(obs_s, params), avail_s, a_s)
                loss = -(w * logp).sum(1) / w.sum(1)
                grads = torch.autograd.grad(loss.sum(), params)
            policy.adam_step(grads, self.lr_policy)
            self.pi.put(i, policy)

            # The last agent's successors (none) read no ratio: its refresh would be discarded.
            if self.sequential and k + 1 < n:
                logp_pi.index_copy_(0, i, self._softmax(batched_mlp(obs_i, policy.params), avail_i, actions_i)[0])
            policy_loss = policy_loss + loss.detach() / n
            local_q_loss = local_q_loss + lq_loss.detach() / n
            entropy = entropy + ent.detach().mean(1) / n
            weight_max = torch.maximum(weight_max, w.amax(1))
        return policy_loss, local_q_loss, entropy, weight_max


class StackedBatch:
    """P members' batches, stacked: per-run fields ``[P, B, ...]`` (``logp_mu [P, N, B]``) and, for the per-agent
    networks, agent-major fields ``[P * N, B, ...]`` (member p's agent i at row ``p * N + i``)."""

    def __init__(self, batches: Sequence[Batch]) -> None:
        def stack(name: str) -> Tensor:
            return torch.stack([getattr(b, name) for b in batches])

        def agent_major(name: str) -> Tensor:  # [B, N, ...] per member -> [P * N, B, ...]
            t = torch.stack([getattr(b, name).transpose(0, 1) for b in batches])
            return t.flatten(0, 1)

        self.state, self.reward, self.terminated, self.next_state = (
            stack(name) for name in ("state", "reward", "terminated", "next_state"))
        self.actions = stack("actions")  # [P, B, N]
        self.logp_mu = stack("logp_mu")  # [P, N, B]
        self.logp_mu_rows = self.logp_mu.flatten(0, 1)  # [P * N, B]
        self.obs, self.avail, self.logmu_all = (agent_major(name) for name in ("obs", "avail", "logmu_all"))
        self.agent_actions = agent_major("actions")  # [P * N, B]


class StackedBC:
    """P behaviour clonings trained as one: the members' policies stacked ``[P, N, ...]`` (member p's agent i at
    row ``p * N + i`` of the flattened stack), one batched step for all, each member with its own Adam state and
    learning rate."""

    def __init__(self, members: Sequence[BehaviourCloning]) -> None:
        _check_members(members, BehaviourCloning, "StackedBC")
        self.members = list(members)
        agreed("hidden", [m.cfg.hidden for m in members])
        agreed("(n_agents, obs_dim, n_actions)", [policy_sizes(m.policy) for m in members])
        _check_tensors("policy", [m.opt.params for m in members])
        self._softmax = _softmax(members[0].cfg.backend)
        self.lr = lr_groups([m.cfg.lr_policy for m in members])
        self.policy = StackedNets.of([m.opt for m in members])  # [P, N, ...] per tensor: one Adam unit per member

    def update(self, batches: Sequence[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        """One step of every member on its ``(obs [B, N, obs_dim], avail, actions)``; the ``[P]`` losses (each the
        negative log-likelihood per agent and row, as :meth:`BehaviourCloning.update` returns it)."""
        obs, avail, actions = (torch.stack([b[j].transpose(0, 1) for b in batches]).flatten(0, 1) for j in range(3))
        params = leaves(self.policy.params)
        logits = batched_mlp(obs, [p.flatten(0, 1) for p in params])  # [P * N, B, A]
        logp, _ = self._softmax(logits, avail, actions)
        loss = -logp.view(len(batches), -1).mean(1)
        grads = torch.autograd.grad(loss.sum(), params)
        self.policy.adam_step(grads, self.lr)
        return loss.detach()

    def sync(self) -> None:
        """Write the stacked policies and Adam states into the members."""
        self.policy.copy_to([m.opt for m in self.members])

    def reload(self) -> None:
        """Read the members' policies and Adam states into the stack (after a resume loaded them)."""
        self.policy.copy_from([m.opt for m in self.members])
