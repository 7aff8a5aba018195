"""Pure-PyTorch twins of the fused kernels in :mod:`inspo.ops` (docs/design.md section 5).

These are the definitions the kernels are tested against, forward and backward, and the ``backend="torch"`` path of
the trainer. Each twin has its op's signature: the same arguments, the same returns, the same in-place updates and
the same draws from a generator. They favour clarity over speed; each validates its input the same way the kernel
does, so both paths fail on the same bad input with the same kind of message.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["advantage_weights", "critic_update", "gru_sequence", "masked_softmax_stats", "sequential_update"]


def _check_weights_args(q: Tensor, v: Tensor, logp_pi: Tensor, logp_mu: Tensor, mask: Tensor | None, agent: int,
                        tau: float, rho_max: float) -> None:
    if logp_pi.dim() != 2:
        raise ValueError(f"logp_pi must be [N, B], got shape {tuple(logp_pi.shape)}")
    n, b = logp_pi.shape
    if logp_mu.shape != logp_pi.shape:
        raise ValueError(f"logp_mu must have the shape of logp_pi {(n, b)}, got {tuple(logp_mu.shape)}")
    for name, t in (("q", q), ("v", v)):
        if tuple(t.shape) not in ((b,), (n, b)):
            raise ValueError(f"{name} must be [B]={b} or [N, B]={(n, b)}, got shape {tuple(t.shape)}")
    for name, t in (("q", q), ("v", v), ("logp_pi", logp_pi), ("logp_mu", logp_mu)):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
        if t.dtype != logp_pi.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but logp_pi has {logp_pi.dtype}; all must match")
        if t.device != logp_pi.device:
            raise ValueError(f"{name} is on {t.device} but logp_pi is on {logp_pi.device}")
    if mask is not None:
        if mask.dtype != torch.bool or mask.shape != logp_pi.shape:
            raise ValueError(f"mask must be a bool tensor of shape {(n, b)}, got {mask.dtype} {tuple(mask.shape)}")
        if mask.device != logp_pi.device:
            raise ValueError(f"mask is on {mask.device} but logp_pi is on {logp_pi.device}")
    if not -1 <= agent < n:
        raise ValueError(f"agent must be in [-1, {n}) for N={n} agents, got {agent}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if not rho_max > 0:
        raise ValueError(f"rho_max must be > 0, got {rho_max}")


def advantage_weights(q: Tensor, v: Tensor, logp_pi: Tensor, logp_mu: Tensor, mask: Tensor | None, agent: int,
                      tau: float, beta: float, rho_max: float = 100.0, z_max: float = 10.0) -> tuple[Tensor, Tensor]:
    """Teammate importance ratio and exponentiated in-sample advantage (docs/design.md 5.1).

    ``rho_i = min(exp(sum_{j != i, alive} logp_pi_j - logp_mu_j), rho_max)`` and
    ``expadv_i = exp(min((q_i - v_i) / tau - (beta / tau) logp_mu_i, z_max))``. ``q`` and ``v`` are ``[B]`` (shared
    by all agents) or ``[N, B]``. Returns ``[B]`` tensors for ``agent`` in ``[0, N)`` and ``[N, B]`` for
    ``agent = -1``; outputs of masked (dead) agents are 0.
    """
    _check_weights_args(q, v, logp_pi, logp_mu, mask, agent, tau, rho_max)
    diff = logp_pi - logp_mu
    if mask is not None:
        diff = diff.masked_fill(~mask, 0.0)
    q = q.expand_as(logp_pi)
    v = v.expand_as(logp_pi)
    rows = slice(None) if agent == -1 else agent
    log_rho = diff.sum(0) - diff[rows]
    # Clamping the exponent instead of the result keeps exp() finite; min(exp(x), m) == exp(min(x, log m)).
    rho = torch.exp(torch.clamp(log_rho, max=math.log(rho_max)))
    z = (q[rows] - v[rows]) / tau - (beta / tau) * logp_mu[rows]
    expadv = torch.exp(torch.clamp(z, max=z_max))
    if mask is not None:
        alive = mask[rows]
        rho = rho * alive
        expadv = expadv * alive
    return rho, expadv


def check_softmax_inputs(logits: Tensor, avail: Tensor, actions: Tensor) -> None:
    """Raise a ValueError/TypeError naming the first bad row of a masked-softmax call."""
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating tensor, got {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must be [..., A] with A >= 1, got shape {tuple(logits.shape)}")
    if avail.dtype != torch.bool or avail.shape != logits.shape:
        raise ValueError(f"avail must be a bool tensor of the logits' shape {tuple(logits.shape)}, "
                         f"got {avail.dtype} {tuple(avail.shape)}")
    if actions.dtype != torch.int64 or actions.shape != logits.shape[:-1]:
        raise ValueError(f"actions must be an int64 tensor of shape {tuple(logits.shape[:-1])}, "
                         f"got {actions.dtype} {tuple(actions.shape)}")
    for name, t in (("avail", avail), ("actions", actions)):
        if t.device != logits.device:
            raise ValueError(f"{name} is on {t.device} but logits is on {logits.device}")
    n_actions = logits.shape[-1]
    flat_avail = avail.reshape(-1, n_actions)
    flat_actions = actions.reshape(-1)
    empty = ~flat_avail.any(-1)
    if bool(empty.any()):
        row = int(empty.nonzero()[0, 0])
        raise ValueError(f"row {row} has no available action (avail is all False)")
    bad = (flat_actions < 0) | (flat_actions >= n_actions)
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"row {row}: action {int(flat_actions[row])} is out of range [0, {n_actions})")
    unavailable = ~flat_avail.gather(1, flat_actions[:, None]).squeeze(1)
    if bool(unavailable.any()):
        row = int(unavailable.nonzero()[0, 0])
        raise ValueError(f"row {row}: action {int(flat_actions[row])} is not available")


def masked_softmax_stats(logits: Tensor, avail: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probability of ``actions`` and entropy of the softmax of ``logits`` restricted to ``avail`` (docs/design.md
    5.2).

    Unavailable logits never influence the result (they may hold any value, even inf or NaN); gradients with respect
    to them are 0.
    """
    check_softmax_inputs(logits, avail, actions)
    return softmax_stats(logits, avail, actions)


