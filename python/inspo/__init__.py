"""inspo: In-Sample Sequential Policy Optimization (InSPO) for offline cooperative multi-agent RL.

Quick start::

    import inspo
    result = inspo.train(inspo.TrainConfig(dataset="runs/data/bridge_mix"))
    inspo.evaluate(result.checkpoint, episodes=100)
    actions = result.policy.act(obs, avail)        # or inspo.load_policy(result.checkpoint).act(...)
"""
from __future__ import annotations

from inspo._extension import built_with_cuda, torch_version_built_against
from inspo.config import TrainConfig
from inspo.policy import Policy, load_policy
from inspo.provenance import package_version
from inspo.training import TrainResult, evaluate, train

__version__ = package_version()
__all__ = ["Policy", "TrainConfig", "TrainResult", "built_with_cuda", "evaluate", "load_policy",
           "torch_version_built_against", "train", "__version__"]
