"""The arithmetic of one InSPO update and the machine's ceiling for it: the roofline columns of ``inspo bench train``.

:func:`inspo_update_gemms` lists the matrix products of one iteration (``InSPO.update`` on the one-call paths:
``critic_update`` then the log-prob stack and ``sequential_update``), from the layer shapes; :func:`flops` counts
them, and :func:`ceiling` times the same products, shape by shape, in a given dtype: the GFLOP/s an update would reach
if it did nothing but its matrix products at the speed this machine does them alone.

The count (multiply-adds count 2; bias adds, activations, losses, softmax statistics and Adam are not counted,
being O(rows x width), not O(rows x width^2)). Every MLP is ``in -> H -> H -> out`` (two hidden ReLU layers); a
forward pass on ``R`` rows is 3 products ``x W^T`` (``2 R (in H + H H + H out)`` FLOPs), its backward the 3 weight
gradients ``g^T x`` (as many FLOPs) and the input gradients ``g W`` of the two upper layers only (``2 R (H H + H
out)``): the first layer's input needs no gradient. With ``B`` rows, ``N`` agents, observation ``O``, state ``S``,
``A`` actions and ``L`` local-critic steps:

- critic step: ``V(s')`` and the target critic ``Qbar(s, a)`` forward (the joint critic's input is ``S + N A``:
  the state and every agent's one-hot action), ``Q`` and ``V`` forward and backward;
- the log-prob stack: every policy forward on all rows;
- per agent: ``L`` local-critic forward and backward passes (``S -> A``), the local critic forward on all rows
  (its soft value), the policy forward and backward (``O -> A``), and (sequential orders, all agents but the last)
  the refresh of its log-prob row, one more policy forward.

At SMAX size (N 5, O 80, S 130, A 12, H 256, B 256, L 1) that is 2.40 GFLOP per update. Counting every backward as
twice its forward (a common rule of thumb, which includes the first layers' input gradients that are never
computed) would give 2.58 (the figure of issue 18).
"""
from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass

import torch

__all__ = ["Gemm", "ceiling", "flops", "gemm_seconds", "inspo_update_gemms", "mlp_gemms"]


@dataclass(frozen=True)
class Gemm:
    """``count`` matrix products of one kind on ``rows`` rows of a layer ``fan_in -> fan_out``: ``"forward"``
    (``x [rows, in] W^T``), ``"weight_grad"`` (``g^T x``, ``[out, rows] x [rows, in]``) or ``"input_grad"``
    (``g W``, ``[rows, out] x [out, in]``)."""

    kind: str
    rows: int
    fan_in: int
    fan_out: int
    count: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.rows * self.fan_in * self.fan_out * self.count


def mlp_gemms(rows: int, in_dim: int, hidden: int, out_dim: int, backward: bool = False, count: int = 1,
              layers: int = 2) -> list[Gemm]:
    """The products of ``count`` forward passes (and, with ``backward``, backward passes) of an MLP ``in_dim ->
    hidden (x layers) -> out_dim`` on ``rows`` rows."""
    widths = [in_dim] + [hidden] * layers + [out_dim]
    out = []
    for l, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        out.append(Gemm("forward", rows, fan_in, fan_out, count))
        if backward:
            out.append(Gemm("weight_grad", rows, fan_in, fan_out, count))
            if l > 0:
                out.append(Gemm("input_grad", rows, fan_in, fan_out, count))
    return out


def inspo_update_gemms(*, n_agents: int, obs_dim: int, state_dim: int, n_actions: int, hidden: int, batch_size: int,
                       local_critic_steps: int = 1, sequential: bool = True) -> list[Gemm]:
    """The matrix products of one InSPO iteration (see the module's docstring), merged by kind and shape."""
    n, rows = n_agents, batch_size
    joint_in = state_dim + n * n_actions
    parts = [
        *mlp_gemms(rows, state_dim, hidden, 1),  # V(s'), the TD target
        *mlp_gemms(rows, joint_in, hidden, 1),  # Qbar(s, a), the target critic
        *mlp_gemms(rows, joint_in, hidden, 1, backward=True),  # Q
        *mlp_gemms(rows, state_dim, hidden, 1, backward=True),  # V
        *mlp_gemms(rows, obs_dim, hidden, n_actions, count=n),  # the log-prob stack
        *mlp_gemms(rows, state_dim, hidden, n_actions, backward=True, count=n * local_critic_steps),
        *mlp_gemms(rows, state_dim, hidden, n_actions, count=n),  # local soft values
        *mlp_gemms(rows, obs_dim, hidden, n_actions, backward=True, count=n),  # the policies' steps
    ]
    if sequential and n > 1:
        parts += mlp_gemms(rows, obs_dim, hidden, n_actions, count=n - 1)  # log-prob refreshes
    merged: Counter = Counter()
    for g in parts:
        merged[g.kind, g.rows, g.fan_in, g.fan_out] += g.count
    return [Gemm(*key, count) for key, count in merged.items()]


def flops(gemms: list[Gemm]) -> int:
    """Floating-point operations of ``gemms`` (a multiply-add counts 2)."""
    return sum(g.flops for g in gemms)


def _product(g: Gemm, dtype: torch.dtype, device: torch.device):
    """A closure doing one product of ``g``'s kind and shape, as the update ops call it."""
    gen = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=gen).to(device, dtype)  # noqa: E731
    w = rand(g.fan_out, g.fan_in)
    if g.kind == "forward":
        x, b = rand(g.rows, g.fan_in), rand(g.fan_out)
        return lambda: torch.nn.functional.linear(x, w, b)
    grad = rand(g.rows, g.fan_out)
    if g.kind == "weight_grad":
        x = rand(g.rows, g.fan_in)
        return lambda: grad.t().mm(x)
    return lambda: grad.mm(w)


def gemm_seconds(gemms: list[Gemm], dtype: torch.dtype, device: torch.device, seconds: float = 0.02,
                 repeats: int = 3) -> float:
    """Seconds that the products of ``gemms`` take in ``dtype`` on ``device``: each distinct product timed alone
    (median over ``repeats`` rounds of at least ``seconds`` each, after warm-up), times its count."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    total = 0.0
    for g in gemms:
        run = _product(g, dtype, device)
        for _ in range(3):
            run()
        sync()
        t = time.perf_counter()
        run()
        sync()
        per_round = max(1, round(seconds / max(time.perf_counter() - t, 1e-7)))
        times = []
        for _ in range(repeats):
            sync()
            t = time.perf_counter()
            for _ in range(per_round):
                run()
            sync()
            times.append((time.perf_counter() - t) / per_round)
        total += statistics.median(times) * g.count
    return total


def ceiling(gemms: list[Gemm], dtype: torch.dtype, device: torch.device, seconds: float = 0.02,
            repeats: int = 3) -> float:
    """GFLOP/s of the products of ``gemms`` alone in ``dtype`` (:func:`gemm_seconds`): the most an update made of
    them can reach on this machine."""
    return flops(gemms) / gemm_seconds(gemms, dtype, device, seconds, repeats) / 1e9
