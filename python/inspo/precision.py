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

bfloat16 pays only where the CPU multiplies it natively (AVX512-BF16 or AMX on x86). Without those instructions
oneDNN converts the operands on every call: on an AVX-512 Xeon without them the products of online MAPPO's update ran
at 0.22x their float32 speed (``bench/results/avx512_without_bf16/mappo_cpu.md``), so a run that asks for bf16 there
gets a warning (:func:`warn_if_emulated`).
"""
from __future__ import annotations

import contextlib
import functools
import platform
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from inspo.config import PRECISIONS

__all__ = ["autocast", "matmul_dtype", "matmuls", "native_bf16", "warn_if_emulated"]

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


def native_bf16(device: str | torch.device = "cpu") -> bool | None:
    """Whether ``device`` multiplies bfloat16 natively: on an x86 CPU, whether it has AVX512-BF16 or AMX; None where
    this is not known (other devices and architectures, or a torch without the probes)."""
    if torch.device(device).type != "cpu" or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is None for probe in probes):
        return None
    return any(probe() for probe in probes)


def warn_if_emulated(precision: str, device: str | torch.device) -> None:
    """A RuntimeWarning when ``precision`` is "bf16" on a CPU known to lack bfloat16 instructions
    (:func:`native_bf16` False), where it is slower than "fp32"."""
    if matmul_dtype(precision) is not None and native_bf16(device) is False:
        warnings.warn("precision 'bf16' on a CPU without bfloat16 instructions (AVX512-BF16 or AMX): its products "
                      "are converted on every call (online MAPPO's ran at 0.22x their float32 speed); use precision "
                      "'fp32' here", RuntimeWarning, stacklevel=3)
