"""A dataset as the trainer holds it: every column as a tensor on the training device, the data's own next joint
actions, and the behaviour log-probabilities of a cloned mu; batches of it."""
from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from inspo.algos.batch import Batch, behaviour_log_probs
from inspo.algos.networks import AgentPolicies

__all__ = ["BATCH_FIELDS", "batch", "behaviour_columns", "diagnostic_rows", "next_actions", "state_scaling",
           "to_device"]

BATCH_FIELDS = ("obs", "state", "avail", "actions", "reward", "terminated", "next_state", "logmu_all", "next_obs",
                "next_avail", "next_actions", "has_next")
"""The columns of a :class:`~inspo.algos.batch.Batch` indexed by row (``logp_mu`` is agent-major)."""


def to_device(ds, device: torch.device, dtype: torch.dtype, normalize_state: bool = False) -> dict[str, Tensor]:
    """The columns of dataset ``ds`` on ``device``, floats in ``dtype`` (copies: the arrays are read-only memory
    maps), with :func:`next_actions`; with ``normalize_state``, ``state`` and ``next_state`` standardised by
    :func:`state_scaling` of ``state``."""
    f = lambda x, dt=dtype: torch.tensor(np.asarray(x), device=device, dtype=dt)  # noqa: E731
    data = {
        "obs": f(ds.obs), "state": f(ds.state), "avail": f(ds.avail, torch.bool),
        "actions": f(ds.actions, torch.int64), "reward": f(ds.reward), "terminated": f(ds.terminated),
        "next_state": f(ds.next_state), "next_obs": f(ds.next_obs), "next_avail": f(ds.next_avail, torch.bool),
        **{name: torch.tensor(x, device=device) for name, x in next_actions(ds).items()},
    }
    if normalize_state:
        mean, std = (f(v) for v in state_scaling(ds.state))
        for name in ("state", "next_state"):
            data[name].sub_(mean).div_(std)
    return data


def state_scaling(state: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (float64) of the rows of ``state`` ``[T, state_dim]``; a feature
    that never varies gets std 1, so that it becomes 0 instead of dividing by zero."""
    values = np.asarray(state)
    mean, std = values.mean(axis=0, dtype=np.float64), values.std(axis=0, dtype=np.float64)
    return mean, np.where(std > 1e-8 * np.maximum(1.0, np.abs(mean)), std, 1.0)


def next_actions(ds) -> dict[str, np.ndarray]:
    """The data's own next joint action of every row (in-sample targets), and whether the episode goes on in the
    data (``has_next``: not terminated, not truncated); rows without one repeat their own action."""
    actions = np.asarray(ds.actions)
    has_next = ~(np.asarray(ds.terminated) | np.asarray(ds.truncated))
    has_next[-1] = False
    has_next[:-1] &= ~np.asarray(ds.episode_start)[1:]
    following = np.concatenate([actions[1:], actions[-1:]])
    return {"next_actions": np.where(has_next[:, None], following, actions), "has_next": has_next}


def behaviour_columns(mu: AgentPolicies, data: dict[str, Tensor]) -> dict[str, Tensor]:
    """``logmu_all`` (``[T, N, A]``, every action) and ``logp_mu`` (``[N, T]``, the data's actions) of ``mu`` on
    every row of ``data``."""
    logmu_all = behaviour_log_probs(mu, data["obs"], data["avail"])
    logp_mu = logmu_all.gather(-1, data["actions"][..., None]).squeeze(-1).t().contiguous()
    return {"logmu_all": logmu_all, "logp_mu": logp_mu}


def batch(data: dict[str, Tensor], idx: Tensor, behaviour: dict[str, Tensor] | None = None) -> Batch:
    """The rows ``idx`` of ``data``, with the behaviour columns from ``behaviour`` (default: ``data``'s own)."""
    columns = {**data, **(behaviour or {})}
    # index_select rather than columns[name][idx]: the same rows, copied about three times faster on the CPU, and
    # a population gathers a batch per member at every iteration.
    return Batch(**{name: columns[name].index_select(0, idx) for name in BATCH_FIELDS},
                 logp_mu=columns["logp_mu"].index_select(1, idx))


def diagnostic_rows(n_rows: int, size: int, device: torch.device) -> Tensor:
    """The rows of the batch that :meth:`~inspo.algos.learner.Learner.diagnostics` reads at every evaluation point:
    ``size`` rows evenly spaced over the ``n_rows`` of the data (every part of it, the same rows each time, and no
    draw from any generator: training is the same with and without the diagnostics)."""
    if n_rows < 1 or size < 1:
        raise ValueError(f"diagnostic_rows needs n_rows >= 1 and size >= 1, got n_rows={n_rows}, size={size}")
    return torch.linspace(0, n_rows - 1, size, device=device).round().long()
