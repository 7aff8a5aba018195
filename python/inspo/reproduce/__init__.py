"""``inspo reproduce``: the known-answer tables (matrix games, Bridge, baselines, SMAX); see :mod:`.cli` for what
each suite makes.

- :mod:`.runner`: the run cache, the job runner, per-seed statistics and publishing a table (markdown, JSON, PNG);
- :mod:`.matrix`, :mod:`.bridge`, :mod:`.baselines`, :mod:`.smax`: one suite each, with its defaults (one frozen
  dataclass: :data:`MATRIX`, :data:`BRIDGE`, :data:`BASELINES`, :data:`SMAX`), its table and its plot;
- :mod:`.plots`: the grouped bar charts the tables share;
- :mod:`.cli`: ``inspo reproduce`` on the command line (:func:`add_parser`).
"""
from __future__ import annotations

from inspo.reproduce.baselines import (
                                       BASELINE_ENVS,
                                       BASELINE_METHODS,
                                       BASELINES,
                                       BaselineEnv,
                                       BaselinesSuite,
                                       reproduce_baselines,
)
from inspo.reproduce.bridge import BRIDGE, BRIDGE_DATASETS, BRIDGE_SETTINGS, BridgeSuite, reproduce_bridge
from inspo.reproduce.cli import add_parser
from inspo.reproduce.matrix import MATRIX, MATRIX_CASES, MatrixCase, MatrixSuite, reproduce_matrix
from inspo.reproduce.smax import SMAX, SMAX_MAPS, SMAX_METHODS, SMAX_SETTINGS, SmaxSuite, reproduce_smax

__all__ = ["BASELINES", "BASELINE_ENVS", "BASELINE_METHODS", "BRIDGE", "BRIDGE_DATASETS", "BRIDGE_SETTINGS", "MATRIX",
           "MATRIX_CASES", "SMAX", "SMAX_MAPS", "SMAX_METHODS", "SMAX_SETTINGS", "BaselineEnv", "BaselinesSuite",
           "BridgeSuite", "MatrixCase", "MatrixSuite", "SmaxSuite", "add_parser", "reproduce_baselines",
           "reproduce_bridge", "reproduce_matrix", "reproduce_smax"]
