"""The checks of a trusted import: one that replays nothing through an environment (OG-MARL vaults,
`inspo.data.vault`; PyMARL buffers with `trusted=True`, `inspo.data.pymarl`).

Without a replay nothing proves that the data came from the environment, so what can be checked from the data alone
is: flags and masks that hold only 0 and 1, at least one legal action per agent and step, integer actions, shapes
that fit the environment (described from the data where it cannot be built here), and, by `Dataset.validate`
afterwards, legal chosen actions, finite values, consistent episode boundaries and episodes within the step limit.
The manifest records the digest of the source's files (`source_digest`), so that the data can be traced to them.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from inspo.data.format import DatasetError
from inspo.envs import EnvInfo, RecordedEnv, make

__all__ = ["binary", "describe_env", "integer_actions", "require_legal_action", "source_digest"]


def source_digest(folder: str | os.PathLike[str]) -> str:
    """SHA-256 over every file under `folder`: each file's relative path and SHA-256, in path order."""
    root = Path(folder)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        content = hashlib.sha256()
        with open(file, "rb") as fh:
            while chunk := fh.read(1 << 20):
                content.update(chunk)
        digest.update(f"{file.relative_to(root).as_posix()}\0{content.hexdigest()}\n".encode())
    return digest.hexdigest()


def binary(what: str, array: np.ndarray) -> np.ndarray:
    """`array` (booleans or numbers) as booleans; DatasetError naming `what` (e.g. "vault key 'terminals'") and the
    first entry that is neither 0 nor 1."""
    if array.dtype.kind not in "biuf":
        raise DatasetError(f"{what} has dtype {array.dtype}, expected booleans or numbers 0/1")
    bad = (array != 0) & (array != 1)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DatasetError(f"{what} holds {array[index]} at index {index}; expected only 0 and 1")
    return array != 0


def integer_actions(what: str, array: np.ndarray) -> np.ndarray:
    """`array` as int64 actions; DatasetError when it holds non-integers (continuous actions) or is not numeric."""
    if array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise DatasetError(f"{what} holds non-integer values: continuous actions are not supported "
                               f"(inspo's methods choose one of finitely many actions)")
    elif array.dtype.kind not in "iu":
        raise DatasetError(f"{what} has dtype {array.dtype}, expected integers")
    return array.astype(np.int64)


def require_legal_action(what: str, legal: np.ndarray, axes: str) -> None:
    """Refuse boolean masks `legal` `[..., A]` that leave some agent without a legal action, naming the index
    (whose `axes` are e.g. "stream, step, agent")."""
    none_legal = ~legal.any(-1)
    if none_legal.any():
        index = tuple(int(i) for i in np.argwhere(none_legal)[0])
        raise DatasetError(f"{what} allows no action at ({axes}) {index}")


def describe_env(env: str, shapes: EnvInfo, what: str, *, episode_limit: int | None = None,
                 recorded: Mapping[str, Any] | None = None) -> tuple[RecordedEnv, str]:
    """The description of environment `env` for a dataset's manifest, and where it came from.

    `shapes` are what the data hold (its `episode_limit`: the longest episode); `what` names the source in messages
    (e.g. "vault"); `recorded` is a dataset manifest the source carries (a vault written by `export_vault`). In order:
    that manifest when it is of `env`; else the environment itself, built with `episode_limit`; else, where it cannot
    be built here (an optional dependency such as StarCraft II is absent), the data's shapes with `episode_limit`
    (default: the longest episode). DatasetError when the data do not fit it.
    """
    if recorded is not None and recorded["env"]["id"] == env:
        info, options, origin = EnvInfo(**recorded["env"]["spec"]), recorded["env"]["options"], f"{what} metadata"
    else:
        options = {} if episode_limit is None else {"episode_limit": episode_limit}
        try:
            built = make(env, **options)
            info, options, origin = built.info, built.options, "environment"
        except ImportError:  # its optional dependency is absent: the data describe it
            info = EnvInfo(env, shapes.n_agents, shapes.obs_dim, shapes.state_dim, shapes.n_actions,
                           shapes.episode_limit if episode_limit is None else episode_limit)
            origin = "data" + (" (episode_limit: the longest episode)" if episode_limit is None else "")
    if episode_limit is not None and info.episode_limit != episode_limit:
        info = EnvInfo(**{**asdict(info), "episode_limit": episode_limit})
        options = {**options, "episode_limit": episode_limit}
    diffs = [f"{field}: {what} {getattr(shapes, field)} vs environment {getattr(info, field)}"
             for field in ("n_agents", "obs_dim", "state_dim", "n_actions")
             if getattr(shapes, field) != getattr(info, field)]
    if diffs:
        raise DatasetError(f"{what} does not fit environment '{env}' (from the {origin}): " + "; ".join(diffs))
    return RecordedEnv(info, dict(options)), origin
