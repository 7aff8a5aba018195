"""The stacked layout of a population (P independent runs trained in one process): networks of one shape from every
member stacked on a leading axis, with their Adam states, so that one batched op serves all members.

A member's per-agent networks (its :class:`~inspo.algos.networks.StackedMLP` of N agents) become rows
``p * N .. p * N + N - 1`` of a ``[P * N, ...]`` stack; a member's single network (a critic, or the whole policy
stack that behaviour cloning steps as one) becomes row ``p`` of a ``[P, ...]`` stack. :class:`StackedNets` holds
one such stack with the Adam moments and step counts of the members' :class:`~inspo.algos.optim.FusedAdam`, steps
any ``P`` rows of it (one per member, at the member's own learning rate) exactly as the members' own optimisers
would, and copies between the stack and the members (checkpoints keep the single-run format).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from inspo.algos.optim import BETAS, EPS, FusedAdam


def batched_mlp(x: Tensor, params: Sequence[Tensor]) -> Tensor:
    """The MLPs ``params = [weight0 [M, out, in], bias0 [M, out], ...]`` (ReLU between layers), member ``m`` on
    ``x[m]``: ``x [M, rows, in] -> [M, rows, out]``, one batched matmul per layer."""
    layers = len(params) // 2
    for l in range(layers):
        x = torch.baddbmm(params[2 * l + 1].unsqueeze(1), x, params[2 * l].transpose(1, 2))
        if l < layers - 1:
            x = torch.relu(x)
    return x


def leaves(params: Sequence[Tensor]) -> list[Tensor]:
    """Detached copies of ``params`` (sharing their memory) that autograd differentiates with respect to."""
    return [p.detach().requires_grad_() for p in params]


def lr_groups(lrs: Sequence[float]) -> list[tuple[float, list[int]]]:
    """The members (row indices) of each distinct learning rate, in order of first appearance: one fused Adam call
    per distinct rate."""
    groups: dict[float, list[int]] = {}
    for p, lr in enumerate(lrs):
        groups.setdefault(lr, []).append(p)
    return list(groups.items())


def agreed(what: str, values: Sequence[Any]) -> Any:
    """The value every member has for ``what``; ValueError naming it and each member's value otherwise."""
    if any(v != values[0] for v in values[1:]):
        listed = ", ".join(f"member {p}: {v!r}" for p, v in enumerate(values))
        raise ValueError(f"cannot stack the members: {what} differs ({listed}); a population stacks members that "
                         "differ in seed and in alpha, beta, gamma, polyak, lr_policy, lr_critic, rho_max, z_max only")
    return values[0]


class StackedNets:
    """Networks stacked on a leading axis of rows (``params``: ``[weight0, bias0, ...]``, each ``[R, ...]``), with
    Adam moments shaped like them and a float32 step count per row, ``[R]``."""

    def __init__(self, params: list[Tensor], exp_avg: list[Tensor], exp_avg_sq: list[Tensor], steps: Tensor) -> None:
        self.params, self.exp_avg, self.exp_avg_sq, self.steps = params, exp_avg, exp_avg_sq, steps

    @classmethod
    def of(cls, opts: Sequence[FusedAdam]) -> StackedNets:
        """The members' optimised parameters and Adam states, stacked (copies): a stacked optimiser's ``[n, ...]``
        tensors become ``n`` rows per member, a plain one's tensors one row."""
        states = [opt.state() for opt in opts]

        def rows(t: Tensor, opt: FusedAdam) -> Tensor:
            return t.detach() if opt.stacked else t.detach().unsqueeze(0)

        def join(tensors: list[list[Tensor]]) -> list[Tensor]:
            return [torch.cat([rows(t, opt) for t, opt in zip(column, opts)]) for column in zip(*tensors)]

        return cls(join([opt.params for opt in opts]), join([s[0] for s in states]), join([s[1] for s in states]),
                   torch.cat([rows(s[2], opt) for s, opt in zip(states, opts)]))

    def tensors(self) -> list[Tensor]:
        """Parameters, moments and steps, in the order of :meth:`FusedAdam.state_dict`'s parameters then state."""
        return [*self.params, *self.exp_avg, *self.exp_avg_sq, self.steps]

    def gather(self, rows: Tensor) -> StackedNets:
        """Copies of ``rows`` (an int64 index tensor, read on the device only)."""
        pick = [t.index_select(0, rows) for t in self.tensors()]
        n = len(self.params)
        return StackedNets(pick[:n], pick[n:2 * n], pick[2 * n:3 * n], pick[-1])

    def put(self, rows: Tensor, part: StackedNets) -> None:
        """Write ``part`` (a :meth:`gather` of the same ``rows``) back into the stack."""
        for stack, t in zip(self.tensors(), part.tensors(), strict=True):
            stack.index_copy_(0, rows, t)

    @torch.no_grad()
    def adam_step(self, grads: Sequence[Tensor], groups: list[tuple[float, list[int]]]) -> None:
        """One Adam step of every row, row ``p`` at the learning rate of its group in ``groups`` (from
        :func:`lr_groups`), with its own moments and step count: each row moves as its member's own FusedAdam
        would move it."""
        # As torch.optim.Adam(fused=True): the step counts first, then the kernel, which reads them. The kernel
        # walks every tensor as contiguous memory, and a batched matmul's weight gradient comes back transposed.
        self.steps.add_(1)
        by_row = [t.unbind(0) for t in (*self.params, *[g.contiguous() for g in grads], *self.exp_avg,
                                        *self.exp_avg_sq)]
        n = len(self.params)
        steps = self.steps.unbind(0)
        for lr, members in groups:
            lists = [[t[p] for t in by_row[j * n:(j + 1) * n] for p in members] for j in range(4)]
            torch._fused_adam_(*lists, [], [steps[p] for _ in range(n) for p in members], lr=lr, beta1=BETAS[0],
                               beta2=BETAS[1], weight_decay=0.0, eps=EPS, amsgrad=False, maximize=False)

    @torch.no_grad()
    def copy_to(self, opts: Sequence[FusedAdam]) -> None:
        """Write member ``p``'s rows into ``opts[p]``'s parameters and state (the inverse of :meth:`of`)."""
        for mine, theirs in self._pairs(opts):
            for t, block in zip(theirs, mine, strict=True):
                t.copy_(block.view_as(t))

    @torch.no_grad()
    def copy_from(self, opts: Sequence[FusedAdam]) -> None:
        """Read ``opts[p]``'s parameters and state into member ``p``'s rows (after they were loaded)."""
        for mine, theirs in self._pairs(opts):
            for t, block in zip(theirs, mine, strict=True):
                block.copy_(t.view_as(block))

    def _pairs(self, opts: Sequence[FusedAdam]):
        per = self.steps.shape[0] // len(opts)
        for p, opt in enumerate(opts):
            exp_avg, exp_avg_sq, steps = opt.state()
            yield [t[p * per:(p + 1) * per] for t in self.tensors()], [*opt.params, *exp_avg, *exp_avg_sq, steps]


def stack_params(members: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """Copies of the members' parameter lists (one network each), stacked: ``[P, ...]`` per tensor."""
    return [torch.stack([t.detach() for t in column]) for column in zip(*members)]


@torch.no_grad()
def unstack_params(stack: Sequence[Tensor], members: Sequence[Sequence[Tensor]], back: bool = False) -> None:
    """Copy row ``p`` of ``stack`` into ``members[p]`` (or, ``back=True``, the other way)."""
    for p, params in enumerate(members):
        for s, t in zip(stack, params, strict=True):
            (s[p].copy_(t) if back else t.copy_(s[p]))
