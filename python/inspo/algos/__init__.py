"""Offline MARL algorithms sharing one set of networks, data handling and evaluation.

:data:`LEARNERS` maps ``TrainConfig.algo`` to the learner class that the trainer builds after behaviour cloning
(:class:`~inspo.algos.bc.BehaviourCloning`; ``algo="bc"`` has no learner: its policy is the behaviour-cloned one).
Every learner is a :class:`~inspo.algos.learner.Learner`; that module states what the trainer calls on one.
"""
from __future__ import annotations

from inspo.algos.batch import Batch
from inspo.algos.bc import BehaviourCloning
from inspo.algos.cfcql import CFCQL
from inspo.algos.icq import ICQ
from inspo.algos.inspo import InSPO
from inspo.algos.learner import Learner
from inspo.algos.omiga import OMIGA

LEARNERS: dict[str, type[Learner]] = {"inspo": InSPO, "icq": ICQ, "omiga": OMIGA, "cfcql": CFCQL}

__all__ = ["Batch", "BehaviourCloning", "CFCQL", "ICQ", "InSPO", "LEARNERS", "Learner", "OMIGA"]
