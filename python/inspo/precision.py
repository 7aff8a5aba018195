"""Mixed precision of the updates (``TrainConfig.precision``): the dtype of the linear layers' matrix products.

``"fp32"`` runs them in the run's dtype. ``"bf16"`` runs them in bfloat16 and keeps everything else in float32: the
master weights and the Adam states (every gradient is cast back to float32 before the step), the losses, and the
kernels' softmax and log-sum-exp statistics. Two mechanisms give the same numerics:

* the Python networks (behaviour cloning, the baselines, InSPO's loop and compiled paths) run under
  :func:`torch.autocast`; each MLP casts its output back to its parameters' dtype
  (:mod:`inspo.algos.networks`);
* the update ops ``critic_update`` and ``sequential_update`` (fused and PyTorch twin) take ``matmul_dtype``
  explicitly and ignore autocast: their hand-written (fused) backward would otherwise meet autocast's bfloat16
  products, which the float32 Adam step refuses. Measured: CPU autocast does reach the ``at::linear`` calls inside the
  C++ ops, and the op then fails with a dtype mismatch.

Updates that run :func:`matmuls`-decorated do both. Evaluation runs in float32 either way.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from inspo.config import PRECISIONS

__all__ = ["autocast", "matmul_dtype", "matmuls"]

_F = TypeVar("_F", bound=Callable[..., Any])


def matmul_dtype(precision: str) -> torch.dtype | None:
    """The ``matmul_dtype`` argument of the update ops for ``precision``: None (the data's dtype) or bfloat16."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return torch.bfloat16 if precision == "bf16" else None


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """:func:`torch.autocast` to bfloat16 on ``device``'s type for ``precision="bf16"``; a null context for
    ``"fp32"``."""
    dtype = matmul_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def matmuls(update: _F) -> _F:
    """Decorator of an update method of an object with a ``cfg`` (a :class:`~inspo.config.TrainConfig`): runs it
    under :func:`autocast` of ``cfg.precision`` on ``cfg.device``."""

    @functools.wraps(update)
    def run(self, *args: Any, **kwargs: Any) -> Any:
        with autocast(self.cfg.precision, self.cfg.device):
            return update(self, *args, **kwargs)

    return run  # type: ignore[return-value]
