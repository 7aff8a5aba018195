"""inspo: In-Sample Sequential Policy Optimization (InSPO) for offline cooperative multi-agent RL.

Quick start::

    import inspo
    result = inspo.train(inspo.TrainConfig(dataset="runs/data/bridge_mix"))
    inspo.evaluate(result.checkpoint, episodes=100)
"""
from __future__ import annotations

from inspo._extension import built_with_cuda, torch_version_built_against
from inspo.config import TrainConfig
from inspo.training import TrainResult, evaluate, train

__version__ = "0.1.0"
__all__ = ["TrainConfig", "TrainResult", "built_with_cuda", "evaluate", "torch_version_built_against", "train",
           "__version__"]
