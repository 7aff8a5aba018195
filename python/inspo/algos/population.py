"""Populations: P independent runs (members) of one algorithm on one dataset, updated together in one process.

Member p is exactly the run ``inspo train`` makes with member p's own config: its own networks, optimiser states,
generator and behaviour-cloned mu. A population object drives the members' iterations; :func:`make_population` and
:func:`make_bc_population` pick the implementation (the members updated one after another by their own learners,
or, where it applies, their networks stacked so that one batched op serves every member).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from inspo.algos.batch import Batch
from inspo.algos.bc import BehaviourCloning
from inspo.algos.inspo import InSPO
from inspo.algos.learner import Learner
from inspo.algos.stacked import StackedBC, StackedInSPO

__all__ = ["BCPopulation", "LearnerPopulation", "LoopBC", "LoopPopulation", "make_bc_population",
           "make_population"]


class LearnerPopulation(Protocol):
    """The learners of every member, updated together."""

    learners: list[Learner]  # member p's ordinary learner (the single-run class)

    def update(self, batches: Sequence[Batch]) -> list[dict[str, Tensor]]:
        """One iteration of every member, member p on ``batches[p]``; member p's statistics."""

    def sync(self) -> None:
        """Write the population's current state into ``self.learners`` (so that ``learners[p].state_dict()`` and
        ``.pi`` are member p's current state). A no-op where the learners are trained in place."""

    def reload(self) -> None:
        """Read ``self.learners``' state back into the population (after ``learners[p].load_state_dict``)."""

    def check_finite(self) -> None:
        """Raise FloatingPointError naming the member (index and seed) and the loss that turned non-finite."""


class BCPopulation(Protocol):
    """The behaviour cloning of every member, updated together."""

    members: list[BehaviourCloning]

    def update(self, batches: Sequence[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        """One behaviour-cloning step of every member on its ``(obs, avail, actions)``; the ``[P]`` losses."""

    def sync(self) -> None:
        """Write the population's current state into ``self.members``."""

    def reload(self) -> None:
        """Read ``self.members``' state back into the population."""


class LoopPopulation:
    """Every member's own learner, called one after another: any algorithm, and the reference that the stacked
    populations are tested against."""

    def __init__(self, learners: Sequence[Learner]) -> None:
        self.learners = list(learners)

    def update(self, batches: Sequence[Batch]) -> list[dict[str, Tensor]]:
        _check_count(len(batches), len(self.learners), "batches")
        return [learner.update(batch) for learner, batch in zip(self.learners, batches)]

    def sync(self) -> None:
        """Nothing to do: the learners are trained in place."""

    def reload(self) -> None:
        """Nothing to do: the learners are trained in place."""

    def check_finite(self) -> None:
        for p, learner in enumerate(self.learners):
            try:
                learner.check_finite()
            except FloatingPointError as exc:
                raise FloatingPointError(f"population member {p} (seed {learner.cfg.seed}): {exc}") from None


class LoopBC:
    """Every member's own behaviour cloning, called one after another."""

    def __init__(self, members: Sequence[BehaviourCloning]) -> None:
        self.members = list(members)

    def update(self, batches: Sequence[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        _check_count(len(batches), len(self.members), "batches")
        return torch.stack([bc.update(*batch) for bc, batch in zip(self.members, batches)])

    def sync(self) -> None:
        """Nothing to do: the members are trained in place."""

    def reload(self) -> None:
        """Nothing to do: the members are trained in place."""


def make_population(learners: Sequence[Learner]) -> LearnerPopulation:
    """The population of ``learners`` (freshly built or just loaded, one per member): stacked where the members
    can be, else :class:`LoopPopulation`."""
    if all(type(learner) is InSPO for learner in learners):
        try:
            return StackedInSPO(learners)
        except ValueError:  # members that differ in shape or variant, a shared policy: one after another
            pass
    return LoopPopulation(learners)


def make_bc_population(members: Sequence[BehaviourCloning]) -> BCPopulation:
    """The population of the members' behaviour cloning: stacked where the members can be, else :class:`LoopBC`."""
    try:
        return StackedBC(members)
    except ValueError:  # members that differ in shape, a shared policy: one after another
        return LoopBC(members)


def _check_count(given: int, members: int, what: str) -> None:
    if given != members:
        raise ValueError(f"expected one of {what} per member ({members}), got {given}")
