"""Adam as the learners use it: PyTorch's fused kernel, for whole networks and for one member of a stack at a time."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from inspo.algos.networks import StackedMLP

BETAS = (0.9, 0.999)
EPS = 1e-8
"""torch.optim.Adam's defaults, used by every optimiser here."""


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam with its fused kernel: one call per step instead of a dozen small ops per parameter tensor, which is most of
    an optimiser step for networks this small (its rounding differs from the per-tensor loop's in the last bit)."""
    return torch.optim.Adam(params, lr=lr, betas=BETAS, eps=EPS, fused=True)


def load_optimizer(opt: torch.optim.Optimizer, state: dict) -> None:
    """``opt.load_state_dict(state)`` keeping ``opt``'s own implementation switches (``fused``, ``foreach``): a saved
    state carries those of the run that wrote it, and one written before :func:`adam` would turn the fused kernel
    off."""
    switches = [{key: group[key] for key in ("fused", "foreach")} for group in opt.param_groups]
    opt.load_state_dict(state)
    for group, own in zip(opt.param_groups, switches, strict=True):
        group.update(own)


class MemberAdam:
    """Adam for the members of a :class:`StackedMLP`, one member per step: each member has its own moments and step
    count, stacked like the parameters, and a step changes nothing but its member, exactly as if every member had its
    own :func:`adam` (the same fused kernel, on the member's slices). The state layout of
    ``torch.ops.inspo.sequential_update``."""

    def __init__(self, net: StackedMLP, lr: float) -> None:
        self.lr = lr
        self.params = net.stacked()
        self._state: tuple[list[Tensor], list[Tensor], Tensor] | None = None

    def state(self) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """``(exp_avg, exp_avg_sq, steps)``: the moments, stacked like the parameters, and the step count of every
        member ``[n]`` (float32, as torch.optim.Adam keeps a fused step count). Made on first use, like
        torch.optim.Adam's state, so that they follow the networks' moves to another dtype or device until then."""
        if self._state is None:
            zeros = [[torch.zeros_like(p, memory_format=torch.contiguous_format) for p in self.params]
                     for _ in range(2)]
            steps = torch.zeros(self.params[0].shape[0], dtype=torch.float32, device=self.params[0].device)
            self._state = (zeros[0], zeros[1], steps)
        return self._state

    @torch.no_grad()
    def step(self, member: int, grads: Sequence[Tensor]) -> None:
        """One Adam step of ``member`` with ``grads`` (one per parameter, shaped like its slice)."""
        exp_avg, exp_avg_sq, steps = self.state()
        step = steps[member]
        step.add_(1)
        torch._fused_adam_([p[member] for p in self.params], list(grads), [m[member] for m in exp_avg],
                           [v[member] for v in exp_avg_sq], [], [step] * len(self.params), lr=self.lr,
                           beta1=BETAS[0], beta2=BETAS[1], weight_decay=0.0, eps=EPS, amsgrad=False, maximize=False)

    def state_dict(self) -> dict:
        return dict(zip(("exp_avg", "exp_avg_sq", "steps"), self.state()))

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for mine, saved in zip(self.state(), (state["exp_avg"], state["exp_avg_sq"], state["steps"]), strict=True):
            if isinstance(mine, Tensor):
                mine.copy_(saved)
            else:
                for m, s in zip(mine, saved, strict=True):
                    m.copy_(s)
