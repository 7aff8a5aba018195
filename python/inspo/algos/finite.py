"""Deferred finiteness checks of the losses: flags accumulated on the device, read by the trainer every
``TrainConfig.check_every`` iterations.

Reading a loss on the host makes the host wait for the device; accumulated instead, an iteration queues its work
without waiting (and can be captured as a CUDA graph), and one read per check finds any non-finite loss since the
last one. The flags only ever turn on: a run stops at the first check that finds one.
"""
from __future__ import annotations

import torch
from torch import Tensor


class FiniteWatch:
    """Per named loss: a device flag (non-finite since the watch began) and the first non-finite value."""

    def __init__(self) -> None:
        self._flags: dict[str, Tensor] = {}
        self._values: dict[str, Tensor] = {}

    def note(self, **losses: Tensor) -> None:
        """Fold ``losses`` (scalar tensors) into the flags; in-place, so that a captured graph updates the same
        buffers on every replay."""
        for name, loss in losses.items():
            loss = loss.detach()
            if name not in self._flags:
                self._flags[name] = torch.zeros((), dtype=torch.bool, device=loss.device)
                self._values[name] = torch.zeros((), dtype=loss.dtype, device=loss.device)
            flag, value = self._flags[name], self._values[name]
            value.copy_(torch.where(flag, value, loss))  # keeps the first non-finite value once flagged
            flag.logical_or_(~torch.isfinite(loss))

    def check(self) -> None:
        """Raise FloatingPointError naming every flagged loss and its first non-finite value (one host read)."""
        if not self._flags:
            return
        names = list(self._flags)
        flags = torch.stack([self._flags[n] for n in names]).tolist()
        if any(flags):
            values = torch.stack([self._values[n] for n in names]).tolist()
            bad = ", ".join(f"{n} ({v})" for n, v, f in zip(names, values, flags) if f)
            raise FloatingPointError(f"non-finite {bad}")


class MemberWatch:
    """:class:`FiniteWatch` for a population: per named loss a ``[P]`` flag (member p non-finite since the watch
    began) and each member's first non-finite value; ``seeds`` name the members in the error."""

    def __init__(self, seeds: list[int]) -> None:
        self.seeds = seeds
        self._flags: dict[str, Tensor] = {}
        self._values: dict[str, Tensor] = {}

    def note(self, **losses: Tensor) -> None:
        """Fold ``losses`` (``[P]`` tensors, member p's loss at p) into the flags, in place."""
        for name, loss in losses.items():
            loss = loss.detach()
            if name not in self._flags:
                self._flags[name] = torch.zeros(loss.shape, dtype=torch.bool, device=loss.device)
                self._values[name] = torch.zeros_like(loss)
            flag, value = self._flags[name], self._values[name]
            value.copy_(torch.where(flag, value, loss))
            flag.logical_or_(~torch.isfinite(loss))

    def check(self) -> None:
        """Raise FloatingPointError naming every member (index and seed) with a flagged loss, and each of its flagged
        losses with its first non-finite value (one host read)."""
        if not self._flags:
            return
        names = list(self._flags)
        flags = torch.stack([self._flags[n] for n in names], 1)  # [P, losses]
        if not bool(flags.any()):
            return
        values = torch.stack([self._values[n] for n in names], 1).tolist()
        bad = [f"population member {p} (seed {self.seeds[p]}): non-finite "
               + ", ".join(f"{n} ({v})" for n, v, f in zip(names, values[p], row) if f)
               for p, row in enumerate(flags.tolist()) if any(row)]
        raise FloatingPointError("; ".join(bad))
