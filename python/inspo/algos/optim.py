"""Adam as the learners use it: for InSPO's, PyTorch's fused kernel, on whole networks or one member of a stack at a
time; for the baselines', ``torch.optim.Adam`` with its ``foreach`` implementation (:func:`adam`)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

BETAS = (0.9, 0.999)
EPS = 1e-8
"""torch.optim.Adam's defaults, used by every optimiser here."""


def adam(params: Iterable[Tensor], lr: float) -> torch.optim.Adam:
    """``torch.optim.Adam`` as the baselines (MA-ICQ, OMIGA, CFCQL) step it: with its ``foreach`` implementation,
    which on the CPU (where the default is one tensor at a time) gives the same parameters and moments bit for bit
    with less per-tensor overhead."""
    return torch.optim.Adam(params, lr=lr, foreach=True)


def _fused_step(params: list[Tensor], grads: Sequence[Tensor], exp_avg: list[Tensor], exp_avg_sq: list[Tensor],
                step: Tensor, lr: float) -> None:
    # As torch.optim.Adam(fused=True) does it: the step count first, then the kernel, which reads it.
    step.add_(1)
    # The kernel walks every tensor as contiguous memory, and autograd may hand back a transposed gradient (that of a
    # batched matmul's weight, for one): torch.optim never sees one, .grad being laid out like its parameter.
    grads = [g.contiguous() for g in grads]
    torch._fused_adam_(params, grads, exp_avg, exp_avg_sq, [], [step] * len(params), lr=lr, beta1=BETAS[0],
                       beta2=BETAS[1], weight_decay=0.0, eps=EPS, amsgrad=False, maximize=False)


class FusedAdam:
    """Adam on ``params`` with their gradients handed to :meth:`step` (e.g. from ``torch.autograd.grad``): the
    arithmetic of ``torch.optim.Adam(fused=True)`` without its per-step bookkeeping (``.grad`` fields, grouping by
    device, state look-ups), which costs more than the step itself on small networks.

    With ``stacked=True`` the parameters are stacks of ``n`` members (e.g. a :class:`StackedMLP`'s) that are stepped
    one member at a time: every member has its own moments and step count, and a step changes nothing but its member,
    exactly as if each had its own optimiser. This is the state layout of ``torch.ops.inspo.sequential_update``.
    """

    def __init__(self, params: Sequence[Tensor], lr: float, stacked: bool = False) -> None:
        self.lr, self.stacked = lr, stacked
        self.params = list(params)
        self._state: tuple[list[Tensor], list[Tensor], Tensor] | None = None

    def state(self) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """``(exp_avg, exp_avg_sq, steps)``: the moments, shaped like the parameters, and the step count (float32,
        as torch.optim.Adam keeps a fused one), ``[n]`` when stacked. Made on first use, like torch.optim.Adam's
        state, so that they follow the networks' moves to another dtype or device until then."""
        if self._state is None:
            zeros = [[torch.zeros_like(p, memory_format=torch.contiguous_format) for p in self.params]
                     for _ in range(2)]
            first = self.params[0]
            steps = torch.zeros(first.shape[0] if self.stacked else (), dtype=torch.float32, device=first.device)
            self._state = (zeros[0], zeros[1], steps)
        return self._state

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor], member: int | None = None) -> None:
        """One step with ``grads`` (one per parameter, shaped like it, or like a member's slice when stacked)."""
        exp_avg, exp_avg_sq, steps = self.state()
        if not self.stacked:
            _fused_step(self.params, grads, exp_avg, exp_avg_sq, steps, self.lr)
            return
        if member is None:
            raise ValueError("a stacked FusedAdam steps one member at a time: pass member=")
        _fused_step([p[member] for p in self.params], grads, [m[member] for m in exp_avg],
                    [v[member] for v in exp_avg_sq], steps[member], self.lr)

    def state_dict(self) -> dict:
        return dict(zip(("exp_avg", "exp_avg_sq", "steps"), self.state()))

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        exp_avg, exp_avg_sq, steps = self.state()
        for mine, saved in zip(exp_avg + exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"], strict=True):
            mine.copy_(saved)
        steps.copy_(state["steps"])
