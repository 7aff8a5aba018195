"""Exact tabular InSPO for one-step N-agent matrix games (docs/design.md section 3, our reconstruction [R]).

The update is the in-sample form of docs/design.md section 1 evaluated exactly instead of by sampling: for agent ``i``,
every
dataset joint action ``a`` is reweighted by ``D(a) * min(rho_i(a), RHO_MAX)`` with the teammate ratio
``rho_i(a) = prod_{j != i} pi_j(a_j) / mu_j(a_j)``; this resampled distribution gives agent ``i`` an own-action
marginal ``p_i(b)`` and a conditional mean payoff ``Qtilde_i(b)``, and the new policy is

    pi_i(b)  ∝  p_i(b) ** (alpha / tau) * exp(Qtilde_i(b) / tau),    tau = alpha + beta.

Own actions with no resampled mass get probability 0 even when ``alpha = 0``: the in-sample loss never sees them, so
there is no evidence to give them any. The reference is ``p_i``, not the behaviour marginal ``mu_i``: with ``mu_i``
the XOR game on {AA, AB, BA} ends at J = -0.29 instead of 0.98, because ``mu_i`` still counts the rows whose
teammate actions the current teammates no longer take.

Everything runs in log space, so large payoff-to-temperature ratios shrink probabilities instead of rounding them to
zero (which would silently drop dataset rows from every teammate's resampled distribution).
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import ArrayLike

from inspo.data.generate import MATRIX_PRESETS
from inspo.envs.matrix import MNE_PAYOFF, XOR_PAYOFF

__all__ = ["MNE_PAYOFF", "ORDERS", "RHO_MAX", "XOR_PAYOFF", "mne_imbalanced_probs", "solve"]

ORDERS: tuple[str, ...] = ("random", "fixed", "simultaneous")
"""Agent orders accepted by :func:`solve`."""

RHO_MAX: float = 100.0
"""Clip of the teammate ratio ``rho_i``, the trainer's default ``rho_max`` (docs/design.md section 1)."""

_INIT_NOISE = 1e-3


def mne_imbalanced_probs() -> np.ndarray:
    """The *imbalanced* M-NE dataset distribution (docs/design.md section 2) as a fresh normalised ``[3, 3]`` array.

    The dominant sub-optimal equilibrium (C,C) is what makes plain behaviour-regularised learning (``beta = 0``)
    settle there.
    """
    weights = np.array(MATRIX_PRESETS["mne-imbalanced"][1], dtype=np.float64)
    return weights / weights.sum()


