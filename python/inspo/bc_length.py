"""How long to clone the behaviour policy: behaviour cloning on most of a dataset's episodes until the mean negative
log-likelihood (NLL) of the held-out rest stops improving.

The rule, in full:

- **Split.** Episodes are numbered in storage order from 0; episode ``k`` is held out when
  ``k % heldout_every == heldout_every - 1`` (with the default 10: episodes 9, 19, 29, ..., a tenth of the data,
  spread evenly over datasets stored source after source such as ``medium-replay`` and ``mixed``). Whole episodes go
  to one side, never single transitions, so consecutive, correlated steps do not leak into the held-out part.
- **Training.** Behaviour cloning exactly as in :func:`inspo.train` (the same network, initialisation from ``seed``,
  Adam at ``lr``, minibatches of ``batch_size`` rows drawn uniformly with replacement), but from the training
  episodes only.
- **Evaluation.** Every ``every`` steps (and before the first), the held-out NLL: ``-log mu(a_i | o_i)`` under the
  available-action mask, averaged over every held-out row and agent (the quantity the cloning step minimises).
- **Length.** The step of the best held-out NLL, where a value counts as better only if it is lower than the best
  so far by more than ``rel_tol`` times its magnitude (``rel_tol`` 0: the argmin of the evaluated curve, earliest
  on ties). Training stops once ``patience`` evaluations in a row bring no such improvement, or at ``max_steps``
  (then the length may be capped: :attr:`BCLength.stopped` says which).

The length is measured once per dataset (one seed) and then used for every run of that dataset, which clone on all of
its episodes: every member of a population (:mod:`inspo.population_training`) thus clones for the same number of
steps. ``inspo datasets bc-length`` prints it; ``inspo reproduce smax --bc-steps auto`` uses it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspo import jsonio
from inspo.algos.bc import BehaviourCloning
from inspo.config import TrainConfig
from inspo.data import Dataset, dataset_digest, load_dataset
from inspo.provenance import package_info

__all__ = ["BCLength", "BCLengthSettings", "cached_bc_length", "heldout_bc_length", "heldout_split"]

_EVAL_ROWS = 8192
"""Held-out rows per forward pass of the evaluation (bounds its memory, not its result)."""


@dataclass(frozen=True)
class BCLengthSettings:
    """How :func:`heldout_bc_length` trains and stops (see the module docstring for the rule)."""

    hidden: int = 64
    lr: float = 3e-4
    batch_size: int = 256
    max_steps: int = 50000  # 2s3z at 5,000 episodes needs up to 37,000 (results/smax_study.md)
    every: int = 500
    patience: int = 4
    rel_tol: float = 1e-3
    heldout_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden", "batch_size", "max_steps", "every", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"bc-length {name} must be a positive integer, got {value!r}")
        if self.every > self.max_steps:
            raise ValueError(f"bc-length every ({self.every}) must not exceed max_steps ({self.max_steps}): the "
                             f"held-out NLL would never be evaluated after training started")
        if isinstance(self.heldout_every, bool) or not isinstance(self.heldout_every, (int, np.integer)) \
                or self.heldout_every < 2:
            raise ValueError(f"bc-length heldout_every must be an integer >= 2 (every k-th episode held out), got "
                             f"{self.heldout_every!r}")
        if not (isinstance(self.lr, (int, float)) and np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"bc-length lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.rel_tol, (int, float)) and 0 <= self.rel_tol < 1):
            raise ValueError(f"bc-length rel_tol must be in [0, 1), got {self.rel_tol!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"bc-length seed must be an integer, got {self.seed!r}")


@dataclass
class BCLength:
    """What :func:`heldout_bc_length` found."""

    steps: int
    """The behaviour-cloning length: the step of the best held-out NLL (0 if no step improved on the start)."""
    heldout_nll: float
    """The held-out NLL at ``steps``."""
    stopped: str
    """``patience`` (no improvement for ``patience`` evaluations) or ``max_steps`` (the cap was reached first)."""
    last_step: int
    """The last step trained."""
    curve: list[tuple[int, float]]
    """``(step, held-out NLL)`` of every evaluation, step 0 (the untrained policy) first."""
    train_episodes: int
    heldout_episodes: int
    heldout_rows: int
    dataset_sha256: str | None
    """The dataset's manifest SHA-256 (None for a :class:`Dataset` built in memory and not saved yet)."""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record (the curve as ``[step, nll]`` pairs)."""
        record = asdict(self)
        record["curve"] = [[s, v] for s, v in self.curve]
        return record


