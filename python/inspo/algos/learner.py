"""The learner contract: what the trainer builds after behaviour cloning and calls every iteration, and the
construction that every learner (InSPO and the baselines) shares.

The trainer (:func:`inspo.training.train`) builds ``LEARNERS[cfg.algo](cfg, mu, state_dim, device, generator,
shard)`` from the behaviour-cloned policy ``mu`` (``shard``, a :class:`~inspo.algos.parallel.Shard`, is the
learner's rank in data-parallel training; default a single process), casts every ``nn.Module`` attribute to the
training dtype and broadcasts it from rank 0, and from then on uses only
  - ``update(batch)``: one iteration on a uniformly sampled :class:`~inspo.algos.batch.Batch`, returning scalar
    loss and weight statistics (this rank's, in data-parallel training: the trainer reports their mean over ranks,
    or their maximum for those named ``*_max``);
  - ``pi``: the :class:`~inspo.algos.networks.AgentPolicies` it evaluates and saves;
  - ``check_finite()``: raises FloatingPointError if a loss turned non-finite (checks deferred to save reads);
  - ``diagnostics(batch)``: at evaluation points only, scalars that describe the current policies on a batch
    (InSPO: how concentrated its teammate ratios are); it must draw nothing, so that training is the same without it;
  - ``state_dict()`` / ``load_state_dict(state)``: the networks and optimiser states, to checkpoint and resume.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor, nn

from inspo.algos.batch import Batch
from inspo.algos.common import kernel_backend, policy_sizes, polyak_
from inspo.algos.networks import AgentPolicies
from inspo.algos.parallel import Shard
from inspo.config import TrainConfig


class Learner(ABC):
    """Base of the offline learners. A subclass builds ``pi``, its critics and optimisers after calling this
    constructor, names in :attr:`STATE` the attributes a checkpoint holds, and implements :meth:`update`."""

    STATE: ClassVar[tuple[str, ...]] = ()  # attributes with a state_dict (networks, optimisers), in checkpoint order
    pi: AgentPolicies

    def __init__(self, cfg: TrainConfig, mu: AgentPolicies, state_dim: int, device: torch.device,
                 generator: torch.Generator, shard: Shard | None = None) -> None:
        self.cfg = cfg
        self.shard = shard or Shard()
        self.k = kernel_backend(cfg.backend)
        self.gen = generator  # the baselines draw nothing: their updates are deterministic given the batch
        self.n_agents, self.obs_dim, self.n_actions = policy_sizes(mu)
        self._targets: list[tuple[nn.Module, nn.Module]] = []

    @abstractmethod
    def update(self, b: Batch) -> dict[str, Tensor]:
        """One iteration on a uniformly sampled batch; returns scalar statistics."""

    def check_finite(self) -> None:
        """Raise FloatingPointError naming a loss that turned non-finite since the last call; the trainer calls it
        every ``cfg.check_every`` iterations. Learners that check their losses where they are made have nothing
        left to check here."""

    def diagnostics(self, b: Batch) -> dict[str, float]:
        """Scalars that describe the current policies on ``b``, for the evaluation points' records; drawing nothing
        and changing no state. None by default."""
        return {}

    def state_dict(self) -> dict:
        """Networks and optimiser states: everything needed to continue training exactly."""
        return {name: getattr(self, name).state_dict() for name in self.STATE}

    def load_state_dict(self, state: dict) -> None:
        for name in self.STATE:
            getattr(self, name).load_state_dict(state[name])

    def target(self, net: nn.Module) -> nn.Module:
        """A frozen copy of ``net``, to serve as its target network: :meth:`update_targets` moves it towards ``net``."""
        frozen = copy.deepcopy(net).requires_grad_(False)
        self._targets.append((frozen, net))
        return frozen

    def update_targets(self) -> None:
        """Polyak-average every target network towards its network, at rate ``cfg.polyak``."""
        for frozen, net in self._targets:
            polyak_(frozen, net, self.cfg.polyak)

    def gradient_step(self, loss: Tensor, *opts: torch.optim.Optimizer) -> None:
        """One step of every optimiser in ``opts`` on ``loss``, gradients averaged over the data-parallel ranks."""
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            self.shard.average_gradients(opt)
            opt.step()