def softmax_stats(logits: Tensor, avail: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`masked_softmax_stats` without its row checks, which read the data back on the host: what a training
    iteration calls, on rows of a dataset whose actions were checked available when it was loaded."""
    x = logits.masked_fill(~avail, float("-inf"))
    logp_all = torch.log_softmax(x, dim=-1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    # Zero the -inf entries before the product: 0 * -inf would put NaN into the backward pass.
    entropy = -(logp_all.exp() * logp_all.masked_fill(~avail, 0.0)).sum(-1)
    return logp, entropy


# ------------------------------------------------------------------------------------ the update ops (docs/design.md
# 5.3)
def _mlp(x: Tensor, params: list[Tensor], matmul_dtype: torch.dtype | None = None) -> Tensor:
    """The MLP of ``params = [weight0, bias0, weight1, ...]`` (ReLU between the layers) on ``x [..., in]``.

    With ``matmul_dtype`` (e.g. bfloat16) the input and the parameters are cast to it, the layers (and, under
    autograd, their backward) run in it, and the output is cast back to ``x``'s dtype; the casts pass the gradients
    back to the parameters in their own dtype.
    """
    out_dtype = x.dtype
    if matmul_dtype is not None:
        x = x.to(matmul_dtype)
    layers = len(params) // 2
    for l in range(layers):
        w, b = params[2 * l], params[2 * l + 1]
        x = F.linear(x, w.to(x.dtype), b.to(x.dtype))
        if l < layers - 1:
            x = torch.relu(x)
    return x.to(out_dtype)


def _check_matmul_dtype(matmul_dtype: torch.dtype | None, like: Tensor) -> None:
    if matmul_dtype not in (None, like.dtype, torch.bfloat16, torch.float16):
        raise TypeError(f"matmul_dtype must be None, the data's {like.dtype}, torch.bfloat16 or torch.float16, got "
                        f"{matmul_dtype}")


def _leaves(params: list[Tensor]) -> list[Tensor]:
    """Detached copies of ``params`` (sharing their memory) that autograd differentiates with respect to."""
    return [p.detach().requires_grad_() for p in params]


def _adam_step(params: list[Tensor], grads: tuple[Tensor, ...], exp_avg: list[Tensor], exp_avg_sq: list[Tensor],
               step: Tensor, lr: float, betas: tuple[float, float], eps: float) -> None:
    # As torch.optim.Adam(fused=True): the step count first, then the kernel, which reads it. The kernel walks every
    # tensor as contiguous memory, and a batched matmul's weight gradient may come back transposed.
    step.add_(1)
    torch._fused_adam_(params, [g.contiguous() for g in grads], exp_avg, exp_avg_sq, [], [step] * len(params), lr=lr,
                       beta1=betas[0], beta2=betas[1], weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)


def _check_same(name: str, t: Tensor, anchor_name: str, anchor: Tensor) -> None:
    if t.dtype != anchor.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {anchor_name} has {anchor.dtype}; all must match")
    if t.device != anchor.device:
        raise ValueError(f"{name} is on {t.device} but {anchor_name} is on {anchor.device}")


def _check_mlp(name: str, params: list[Tensor], exp_avg: list[Tensor], exp_avg_sq: list[Tensor], n: int | None,
               like: Tensor) -> None:
    """``params`` is an MLP's ``[weight0, bias0, ...]`` (a stack of ``n`` of them, or one when ``n`` is None) of the
    data's dtype and device, with Adam moments of its shapes."""
    if not params or len(params) % 2:
        raise ValueError(f"{name}: expected [weight0, bias0, weight1, bias1, ...], got {len(params)} tensors")
    if len(exp_avg) != len(params) or len(exp_avg_sq) != len(params):
        raise ValueError(f"{name}: expected one exp_avg and one exp_avg_sq per parameter ({len(params)}), got "
                         f"{len(exp_avg)} and {len(exp_avg_sq)}")
    lead = 0 if n is None else 1
    for j, p in enumerate(params):
        weight = j % 2 == 0
        if p.dim() != (2 if weight else 1) + lead or (n is not None and p.shape[0] != n):
            want = ("[out, in]" if weight else "[out]") if n is None else \
                f"{'[N, out, in]' if weight else '[N, out]'} with N={n}"
            raise ValueError(f"{name}[{j}] must be {want}, got shape {list(p.shape)}")
        if not p.is_contiguous():
            raise ValueError(f"{name}[{j}] must be contiguous")
        if p.dtype != like.dtype:
            raise TypeError(f"{name}[{j}] has dtype {p.dtype} but the data have {like.dtype}")
        if p.device != like.device:
            raise ValueError(f"{name}[{j}] is on {p.device} but the data are on {like.device}")
        m, v = exp_avg[j], exp_avg_sq[j]
        if m.shape != p.shape or v.shape != p.shape or not (m.is_contiguous() and v.is_contiguous()):
            raise ValueError(f"{name}[{j}]: the Adam moments must be contiguous and of its shape {list(p.shape)}")


def _check_steps(name: str, steps: Tensor, n: int | None, like: Tensor) -> None:
    shape = () if n is None else (n,)
    if steps.shape != shape or steps.dtype != torch.float32 or steps.device != like.device:
        want = "[]" if n is None else f"[N]=[{n}]"
        raise ValueError(f"{name}: steps must be float32 {want} on {like.device}, got {steps.dtype} "
                         f"{list(steps.shape)} on {steps.device}")


def _check_pass_args(pi, pi_exp_avg, pi_exp_avg_sq, pi_steps, local_q, local_q_exp_avg, local_q_exp_avg_sq,
                     local_q_steps, logp_pi, obs, state, avail, logmu_all, logp_mu, qbar, order,
                     local_critic_steps) -> None:
    if obs.dim() != 3:
        raise ValueError(f"obs must be [B, N, obs_dim], got shape {list(obs.shape)}")
    rows, n = obs.shape[:2]
    if logp_pi.shape != (n, rows):
        raise ValueError(f"logp_pi must be [N, B]=[{n}, {rows}], got shape {list(logp_pi.shape)}")
    if state.dim() != 2 or state.shape[0] != rows:
        raise ValueError(f"state must be [B, state_dim] with B={rows}, got shape {list(state.shape)}")
    if logmu_all.shape != avail.shape or avail.dim() != 3 or avail.shape[:2] != (rows, n):
        raise ValueError(f"avail and logmu_all must be [B, N, A] with B={rows}, N={n}, got {list(avail.shape)} and "
                         f"{list(logmu_all.shape)}")
    if qbar.shape != (rows,):
        raise ValueError(f"qbar must be [B]=[{rows}], got shape {list(qbar.shape)}")
    if order.dtype != torch.int64 or order.shape != (n,):
        raise ValueError(f"order must be an int64 tensor [N]=[{n}], got {order.dtype} {list(order.shape)} on "
                         f"{order.device}")
    if local_critic_steps < 1:
        raise ValueError(f"local_critic_steps must be >= 1, got {local_critic_steps}")
    for name, t in (("state", state), ("logmu_all", logmu_all), ("logp_mu", logp_mu), ("qbar", qbar),
                    ("logp_pi", logp_pi)):
        _check_same(name, t, "obs", obs)
    if logp_mu.shape != logp_pi.shape:
        raise ValueError(f"logp_mu must be [N, B]={list(logp_pi.shape)}, got shape {list(logp_mu.shape)}")
    _check_mlp("pi", pi, pi_exp_avg, pi_exp_avg_sq, n, obs)
    _check_steps("pi", pi_steps, n, obs)
    _check_mlp("local_q", local_q, local_q_exp_avg, local_q_exp_avg_sq, n, obs)
    _check_steps("local_q", local_q_steps, n, obs)
    # Checked on the device, so that the host never waits for it: on the CPU it raises at once, on CUDA it fails the
    # stream (a device-side assert) before any update.
    agents = order.to(obs.device)
    is_permutation = (agents.sort().values == torch.arange(n, device=obs.device)).all()
    torch._assert_async(is_permutation, f"order must be a permutation of 0..{n - 1}")


@torch.no_grad()
def sequential_update(pi: list[Tensor], pi_exp_avg: list[Tensor], pi_exp_avg_sq: list[Tensor], pi_steps: Tensor,
                      local_q: list[Tensor], local_q_exp_avg: list[Tensor], local_q_exp_avg_sq: list[Tensor],
                      local_q_steps: Tensor, logp_pi: Tensor, obs: Tensor, state: Tensor, avail: Tensor,
                      actions: Tensor, logmu_all: Tensor, logp_mu: Tensor, qbar: Tensor, order: Tensor, *,
                      alpha: float, beta: float, rho_max: float, z_max: float, lr_policy: float, lr_critic: float,
                      adam_betas: tuple[float, float], adam_eps: float, local_critic_steps: int, sequential: bool,
                      use_rho: bool, resample: bool, generator: torch.Generator | None = None,
                      matmul_dtype: torch.dtype | None = None) -> Tensor:
    """InSPO's sequential improvement pass over every agent in ``order`` (docs/design.md 5.3); updates in place.

    The arguments, returns and in-place updates are those of :func:`inspo.ops.sequential_update`. For each agent
    ``i`` of ``order``: the teammate ratio ``rho_i`` from the log-prob stack ``logp_pi`` (with ``sequential``, its
    predecessors' rows are already refreshed; otherwise every agent sees the stack as it came in), the rows of the
    batch resampled in proportion to it (``resample``; otherwise every row, weighted by it), ``local_critic_steps``
    Adam steps of its local critic towards ``qbar`` on those rows, the exponentiated advantage of the local critic
    over its exact soft value, one Adam step of its policy on the weighted log-likelihood, and the refresh of its row
    of ``logp_pi``. ``order`` is a permutation on any device, used through index operations only, and nothing is
    read back on the host: a non-finite loss is not checked here but shows in the returned statistics. With
    ``matmul_dtype`` the networks' matrix products run in it (:func:`_mlp`), whatever autocast is in effect.
    """
    _check_pass_args(pi, pi_exp_avg, pi_exp_avg_sq, pi_steps, local_q, local_q_exp_avg, local_q_exp_avg_sq,
                     local_q_steps, logp_pi, obs, state, avail, logmu_all, logp_mu, qbar, order, local_critic_steps)
    _check_matmul_dtype(matmul_dtype, obs)
    with torch.autocast(obs.device.type, enabled=False):
        return _sequential_update(pi, pi_exp_avg, pi_exp_avg_sq, pi_steps, local_q, local_q_exp_avg,
                                  local_q_exp_avg_sq, local_q_steps, logp_pi, obs, state, avail, actions, logmu_all,
                                  logp_mu, qbar, order, alpha, beta, rho_max, z_max, lr_policy, lr_critic,
                                  adam_betas, adam_eps, local_critic_steps, sequential, use_rho, resample, generator,
                                  matmul_dtype)


def _sequential_update(pi, pi_exp_avg, pi_exp_avg_sq, pi_steps, local_q, local_q_exp_avg, local_q_exp_avg_sq,
                       local_q_steps, logp_pi, obs, state, avail, actions, logmu_all, logp_mu, qbar, order, alpha,
                       beta, rho_max, z_max, lr_policy, lr_critic, adam_betas, adam_eps, local_critic_steps,
                       sequential, use_rho, resample, generator, mm) -> Tensor:
    n, rows = logp_pi.shape
    tau = alpha + beta
    agents = order.to(obs.device)
    policy_loss, local_q_loss, entropy, weight_max = (qbar.new_zeros(()) for _ in range(4))
    if not sequential and use_rho:
        # Every agent sees the pre-iteration teammates: all ratios at once.
        rho_all, _ = advantage_weights(qbar, qbar, logp_pi, logp_mu, None, -1, tau, beta, rho_max, z_max)
    for k in range(n):
        # Agent i = order[k], as a device index [1] that is never read by the host: it gathers the agent's slices
        # (copies, which the Adam steps update and `index_copy_` writes back) and its columns of the batch.
        i = agents[k:k + 1]

        def pick(t: Tensor, dim: int) -> Tensor:
            return t.index_select(dim, i).squeeze(dim)

        if not use_rho:
            rho = torch.ones_like(qbar)
        elif sequential:
            # Every agent's ratio, then agent i's (each is the same sum less the agent's own term). Only rho is used
            # here (it picks the local critic's rows); q and v are placeholders.
            rho = pick(advantage_weights(qbar, qbar, logp_pi, logp_mu, None, -1, tau, beta, rho_max, z_max)[0], 0)
        else:
            rho = pick(rho_all, 0)
        if resample:
            sel = torch.multinomial(rho, rows, replacement=True, generator=generator)
            row_w = None
        else:
            sel = torch.arange(rows, device=qbar.device)
            row_w = rho
        obs_i, avail_i, actions_i = pick(obs, 1), pick(avail, 1), pick(actions, 1)
        state_s, target, a_s = state.index_select(0, sel), qbar.index_select(0, sel), actions_i.index_select(0, sel)
        critic, policy = [pick(p, 0) for p in local_q], [pick(p, 0) for p in pi]
        critic_m, critic_v = [pick(m, 0) for m in local_q_exp_avg], [pick(v, 0) for v in local_q_exp_avg_sq]
        policy_m, policy_v = [pick(m, 0) for m in pi_exp_avg], [pick(v, 0) for v in pi_exp_avg_sq]
        critic_step, policy_step = pick(local_q_steps, 0), pick(pi_steps, 0)

        # Local critic: E over teammates' current policies of Q(s, a_i, a_-i), from dataset joint actions only.
        for _ in range(local_critic_steps):
            params = _leaves(critic)
            with torch.enable_grad():
                err = (_mlp(state_s, params, mm).gather(-1, a_s[:, None]).squeeze(-1) - target).pow(2)
                lq_loss = err.mean() if row_w is None else (row_w * err).sum() / row_w.sum()
                grads = torch.autograd.grad(lq_loss, params)
            _adam_step(critic, grads, critic_m, critic_v, critic_step, lr_critic, adam_betas, adam_eps)
            _write_back(i, (local_q, critic), (local_q_exp_avg, critic_m), (local_q_exp_avg_sq, critic_v),
                        ([local_q_steps], [critic_step]))

        # Exact local soft value over the agent's own actions; -inf (unavailable) entries drop out.
        qloc = _mlp(state, critic, mm)
        vloc = tau * torch.logsumexp((alpha / tau) * pick(logmu_all, 1) + qloc / tau, dim=-1)
        q_a = qloc.gather(-1, actions_i[:, None]).squeeze(-1)
        # Agent i's advantage reads only its own logp_mu row: the twin on that row alone, as agent 0 of 1.
        _, expadv = advantage_weights(q_a, vloc, logp_pi.index_select(0, i), logp_mu.index_select(0, i), None, 0,
                                      tau, beta, rho_max, z_max)
        w = expadv.index_select(0, sel) if row_w is None else expadv * row_w

        params = _leaves(policy)
        with torch.enable_grad():
            logp, ent = softmax_stats(_mlp(obs_i.index_select(0, sel), params, mm), avail_i.index_select(0, sel), a_s)
            loss = -(w * logp).sum() / w.sum()
            grads = torch.autograd.grad(loss, params)
        _adam_step(policy, grads, policy_m, policy_v, policy_step, lr_policy, adam_betas, adam_eps)
        _write_back(i, (pi, policy), (pi_exp_avg, policy_m), (pi_exp_avg_sq, policy_v), ([pi_steps], [policy_step]))

        # The last agent's successors (none) read no ratio: its refresh would be discarded.
        if sequential and k + 1 < n:
            logp_pi.index_copy_(0, i, softmax_stats(_mlp(obs_i, policy, mm), avail_i, actions_i)[0][None])
        policy_loss = policy_loss + loss.detach() / n
        local_q_loss = local_q_loss + lq_loss.detach() / n
        entropy = entropy + ent.detach().mean() / n
        weight_max = torch.maximum(weight_max, w.max())
    return torch.stack([policy_loss, local_q_loss, entropy, weight_max])


def _write_back(i: Tensor, *pairs: tuple[list[Tensor], list[Tensor]]) -> None:
    """Copy each member's updated slices (second of a pair) into their stacks (first) at index ``i`` ``[1]``."""
    for stacks, member in pairs:
        for stack, t in zip(stacks, member, strict=True):
            stack.index_copy_(0, i, t[None])


def _check_critic_args(q, q_target, v, exp_avg, exp_avg_sq, step, state, actions, reward, terminated, next_state,
                       logp_mu) -> None:
    if state.dim() != 2:
        raise ValueError(f"state must be [B, state_dim], got shape {list(state.shape)}")
    rows = state.shape[0]
    if actions.dim() != 2 or actions.shape[0] != rows or actions.dtype != torch.int64:
        raise ValueError(f"actions must be int64 [B, N] with B={rows}, got {actions.dtype} {list(actions.shape)}")
    if next_state.shape != state.shape:
        raise ValueError(f"next_state must have the shape of state {list(state.shape)}, got "
                         f"{list(next_state.shape)}")
    for name, t in (("reward", reward), ("terminated", terminated)):
        if t.shape != (rows,):
            raise ValueError(f"{name} must be [B]=[{rows}], got shape {list(t.shape)}")
    if logp_mu.dim() != 2 or logp_mu.shape[1] != rows:
        raise ValueError(f"logp_mu must be [N, B] with B={rows}, got shape {list(logp_mu.shape)}")
    if len(q_target) != len(q):
        raise ValueError(f"q_target must have q's {len(q)} tensors, got {len(q_target)}")
    _check_mlp("q, v", [*q, *v], exp_avg, exp_avg_sq, None, state)
    _check_steps("critic", step, None, state)


@torch.no_grad()
def critic_update(q: list[Tensor], q_target: list[Tensor], v: list[Tensor], exp_avg: list[Tensor],
                  exp_avg_sq: list[Tensor], step: Tensor, state: Tensor, actions: Tensor, reward: Tensor,
                  terminated: Tensor, next_state: Tensor, logp_mu: Tensor, *, n_actions: int, alpha: float,
                  beta: float, gamma: float, z_max: float, polyak: float, lr: float, adam_betas: tuple[float, float],
                  adam_eps: float, matmul_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """InSPO's policy-evaluation step (docs/design.md 5.3); updates ``q``, ``v``, ``q_target`` and the Adam state in
    place.

    The arguments, returns and in-place updates are those of :func:`inspo.ops.critic_update`: the TD loss of the
    joint critic ``Q(s, a)`` (on the state and the agents' one-hot actions) towards ``r + gamma (1 - done) V(s')``,
    the in-sample exponential loss of ``V(s)``, one Adam step on ``[*q, *v]`` and Polyak averaging of ``q_target``
    towards ``q``. Returns ``(Qbar(s, a) of the target critic before the update, Q loss, V loss)``; the losses are
    not read here (a non-finite one is the caller's to find in them). With ``matmul_dtype`` the networks' matrix
    products run in it (:func:`_mlp`), whatever autocast is in effect.
    """
    _check_critic_args(q, q_target, v, exp_avg, exp_avg_sq, step, state, actions, reward, terminated, next_state,
                       logp_mu)
    _check_matmul_dtype(matmul_dtype, state)
    with torch.autocast(state.device.type, enabled=False):
        return _critic_update(q, q_target, v, exp_avg, exp_avg_sq, step, state, actions, reward, terminated,
                              next_state, logp_mu, n_actions, alpha, beta, gamma, z_max, polyak, lr, adam_betas,
                              adam_eps, matmul_dtype)


def _critic_update(q, q_target, v, exp_avg, exp_avg_sq, step, state, actions, reward, terminated, next_state, logp_mu,
                   n_actions, alpha, beta, gamma, z_max, polyak, lr, adam_betas, adam_eps,
                   mm) -> tuple[Tensor, Tensor, Tensor]:
    tau = alpha + beta
    target = reward + gamma * (1.0 - terminated) * _mlp(next_state, v, mm).squeeze(-1)
    x = torch.cat([state, F.one_hot(actions, n_actions).to(state.dtype).flatten(-2)], dim=-1)
    qbar = _mlp(x, q_target, mm).squeeze(-1)
    params = _leaves([*q, *v])
    with torch.enable_grad():
        q_loss = (_mlp(x, params[:len(q)], mm).squeeze(-1) - target).pow(2).mean()
        value = _mlp(state, params[len(q):], mm).squeeze(-1)
        # Exponential loss whose minimiser is the regularised soft value tau log sum_a mu^(alpha/tau) exp(Q/tau).
        z = torch.clamp((qbar - value) / tau - (beta / tau) * logp_mu.sum(0), max=z_max)
        v_loss = torch.exp(z).mean() + value.mean() / tau
        grads = torch.autograd.grad(q_loss + v_loss, params)
    _adam_step([*q, *v], grads, exp_avg, exp_avg_sq, step, lr, adam_betas, adam_eps)
    torch._foreach_lerp_(list(q_target), list(q), polyak)
    return qbar, q_loss.detach(), v_loss.detach()


# -------------------------------------------------------------------- the recurrence of a GRU cell (docs/design.md 5.7)
def gru_sequence(gi: Tensor, keep: Tensor, h0: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    """The memories ``hs [T, R, H]`` of a :class:`torch.nn.GRUCell` played over ``T`` steps of ``R`` rows from ``h0
    [R, H]``, given each step's input products ``gi [T, R, 3H]`` (``x_t W_ih^T + b_ih``) and the cell's ``w_hh [3H,
    H]`` and ``b_hh [3H]``; a row's memory is multiplied by ``keep [T, R]`` after each step (0 where the step ended
    its episode). ``hs[t]`` is the memory after step ``t``, before that clearing."""
    outputs, h = [], h0
    for gi_t, keep_t in zip(gi.unbind(0), keep.unbind(0)):  # unbind: one backward node, not one per step
        i_r, i_z, i_n = gi_t.chunk(3, -1)
        h_r, h_z, h_n = torch.nn.functional.linear(h, w_hh, b_hh).chunk(3, -1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = n + z * (h - n)
        outputs.append(h)
        h = h * keep_t[:, None]
    return torch.stack(outputs)
