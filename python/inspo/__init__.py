"""inspo: In-Sample Sequential Policy Optimization for offline cooperative multi-agent RL."""
from __future__ import annotations

from inspo._extension import built_with_cuda, torch_version_built_against

__version__ = "0.1.0"
__all__ = ["built_with_cuda", "torch_version_built_against", "__version__"]