def heldout_split(episode_start: np.ndarray, heldout_every: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``(train, heldout)`` of a dataset with these episode starts: the rows of episode ``k`` (storage order)
    are held out iff ``k % heldout_every == heldout_every - 1``. Raises ValueError if either side would be empty."""
    starts = np.asarray(episode_start, dtype=bool)
    if starts.size == 0 or not starts[0]:
        raise ValueError("episode_start must be non-empty and start with True (the first row starts an episode)")
    if heldout_every < 2:
        raise ValueError(f"heldout_every must be >= 2, got {heldout_every}")
    episode = np.cumsum(starts) - 1
    held = episode % heldout_every == heldout_every - 1
    n_episodes = int(episode[-1]) + 1
    if n_episodes < heldout_every:
        raise ValueError(f"the dataset has {n_episodes} episodes; holding out every {heldout_every}th needs at least "
                         f"{heldout_every} (lower heldout_every or use more episodes)")
    return np.flatnonzero(~held), np.flatnonzero(held)


def heldout_bc_length(dataset: str | os.PathLike[str] | Dataset, settings: BCLengthSettings | None = None,
                      **overrides: Any) -> BCLength:
    """Clone the behaviour policy on the training episodes of ``dataset`` (a path or a loaded :class:`Dataset`)
    until its held-out NLL stops improving (module docstring); return the length, its NLL and the curve.

    ``settings`` (default :class:`BCLengthSettings`) with any field replaced by ``overrides``, e.g.
    ``heldout_bc_length(path, hidden=64, max_steps=20000, every=500)``.
    """
    base = asdict(settings or BCLengthSettings())
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ValueError(f"unknown bc-length setting {', '.join(unknown)}; expected some of {', '.join(base)}")
    s = BCLengthSettings(**{**base, **overrides})
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, recorded_env=False)
    train_rows, held_rows = heldout_split(ds.episode_start, s.heldout_every)
    n_episodes = ds.n_episodes

    def rows(idx: np.ndarray) -> dict[str, torch.Tensor]:
        return {"obs": torch.as_tensor(np.asarray(ds.obs[idx])), "avail": torch.as_tensor(np.asarray(ds.avail[idx])),
                "actions": torch.as_tensor(np.asarray(ds.actions[idx]))}

    train, held = rows(train_rows), rows(held_rows)
    torch.manual_seed(s.seed)  # the initial network, as inspo.train draws it
    gen = torch.Generator().manual_seed(s.seed)
    cfg = TrainConfig(dataset="in-memory" if isinstance(dataset, Dataset) else str(dataset), algo="bc",
                      hidden=s.hidden, lr_policy=s.lr, batch_size=s.batch_size, bc_steps=s.max_steps, seed=s.seed)
    bc = BehaviourCloning(cfg, ds.n_agents, int(ds.obs.shape[-1]), ds.n_actions, torch.device("cpu"))

    def heldout_nll() -> float:
        total = 0.0
        with torch.no_grad():
            for lo in range(0, held["obs"].shape[0], _EVAL_ROWS):
                part = slice(lo, lo + _EVAL_ROWS)
                logits = bc.policy.all_logits(held["obs"][part])
                logp, _ = bc.k.masked_softmax_stats(logits, held["avail"][part], held["actions"][part])
                total += float(logp.double().sum())
        return -total / (held["obs"].shape[0] * ds.n_agents)

    curve = [(0, heldout_nll())]
    best_step, best = 0, curve[0][1]
    waited, step, stopped = 0, 0, "max_steps"
    n_train = train["obs"].shape[0]
    while step < s.max_steps:
        for _ in range(min(s.every, s.max_steps - step)):
            idx = torch.randint(n_train, (s.batch_size,), generator=gen)
            loss = bc.update(train["obs"][idx], train["avail"][idx], train["actions"][idx])
            step += 1
        if not torch.isfinite(loss):
            raise FloatingPointError(f"behaviour cloning diverged (training NLL {float(loss)}) at step {step}; "
                                     f"lower lr (now {s.lr})")
        value = heldout_nll()
        curve.append((step, value))
        if value < best - s.rel_tol * abs(best):
            best_step, best, waited = step, value, 0
        else:
            waited += 1
            if waited >= s.patience:
                stopped = "patience"
                break
    return BCLength(steps=best_step, heldout_nll=best, stopped=stopped, last_step=step, curve=curve,
                    train_episodes=n_episodes - n_episodes // s.heldout_every,
                    heldout_episodes=n_episodes // s.heldout_every,
                    heldout_rows=int(held_rows.size), dataset_sha256=ds.manifest.get("manifest_sha256"),
                    settings=asdict(s))


def record_path(folder: str | os.PathLike[str], key: dict[str, Any]) -> Path:
    """Where :func:`cached_bc_length` keeps the measurement of ``key`` (the dataset's digest, the settings, the inspo
    version) in ``folder``."""
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(folder) / f"{key['dataset_sha256'][:12]}-{name}.json"


def cached_bc_length(dataset: str | os.PathLike[str], folder: str | os.PathLike[str],
                     settings: BCLengthSettings, measure: bool = True) -> BCLength | None:
    """:func:`heldout_bc_length` of ``dataset``, read from ``folder`` if it was measured there before with the same
    dataset content (manifest SHA-256), settings and inspo version, else measured and saved there (``measure=False``:
    None instead)."""
    digest = dataset_digest(dataset)
    key = {"dataset_sha256": digest, "settings": asdict(settings), "version": package_info()["version"]}
    path = record_path(folder, key)
    try:
        saved = json.loads(path.read_text())
        if saved["key"] == key:
            record = saved["bc_length"]
            record["curve"] = [tuple(p) for p in record["curve"]]
            return BCLength(**record)
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        pass  # not measured yet, or a file written by other code: measure again
    if not measure:
        return None
    found = heldout_bc_length(dataset, settings)
    jsonio.write(path, {"key": key, "bc_length": found.to_dict()})
    return found
