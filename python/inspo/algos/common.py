"""Small helpers shared by every learner: the kernel backend switch, Polyak averaging, policy sizes."""
from __future__ import annotations

import torch
from torch import nn

from inspo import ops, reference


def kernel_backend(name: str):
    """The fused kernels of :mod:`inspo.ops` (``"fused"``) or their pure-PyTorch twins in :mod:`inspo.reference`."""
    return ops if name == "fused" else reference


@torch.no_grad()
def polyak_(target: nn.Module, source: nn.Module, rate: float) -> None:
    """``target <- (1 - rate) target + rate source``, parameter by parameter, in place."""
    for pt, p in zip(target.parameters(), source.parameters(), strict=True):
        pt.lerp_(p, rate)


def policy_sizes(mu: nn.Module) -> tuple[int, int, int]:
    """``(n_agents, obs_dim, n_actions)`` of an :class:`~inspo.algos.networks.AgentPolicies` stack."""
    return mu.n_agents, mu.nets.in_features - (mu.n_agents if mu.shared else 0), mu.nets.out_features
