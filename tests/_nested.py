"""Comparing nested results (tables, metrics, outcomes, learner states): floats of float32 runs that may differ in
the last bits (a stacked population does the members' arithmetic in other (batched) kernels than their single runs,
in another summation order), and the tensors of a state dict in a fixed order."""
from __future__ import annotations

from typing import Any

import pytest
import torch

FLOAT32_REL, FLOAT32_ABS = 1e-4, 1e-5


def approx_nested(value: Any, rel: float = FLOAT32_REL, abs: float = FLOAT32_ABS) -> Any:
    """``value`` with every float replaced by ``pytest.approx`` of it (dicts, lists and tuples walked): compare with
    ``==``; everything else must be equal."""
    if isinstance(value, dict):
        return {k: approx_nested(v, rel, abs) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(approx_nested(v, rel, abs) for v in value)
    if isinstance(value, float):
        return pytest.approx(value, rel=rel, abs=abs, nan_ok=True)
    return value


def flat_tensors(state: Any) -> list[torch.Tensor]:
    """Every tensor of a nested state (dicts in key order, lists, tuples), numbers as 0-d tensors; None and strings
    are left out."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for key in sorted(state, key=str) for t in flat_tensors(state[key])]
    if isinstance(state, (list, tuple)):
        return [t for item in state for t in flat_tensors(item)]
    return [] if state is None or isinstance(state, str) else [torch.tensor(float(state))]
