"""Resuming an interrupted ``inspo tune`` search (``--resume``): the checks and the record of finished trials.

SMAC3 does not save its random state, so a search it continues from its own run history proposes other
configurations than the uninterrupted search would have. ``inspo tune --resume`` therefore runs the search again
from the start, with the same seed, and answers every proposal that a finished trial already answered with that
trial's recorded result (:func:`finished_trials`) instead of training it again: the optimiser sees the same results
in the same order, so it makes the same proposals, and the resumed search ends where the uninterrupted one would
have (with one worker; with several, the order results come back in is not reproducible anyway).

That only holds for the same search: :func:`check_same_search` refuses a resume whose space, base config, objective,
seeds, optimiser seed or fidelity differ from the recorded ones, naming the difference. The number of trials and of
workers may change (a search of 20 trials can be resumed to 40).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inspo.config import TrainConfig

__all__ = ["SAME_SEARCH", "check_same_search", "finished_trials", "load_search", "trial_key"]

SAME_SEARCH = ("space", "base_config", "dataset_sha256", "objective", "seeds", "smac_seed", "fidelity")
"""The settings of ``tune.json`` that a resumed search must share with the one it continues (the base config names
the dataset's path; ``dataset_sha256`` its content)."""


def load_search(out: Path) -> dict[str, Any]:
    """The ``tune.json`` of the search in ``out``; FileNotFoundError when there is none to resume."""
    path = out / "tune.json"
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume in {out}: it has no tune.json; start the search without --resume")
    return json.loads(path.read_text())


def _differences(name: str, saved: Any, now: Any) -> list[str]:
    """Where ``now`` differs from ``saved``, as ``path: saved -> now`` lines (mappings compared key by key)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out: list[str] = []
        for key in list(saved) + [k for k in now if k not in saved]:
            out += _differences(f"{name}.{key}", saved.get(key, "<absent>"), now.get(key, "<absent>"))
        return out
    return [] if saved == now else [f"{name}: {saved!r} in the search, {now!r} now"]


def check_same_search(saved: dict[str, Any], now: dict[str, Any], out: Path) -> None:
    """ValueError naming every setting of :data:`SAME_SEARCH` in which ``now`` differs from ``saved``."""
    diffs: list[str] = []
    for key in SAME_SEARCH:
        if key in saved:  # a search recorded by an older inspo lacks the newer settings: those are not compared
            value = _with_defaults(saved[key]) if key == "base_config" else saved[key]
            diffs += _differences(key, value, now.get(key))
    if diffs:
        raise ValueError(f"cannot resume the search in {out}: it is not the same search; " + "; ".join(diffs)
                         + ". Give the same settings (or none: --resume reads them from tune.json), or start a new "
                           "search with --overwrite or another --out")


def _with_defaults(config: Any) -> Any:
    """A recorded base config with the fields added to :class:`TrainConfig` since it was recorded at their defaults
    (the same runs), as the search that resumes it records its own; one that is no longer valid as it was."""
    try:
        return TrainConfig.from_dict(config).to_dict()
    except (TypeError, ValueError, AttributeError):
        return config


def trial_key(params: dict[str, Any], iters: int) -> str:
    """What identifies a trial's result: its values and its iteration budget."""
    return json.dumps({"params": params, "iters": iters}, sort_keys=True)


def finished_trials(out: Path) -> dict[str, dict[str, Any]]:
    """The recorded result (``trials/NNNN/result.json``) of every finished trial in ``out``, by :func:`trial_key`.
    Read from the trial folders rather than ``tune.json``, which a resume rewrites as it replays the trials."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((out / "trials").glob("*/result.json")):
        result = json.loads(path.read_text())
        found[trial_key(result["params"], result["iters"])] = result
    return found
