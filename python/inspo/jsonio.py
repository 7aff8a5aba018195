"""Strict JSON out: every JSON text the package prints or writes is standard JSON, which has no NaN or Infinity.

Python's :mod:`json` writes ``NaN`` and ``Infinity`` by default, which other readers refuse. Here a non-finite
float becomes ``null`` (a value that does not exist as a number: e.g. the behaviour-cloning loss of a run without
behaviour cloning), and anything else that JSON cannot hold is an error, never written.
"""
from __future__ import annotations

import json
import math
from typing import Any

from inspo.checkpoint import write_text

__all__ = ["dumps", "finite", "write"]


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (in nested dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(value) for value in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(obj)``, refusing (ValueError) what standard JSON cannot hold."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def write(path: Any, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` to ``path`` as strict JSON, atomically."""
    write_text(path, dumps(obj, indent=indent) + "\n")
