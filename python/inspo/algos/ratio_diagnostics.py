"""How concentrated the teammate ratio is: the diagnostic of the resampled batch that InSPO logs at evaluation points.

Agent i's local critic is fitted on rows resampled in proportion to ``rho_i = prod_{j != i} pi_j / mu_j`` (clipped at
``rho_max``). When the teammates' current policies move away from the behaviour policy on data from several policies,
the product concentrates the resampled rows on a few transitions. Its effective sample size

    ESS_i = (sum_b rho_i[b])^2 / (B sum_b rho_i[b]^2)   in [1/B, 1]

says how many of the batch's B rows the resampling effectively keeps, as a fraction: 1 when the ratios are uniform
(as without rho), 1/B when one row holds all the weight.
"""
from __future__ import annotations

import math

from torch import Tensor

from inspo import reference

__all__ = ["effective_sample_size", "teammate_ratio_diagnostics"]


def effective_sample_size(weights: Tensor) -> Tensor:
    """``(sum w)^2 / (B sum w^2)`` over the last axis of non-negative ``weights`` ``[..., B]`` (not all zero):
    the effective sample size of sampling in proportion to ``w``, as a fraction of B."""
    if weights.dim() < 1 or weights.shape[-1] < 1:
        raise ValueError(f"weights must be [..., B] with B >= 1, got shape {tuple(weights.shape)}")
    w = weights.double()
    return w.sum(-1).pow(2) / (w.shape[-1] * w.pow(2).sum(-1))


def teammate_ratio_diagnostics(logp_pi: Tensor, logp_mu: Tensor, rho_max: float) -> dict[str, float]:
    """The teammate ratios of every agent on one batch (log-probs of its actions under the current policies
    ``logp_pi`` and the behaviour policy ``logp_mu``, ``[N, B]`` each; ratios clipped at ``rho_max``, as the
    resampling uses them): ``rho_ess_min`` and ``rho_ess_mean``, the :func:`effective_sample_size` of the clipped
    ratios, min and mean over agents, and ``rho_clipped``, the fraction of (agent, row) ratios above ``rho_max``.

    Computed in float64 by :func:`inspo.reference.advantage_weights` (the kernels' formula), so that ratios far
    below 1 do not underflow to zero; draws nothing."""
    logp_pi, logp_mu = logp_pi.double(), logp_mu.double()
    zero = logp_pi.new_zeros(logp_pi.shape[1])  # q and v: only the ratio is read
    raw, _ = reference.advantage_weights(zero, zero, logp_pi, logp_mu, None, -1, 1.0, 0.0, math.inf)
    ess = effective_sample_size(raw.clamp(max=rho_max))
    return {"rho_ess_min": float(ess.min()), "rho_ess_mean": float(ess.mean()),
            "rho_clipped": float((raw > rho_max).double().mean())}

