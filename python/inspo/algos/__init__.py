"""Offline MARL algorithms sharing one set of networks, data handling and evaluation.

:data:`LEARNERS` maps ``TrainConfig.algo`` to the learner class that the trainer builds after behaviour cloning
(``algo="bc"`` has none: its policy is the behaviour-cloned one). Every learner has the same interface: the
constructor ``(cfg, mu, state_dim, device, generator, shard=None)``, ``.pi`` (an :class:`AgentPolicies`),
``update(batch) -> dict of loss tensors``, ``state_dict()`` and ``load_state_dict()``. ``shard`` (a
:class:`~inspo.algos.parallel.Shard`, default a single process) is the learner's rank in data-parallel training;
there, the statistics that ``update`` returns are this rank's, and the trainer reports their mean over ranks, or
their maximum for those named ``*_max``.
"""
from __future__ import annotations

from inspo.algos.cfcql import CFCQL
from inspo.algos.icq import ICQ
from inspo.algos.inspo import InSPO
from inspo.algos.omiga import OMIGA

LEARNERS = {"inspo": InSPO, "icq": ICQ, "omiga": OMIGA, "cfcql": CFCQL}

__all__ = ["CFCQL", "ICQ", "InSPO", "LEARNERS", "OMIGA"]
