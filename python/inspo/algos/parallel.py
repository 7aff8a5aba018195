"""Data-parallel training: this process's share of every global batch, and the collectives that keep ranks equal.

Every rank samples the same global batch from the same generator, so every rank holds all of it. Statistics over
the whole batch (a softmax over rows, a normaliser, InSPO's resampling of rows) are computed on all of it, exactly as
in one process; only the forward/backward of the trained networks is split, rank ``r`` taking the contiguous rows
``[r B / W, (r + 1) B / W)``. Each rank's loss is scaled so that the mean over ranks is the single-process loss
(a mean over its rows is that already, shards being equal), and gradients are averaged across ranks before every
optimiser step: the ranks then take the single-process step, to float rounding, and stay identical.

``Shard()`` (rank 0 of 1) is single-process training: every method is then the identity and no collective runs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Rank ``rank`` of ``world`` processes in the default ``torch.distributed`` process group; ``device`` is where
    its collectives run (the training device: the nccl backend reduces CUDA tensors only)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def of_process_group(cls, device: torch.device) -> Shard:
        """This process's place in the initialised default process group."""
        return cls(dist.get_rank(), dist.get_world_size(), device)

    def rows(self, batch_size: int) -> slice:
        """The rows of a global batch of ``batch_size`` that this rank trains on."""
        if batch_size % self.world:
            raise ValueError(f"a batch of {batch_size} rows does not split into {self.world} equal shards")
        size = batch_size // self.world
        return slice(self.rank * size, (self.rank + 1) * size)

    def total(self, terms: Tensor, dim: int | None = None) -> Tensor:
        """This rank's part of a sum over all rows of the global batch (``terms`` holds this rank's rows), scaled by
        the world size so that, like a mean over the shard, its mean over ranks is the global value."""
        return (terms.sum() if dim is None else terms.sum(dim)) * self.world

    def max(self, value: Tensor) -> Tensor:
        """The maximum of ``value`` over ranks (a batch statistic of per-rank rows)."""
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return value

    def average_gradients(self, opt: torch.optim.Optimizer) -> None:
        """Average the gradients of ``opt``'s parameters over ranks, in place: call it right before ``opt.step()``."""
        self.average_([p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None])

    def average_(self, grads: Sequence[Tensor]) -> None:
        """Average ``grads`` over ranks, in place."""
        if self.world == 1:
            return
        # One all-reduce per optimiser step: the networks are small, so latency, not bandwidth, is the cost.
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        for g, avg in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(avg.view_as(g))

    def require_finite(self, **losses: Tensor) -> None:
        """Raise FloatingPointError naming the first non-finite loss, on every rank when it is non-finite on any.

        Checked where each loss is made: one NaN would otherwise spread into every network before anything notices.
        Collective (every rank calls it at the same points): a rank that raised alone would leave the others waiting
        in their next all-reduce until the process group's timeout.
        """
        bad = [name for name, value in losses.items() if not bool(torch.isfinite(value))]
        if self.world > 1:
            flags = torch.tensor([float(name in bad) for name in losses], device=self.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            bad = [name for name, flag in zip(losses, flags.tolist()) if flag]
        if bad:
            value = float(losses[bad[0]].detach())
            raise FloatingPointError(f"non-finite {bad[0]} ({value})" if self.world == 1 else
                                     f"non-finite {bad[0]} on some rank (rank {self.rank}: {value})")

    def broadcast_(self, module: nn.Module) -> None:
        """Overwrite ``module``'s parameters and buffers with rank 0's, so that every rank starts from the same."""
        if self.world > 1:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def reduce_stats(self, stats: dict[str, Tensor]) -> dict[str, float]:
        """Per-rank training statistics as global ones: the maximum over ranks of those named ``*_max``, the mean
        over ranks of the others (means over equal shards, or :meth:`total`-scaled sums)."""
        if self.world == 1:
            return {name: float(value) for name, value in stats.items()}
        names = list(stats)
        values = torch.stack([torch.as_tensor(stats[name]).detach().to(self.device, torch.float64).reshape(())
                              for name in names])
        is_max = torch.tensor([name.endswith("_max") for name in names], device=self.device)
        high = torch.where(is_max, values, -torch.inf)
        total = torch.where(is_max, 0.0, values)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        dist.all_reduce(total)
        return {name: float(high[k] if is_max[k] else total[k] / self.world) for k, name in enumerate(names)}

    def from_rank0(self, obj: T) -> T:
        """Rank 0's ``obj`` (any picklable object, e.g. evaluation results, which only rank 0 computes)."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here (e.g. until rank 0 has written its files)."""
        if self.world > 1:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (so that every rank stops after the same step)."""
        if self.world == 1:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value)
