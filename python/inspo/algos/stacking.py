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

import math
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
            # In place: a product's fresh output (its backward reads its inputs only), one pass less over it.
            x = torch.relu_(x)
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
                         "differ in seed and in alpha, beta, gamma, polyak, lr_policy, lr_critic, rho_max, z_max, "
                         "critic_alpha only")
    return values[0]


class StackedNets:
    """Networks of one shape stacked on a leading axis of ``R`` rows, with their Adam moments and a float32 step count
    per row, ``[R]``.

    Parameters and moments live in one buffer ``[3, R, total]`` (parameters, ``exp_avg``, ``exp_avg_sq``; a row's
    tensors flattened one after another): gathering some rows, stepping them and writing them back are one op each
    instead of one per tensor. :attr:`params` are views ``[R, *shape]`` into it.
    """

    def __init__(self, shapes: Sequence[torch.Size], buffer: Tensor, steps: Tensor, uniform: bool) -> None:
        self.shapes, self.buffer, self.steps = list(shapes), buffer, steps
        # Every row has taken as many steps as every other: true of a population's stacks, whose update steps every
        # row alike; the Adam step of :meth:`adam_step` is then one kernel call on the whole buffer.
        self.uniform = uniform
        self.params = self._views(0)
        self.exp_avg, self.exp_avg_sq = self._views(1), self._views(2)

    def _views(self, part: int) -> list[Tensor]:
        rows, out, offset = self.buffer.shape[1], [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            out.append(self.buffer[part, :, offset:offset + size].view(rows, *shape))
            offset += size
        return out

    @classmethod
    def of(cls, opts: Sequence[FusedAdam]) -> StackedNets:
        """The members' optimised parameters and Adam states, stacked (copies): a stacked optimiser's ``[n, ...]``
        tensors become ``n`` rows per member, a plain one's tensors one row."""
        first = opts[0]
        shapes = [p.shape[1:] if first.stacked else p.shape for p in first.params]
        per = first.params[0].shape[0] if first.stacked else 1
        total = sum(math.prod(shape) for shape in shapes)
        like = first.params[0]
        stack = cls(shapes, like.new_zeros(3, per * len(opts), total),
                    torch.zeros(per * len(opts), dtype=torch.float32, device=like.device), True)
        stack.copy_from(opts)
        return stack

    def gather(self, rows: Tensor) -> StackedNets:
        """Copies of ``rows`` (an int64 index tensor, read on the device only)."""
        return StackedNets(self.shapes, self.buffer.index_select(1, rows), self.steps.index_select(0, rows),
                           self.uniform)

    def put(self, rows: Tensor, part: StackedNets) -> None:
        """Write ``part`` (a :meth:`gather` of the same ``rows``) back into the stack."""
        self.buffer.index_copy_(1, rows, part.buffer)
        self.steps.index_copy_(0, rows, part.steps)

    @torch.no_grad()
    def adam_step(self, grads: Sequence[Tensor], groups: list[tuple[float, list[int]]]) -> None:
        """One Adam step of every row, row ``p`` at the learning rate of its group in ``groups`` (from
        :func:`lr_groups`), with its own moments and step count: each row moves as its member's own FusedAdam
        would move it."""
        rows = self.buffer.shape[1]
        # One flat gradient per row, laid out as the buffer (a batched matmul's weight gradient comes back
        # transposed: the kernel walks every tensor as contiguous memory).
        grad = torch.cat([g.reshape(rows, -1) for g in grads], dim=1)
        # As torch.optim.Adam(fused=True): the step counts first, then the kernel, which reads them.
        self.steps.add_(1)
        settings = {"beta1": BETAS[0], "beta2": BETAS[1], "weight_decay": 0.0, "eps": EPS, "amsgrad": False,
                    "maximize": False}
        param, exp_avg, exp_avg_sq = self.buffer.unbind(0)
        if self.uniform and len(groups) == 1:
            torch._fused_adam_([param], [grad], [exp_avg], [exp_avg_sq], [], [self.steps[0]], lr=groups[0][0],
                               **settings)
            return
        by_row = [t.unbind(0) for t in (param, grad, exp_avg, exp_avg_sq)]
        steps = self.steps.unbind(0)
        for lr, members in groups:
            torch._fused_adam_(*[[t[p] for p in members] for t in by_row], [], [steps[p] for p in members], lr=lr,
                               **settings)

    def _pairs(self, opts: Sequence[FusedAdam]):
        """Per member: its rows' tensors (views) and its optimiser's, in the same order."""
        per = self.steps.shape[0] // len(opts)
        for p, opt in enumerate(opts):
            exp_avg, exp_avg_sq, steps = opt.state()
            mine = [t[p * per:(p + 1) * per] for t in (*self.params, *self.exp_avg, *self.exp_avg_sq, self.steps)]
            yield mine, [*opt.params, *exp_avg, *exp_avg_sq, steps]

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
        self.uniform = bool((self.steps == self.steps[0]).all())  # one read, when the stack is (re)loaded


def stack_params(members: Sequence[Sequence[Tensor]]) -> list[Tensor]:
    """Copies of the members' parameter lists (one network each), stacked: ``[P, ...]`` per tensor."""
    return [torch.stack([t.detach() for t in column]) for column in zip(*members)]


@torch.no_grad()
def unstack_params(stack: Sequence[Tensor], members: Sequence[Sequence[Tensor]], back: bool = False) -> None:
    """Copy row ``p`` of ``stack`` into ``members[p]`` (or, ``back=True``, the other way)."""
    for p, params in enumerate(members):
        for s, t in zip(stack, params, strict=True):
            (s[p].copy_(t) if back else t.copy_(s[p]))
