"""Behaviour clones kept for reuse: runs that would clone the data's policy the same way start from the clone.

Every run starts by cloning the data's policy mu (``bc_steps`` steps, :class:`~inspo.algos.bc.BehaviourCloning`),
and that phase depends on the data and on a few settings only, not on the method that follows. A study that trains
MA-ICQ, OMIGA, CFCQL, InSPO and BC on the same data with the same seed therefore makes the same clone five times
(a sixth of a run's CPU time where the cloning is long). Given a folder (``clones=`` of :func:`inspo.train` and
:func:`inspo.population_training.train_members`), a run saves its clone there when the cloning ends, and a later
run with the same key loads it instead of cloning: the clone's networks and optimiser, the generator and global RNG
states after the last cloning step, and the rows it logged. The run then goes on exactly as if it had cloned
itself (tested bit for bit); only its wall and CPU time are shorter.

The key (:func:`clone_key`) is every config field but those that act after the cloning (:data:`AFTER_CLONING`),
the data's content (manifest SHA-256), the inspo and torch versions, and how the clone was computed: alone or as a
member of a population of given seeds (stacked members compute the same clone to rounding, not bit for bit, so the
two are kept apart). A clone folder is a cache: deleting it costs time only.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from inspo import checkpoint as ckpt_io
from inspo.config import TrainConfig
from inspo.provenance import package_version

__all__ = ["AFTER_CLONING", "CLONE_FORMAT", "Clones", "clone_key", "clone_state", "start_from"]

CLONE_FORMAT = 1
"""Version of a saved clone file."""

AFTER_CLONING = frozenset({
    "out", "dataset", "algo", "iters", "lr_critic", "alpha", "beta", "gamma", "polyak", "rho_max", "z_max", "order",
    "weighting", "use_rho", "local_critic_steps", "icq", "cfcql", "eval", "eval_every", "eval_episodes",
    "eval_episode_limit", "eval_greedy", "checkpoint_every", "check_every", "cuda_graph", "logger", "seeds",
    "per_member", "env_options", "normalize_state", "critic_alpha"})
"""The TrainConfig fields that the cloning does not read (the method, its hyper-parameters, the critics' state
scaling, evaluation and output): runs that differ only in these share a clone. ``seeds`` and ``per_member``
describe a population; each member's key holds its own seed and hyper-parameters."""


def clone_key(members: list[TrainConfig], dataset_sha256: str) -> dict[str, Any]:
    """What a clone must match to be reused by ``members`` (one config for a single run, the members of a
    population otherwise) on data of ``dataset_sha256``."""
    return {"format": CLONE_FORMAT, "dataset_sha256": dataset_sha256, "inspo": package_version(),
            "torch": str(torch.__version__), "population": len(members) > 1,
            "members": [{k: v for k, v in m.to_dict().items() if k not in AFTER_CLONING} for m in members]}


class Clones:
    """A folder of saved clones, one file per key (``<digest of the key>.pt``, written atomically)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    def path(self, key: dict[str, Any]) -> Path:
        """The file of the clone with ``key``."""
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.folder / f"{digest[:32]}.pt"

    def load(self, key: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The saved states of the clone with ``key`` (one per member: ``bc``, ``generator``, ``torch_rng``,
        ``bc_nll``, ``rows``), or None when there is none (or an unreadable one, which is then made again)."""
        try:
            saved = ckpt_io.load(self.path(key))
        except (ckpt_io.CheckpointError, OSError):
            return None
        return saved["members"] if isinstance(saved, dict) and saved.get("key") == key else None

    def save(self, key: dict[str, Any], members: list[dict[str, Any]]) -> None:
        """Keep the clone with ``key`` (``members`` as :meth:`load` returns them)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        ckpt_io.save({"key": key, "members": members}, self.path(key))


def clone_state(bc: Any, generator: torch.Generator, torch_rng: torch.Tensor, bc_nll: float,
                rows: list[tuple[int, float]]) -> dict[str, Any]:
    """One member's saved clone: its :class:`~inspo.algos.bc.BehaviourCloning` state, the generator and global
    RNG states after the last cloning step, its last loss and the rows it logged (``(step, bc_nll)``)."""
    return {"bc": bc.state_dict(), "generator": generator.get_state(), "torch_rng": torch_rng,
            "bc_nll": bc_nll, "rows": list(rows)}


def start_from(clone: dict[str, Any], bc: Any, generator: torch.Generator, book: Any) -> torch.Tensor:
    """Put one member's saved ``clone`` into a fresh run: its cloning state into ``bc`` and ``generator``, its last
    loss and logged rows into ``book`` (the run's :class:`~inspo.run_record.RunRecord`), which then stands at the
    end of the cloning. Returns the global RNG state the run continues with."""
    bc.load_state_dict(clone["bc"])
    generator.set_state(clone["generator"])
    book.run["bc_nll"] = clone["bc_nll"]
    for done, value in clone["rows"]:
        book.log_row(done, 0, {"bc_nll": value})
    book.run["step"] = bc.cfg.bc_steps
    return clone["torch_rng"]