def _logsumexp(x: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    # A slice that is entirely -inf (an own action with no resampled mass) must give -inf, not NaN.
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def _as_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _validate(payoff: ArrayLike, joint_action_probs: ArrayLike, alpha: float, beta: float, iters: int,
              order: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    payoff = np.asarray(payoff, dtype=np.float64)
    probs = np.asarray(joint_action_probs, dtype=np.float64)
    if payoff.ndim < 1:
        raise ValueError(f"payoff must have one axis per agent (at least 1), got a {payoff.ndim}-d array")
    if probs.shape != payoff.shape:
        raise ValueError(f"joint_action_probs must have the shape of payoff {payoff.shape}, got {probs.shape}")
    if payoff.size == 0:
        raise ValueError(f"every agent needs at least one action, got payoff shape {payoff.shape}")
    if not np.all(np.isfinite(payoff)):
        raise ValueError("payoff must be finite, got NaN or infinite entries")
    if not np.all(np.isfinite(probs)):
        raise ValueError("joint_action_probs must be finite, got NaN or infinite entries")
    if np.any(probs < 0):
        raise ValueError(f"joint_action_probs must be nonnegative, got minimum {probs.min()}")
    if not probs.sum() > 0:
        raise ValueError(f"joint_action_probs must have a positive sum, got {probs.sum()}")
    alpha = _as_real("alpha", alpha)
    beta = _as_real("beta", beta)
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta}")
    if not alpha + beta > 0:
        raise ValueError(f"alpha + beta (the temperature tau) must be > 0, got alpha={alpha}, beta={beta}")
    if isinstance(iters, bool) or not isinstance(iters, numbers.Integral):
        raise TypeError(f"iters must be an integer, got {iters!r}")
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    return payoff, probs / probs.sum(), alpha, beta


def _agent_update(i: int, log_pis: list[np.ndarray], log_d: np.ndarray, log_mus: list[np.ndarray],
                  payoff: np.ndarray, alpha: float, tau: float) -> np.ndarray:
    n = payoff.ndim
    # Off the data log_mu_j may be -inf and the ratio NaN; those rows carry no weight whatever rho says.
    with np.errstate(invalid="ignore"):
        log_rho = np.zeros_like(log_d)
        for j in range(n):
            if j != i:
                shape = [1] * n
                shape[j] = -1
                log_rho = log_rho + (log_pis[j] - log_mus[j]).reshape(shape)
        log_w = np.where(np.isfinite(log_d), log_d + np.minimum(log_rho, math.log(RHO_MAX)), -np.inf)

    others = tuple(j for j in range(n) if j != i)
    log_slice = _logsumexp(log_w, axis=others)  # unnormalised log p_i(b)
    log_p = log_slice - _logsumexp(log_slice)
    has_mass = np.isfinite(log_p)
    own_shape = [1] * n
    own_shape[i] = -1
    safe_slice = np.where(has_mass, log_slice, 0.0).reshape(own_shape)
    cond = np.exp(log_w - safe_slice)  # resampled distribution of the teammates' actions given own action b
    q_tilde = np.sum(cond * payoff, axis=others)

    logits = np.full(log_p.shape, -np.inf)
    logits[has_mass] = (alpha / tau) * log_p[has_mass] + q_tilde[has_mass] / tau
    return logits - _logsumexp(logits)


def solve(payoff: ArrayLike, joint_action_probs: ArrayLike, alpha: float, beta: float, iters: int = 200,
          order: str = "random", seed: int = 0) -> tuple[list[np.ndarray], float]:
    """Run exact tabular InSPO on a one-step N-agent matrix game (docs/design.md section 3).

    The behaviour policy ``mu`` is the product of the per-agent marginals of the data. Policies start at ``mu``
    plus uniform noise in ``[0, 1e-3)`` per action (renormalised), which breaks the symmetric ties that otherwise
    keep, e.g., both XOR agents identical forever. Each iteration updates every agent once (see the module
    docstring for the per-agent rule) in the given order.

    Args:
        payoff: team payoff, an array of shape ``[A_1, ..., A_N]`` (one axis per agent).
        joint_action_probs: the dataset's distribution over joint actions, same shape, nonnegative; it is
            normalised here, so counts are fine.
        alpha: strength of the reverse KL to the behaviour policy, ``>= 0``.
        beta: policy-entropy weight, ``>= 0``; ``beta > 0`` flattens the behaviour reference. ``alpha + beta``
            must be positive.
        iters: number of iterations, ``>= 0``.
        order: ``"random"`` (a fresh uniformly random permutation of the agents per iteration), ``"fixed"``
            (agents ``0..N-1``) or ``"simultaneous"`` (every agent uses the teammate policies from before the
            iteration; the ablation that loses InSPO's coordination).
        seed: seeds the initial noise and the random orders; equal seeds give identical results.

    Returns:
        ``(policies, J)``: one 1-D probability array per agent, and the expected team payoff of their product.
    """
    payoff, probs, alpha, beta = _validate(payoff, joint_action_probs, alpha, beta, iters, order)
    n = payoff.ndim
    tau = alpha + beta
    rng = np.random.default_rng(seed)

    with np.errstate(divide="ignore"):
        log_d = np.log(probs)
        mus = [probs.sum(axis=tuple(j for j in range(n) if j != i)) for i in range(n)]
        log_mus = [np.log(mu) for mu in mus]
        log_pis = []
        for mu in mus:
            start = mu + rng.uniform(0.0, _INIT_NOISE, size=mu.shape)
            log_pis.append(np.log(start / start.sum()))

    for _ in range(iters):
        if order == "simultaneous":
            log_pis = [_agent_update(i, log_pis, log_d, log_mus, payoff, alpha, tau) for i in range(n)]
        else:
            agents = rng.permutation(n) if order == "random" else range(n)
            for i in agents:
                log_pis[i] = _agent_update(int(i), log_pis, log_d, log_mus, payoff, alpha, tau)

    policies = [np.exp(lp) for lp in log_pis]
    joint = policies[0]
    for pi in policies[1:]:
        joint = np.multiply.outer(joint, pi)
    return policies, float(np.sum(joint * payoff))
