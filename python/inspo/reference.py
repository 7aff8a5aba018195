"""Pure-PyTorch twins of the fused kernels in :mod:`inspo.ops` (SPEC section 5).

These are the definitions the kernels are tested against, forward and backward, and the ``backend="torch"`` path of
the trainer. They favour clarity over speed; each validates its input the same way the kernel does, so both paths
fail on the same bad input with the same kind of message.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["advantage_weights", "masked_softmax_stats"]


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
    """Teammate importance ratio and exponentiated in-sample advantage (SPEC 5.1).

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
    """Log-probability of ``actions`` and entropy of the softmax of ``logits`` restricted to ``avail`` (SPEC 5.2).

    Unavailable logits never influence the result (they may hold any value, even inf or NaN); gradients with respect
    to them are 0.
    """
    check_softmax_inputs(logits, avail, actions)
    x = logits.masked_fill(~avail, float("-inf"))
    logp_all = torch.log_softmax(x, dim=-1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    # Zero the -inf entries before the product: 0 * -inf would put NaN into the backward pass.
    entropy = -(logp_all.exp() * logp_all.masked_fill(~avail, 0.0)).sum(-1)
    return logp, entropy
