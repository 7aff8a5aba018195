"""Import of PyMARL episode buffers (the public AlberDICE data) into the project's dataset format.

A buffer directory holds `[episodes, episode_limit + 1, ...]` arrays (`obs`, `state`, `avail_actions`,
`actions`, `reward`, `terminated`, `filled`) and a `meta.json`. Slot t holds the observation before step t and
the action and reward of step t; the slot after the last step holds only the final observation (its action is
filler). `filled` marks valid slots, including that final one.

The recorded `terminated` is also set when the step limit ends an episode (PyMARL convention), so it cannot
tell a finished task from a time-out. By default every episode is therefore replayed through the environment,
which both proves that the data and the environment agree (observations, state, available actions, rewards,
episode end) and supplies the true `terminated` / `truncated` flags. That needs a deterministic environment that
is installed here.

`trusted=True` (`inspo datasets import --format pymarl --trusted`) replays nothing, for buffers of stochastic
environments or of ones not installed here: an episode whose last filled step has `terminated` set is a
termination, one without it (which must then run to the step limit) a truncation; a buffer that flags its
time-outs as terminated (as the AlberDICE data do) thus imports them as terminations. What is checked instead is
what a vault import checks (`inspo.data.trusted`): shapes and dtypes, 0/1 flags and masks, a legal action for every
agent in every filled slot, episode boundaries, and the content checks of `Dataset.validate`; the manifest's
`behaviour` records `trusted: true` and the SHA-256 of the buffer's files. The environment is described from the
data where it cannot be built here.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from inspo.data.format import Dataset, DatasetError
from inspo.data.trusted import binary, describe_env, integer_actions, require_legal_action, source_digest
from inspo.envs import EnvInfo, MultiAgentEnv, RecordedEnv, make
from inspo.provenance import portable_path

__all__ = ["import_pymarl"]

_FILES = ("obs", "state", "avail_actions", "actions", "reward", "terminated", "filled")
_CHECKSUMS = "SHA256SUMS"
_TRUSTED_HINT = ("if the environment is stochastic (or not installed here), import the buffer without replaying it: "
                 "inspo datasets import --format pymarl --trusted (import_pymarl(..., trusted=True))")


def import_pymarl(
    src_dir: str | os.PathLike[str], env: str | MultiAgentEnv, *, verify_checksums: bool = True,
    trusted: bool = False,
) -> Dataset:
    """Convert the PyMARL buffer in `src_dir`, recorded on `env`, into a `Dataset`.

    `env` is an environment or a name for `make`; a name gets the buffer's own step limit (its time dimension
    minus one). With `verify_checksums`, a `SHA256SUMS` file in `src_dir` or its parent must list every file
    read here with the right digest. `trusted`: take the episode ends from the buffer instead of replaying it
    (see the module docstring); a name that cannot be built here is then described by the data.
    """
    src = Path(src_dir)
    if verify_checksums:
        _verify_checksums(src)
    meta = _read_meta(src)
    raw = {name: _load(src, name) for name in _FILES}
    n_episodes = int(meta["episodes_in_buffer"])
    if not 0 < n_episodes <= raw["filled"].shape[0]:
        raise DatasetError(
            f"{src / 'meta.json'}: episodes_in_buffer={n_episodes}, but the buffer holds "
            f"{raw['filled'].shape[0]} episodes"
        )
    raw = {name: array[:n_episodes] for name, array in raw.items()}
    step_limit = raw["filled"].shape[1] - 1
    if trusted:
        described, origin = _describe(src, raw, env, step_limit)
    else:
        if isinstance(env, str):
            try:
                env = make(env, episode_limit=step_limit)
            except ImportError as exc:
                raise type(exc)(f"{exc}; {_TRUSTED_HINT}") from exc
        _check_shapes(src, raw, env.info)
        described = env
    if described.info.episode_limit != step_limit:
        raise DatasetError(
            f"buffer {src} was recorded with a step limit of {step_limit} (time dimension "
            f"{step_limit + 1}) but the environment has episode_limit {described.info.episode_limit}"
        )
    raw = _checked(src, raw)
    episodes = []
    for e in range(n_episodes):
        steps, ended = _episode_steps(src, e, raw, step_limit)
        if trusted:
            episode = _episode(raw, e, steps)
            episode["terminated"][-1], episode["truncated"][-1] = ended, not ended
        else:
            episode = _replay_episode(src, e, steps, raw, env)
        episodes.append(episode)
    arrays = {name: np.concatenate([ep[name] for ep in episodes]) for name in episodes[0]}
    if not trusted:
        behaviour: dict[str, Any] = {"kind": "unknown",
                                     "description": f"policy that filled the PyMARL buffer '{src.name}'"}
        source = f"imported from PyMARL buffer {portable_path(src)}"
    else:
        digest = source_digest(src)
        behaviour = {"kind": "pymarl-import", "trusted": True, "buffer": portable_path(src), "sha256": digest,
                     "env_from": origin, "episode_ends": "'terminated' at an episode's last step: terminated; "
                                                         "else truncated (at the step limit)",
                     "description": f"policy that filled the PyMARL buffer '{src.name}'"}
        source = f"imported from PyMARL buffer {portable_path(src)} (trusted, sha256 {digest})"
    return Dataset.create(arrays, described, behaviour=behaviour, seed=None, source=source)


def _describe(src: Path, raw: Mapping[str, np.ndarray], env: str | MultiAgentEnv,
              step_limit: int) -> tuple[MultiAgentEnv | RecordedEnv, str]:
    """The environment of a trusted import, and where its description came from: `env` itself when it is one,
    else `describe_env` (built here, or described by the buffer's shapes)."""
    for name, ndim in (("obs", 4), ("state", 3), ("avail_actions", 4)):
        if raw[name].ndim != ndim:
            raise DatasetError(f"{src / (name + '.npy')} has shape {raw[name].shape}, expected {ndim} dimensions "
                               f"(episodes, slots, ...) like a PyMARL buffer")
    _, _, n_agents, obs_dim = raw["obs"].shape
    shapes = EnvInfo(env if isinstance(env, str) else env.info.name, n_agents, obs_dim, raw["state"].shape[2],
                     raw["avail_actions"].shape[3], step_limit)
    _check_shapes(src, raw, shapes)
    if not isinstance(env, str):
        _check_shapes(src, raw, env.info)
        return env, "environment"
    return describe_env(env, shapes, "PyMARL buffer", episode_limit=step_limit)


def _checked(src: Path, raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The buffer's arrays with flags and masks as booleans, actions as int64 (`inspo.data.trusted`'s checks)."""
    field = lambda name: f"{src / (name + '.npy')}"  # noqa: E731
    checked = dict(raw)
    for name in ("filled", "terminated", "avail_actions"):
        checked[name] = binary(field(name), raw[name])
    for name in ("obs", "state", "reward"):
        if raw[name].dtype.kind not in "biuf":
            raise DatasetError(f"{field(name)} has dtype {raw[name].dtype}, expected numbers")
    checked["actions"] = integer_actions(field("actions"), raw["actions"])
    filled = checked["filled"][:, :, 0]
    # Slots after an episode's end hold no observation: only filled ones need a legal action.
    require_legal_action(field("avail_actions"), checked["avail_actions"] | ~filled[:, :, None, None],
                         "episode, slot, agent")
    return checked


def _episode_steps(src: Path, e: int, raw: Mapping[str, np.ndarray], step_limit: int) -> tuple[int, bool]:
    """The number of steps of episode `e`, and whether the buffer sets `terminated` at its last one (refusing
    `filled` that is not a prefix, `terminated` before the last step, or an unterminated end before the limit)."""
    filled = raw["filled"][e, :, 0]
    n_slots = int(filled.sum())
    if n_slots < 2 or not filled[:n_slots].all():
        raise DatasetError(
            f"{src} episode {e}: 'filled' must mark a prefix of at least 2 slots, got {filled.astype(int).tolist()}"
        )
    steps = n_slots - 1
    recorded_end = raw["terminated"][e, :steps, 0]
    if recorded_end[:-1].any():
        t = int(np.argmax(recorded_end[:-1]))
        raise DatasetError(f"{src} episode {e}: 'terminated' is set at step {t}, before its last step {steps - 1}")
    if not recorded_end[-1] and steps < step_limit:
        raise DatasetError(
            f"{src} episode {e} ends after {steps} steps, before the step limit {step_limit}, without 'terminated'"
        )
    return steps, bool(recorded_end[-1])


def _episode(raw: Mapping[str, np.ndarray], e: int, steps: int) -> dict[str, np.ndarray]:
    """Episode `e`'s transitions as the buffer holds them, its end flags all unset."""
    obs, state, avail = (raw[name][e, :steps + 1] for name in ("obs", "state", "avail_actions"))
    start = np.zeros(steps, dtype=bool)
    start[0] = True
    return {
        "obs": obs[:-1], "state": state[:-1], "avail": avail[:-1],
        "actions": raw["actions"][e, :steps, :, 0], "reward": raw["reward"][e, :steps, 0],
        "terminated": np.zeros(steps, dtype=bool), "truncated": np.zeros(steps, dtype=bool),
        "next_obs": obs[1:], "next_state": state[1:], "next_avail": avail[1:], "episode_start": start,
    }


def _replay_episode(src: Path, e: int, steps: int, raw: Mapping[str, np.ndarray],
                    env: MultiAgentEnv) -> dict[str, np.ndarray]:
    """Episode `e` replayed through `env`, which must give back what the buffer holds and supplies the end flags."""
    episode = _episode(raw, e, steps)
    obs, state, avail = (raw[name][e, :steps + 1] for name in ("obs", "state", "avail_actions"))
    replay_obs, replay_state, replay_avail = (np.empty_like(a) for a in (obs, state, avail))
    replay_reward = np.empty(steps, dtype=np.float32)
    terminated, truncated = episode["terminated"], episode["truncated"]
    replay_obs[0], replay_state[0], replay_avail[0] = env.reset()
    for t in range(steps):
        if t > 0 and (terminated[t - 1] or truncated[t - 1]):
            raise DatasetError(
                f"{src} episode {e}: {env.info.name} ends the episode after step {t - 1}, "
                f"but the buffer continues to step {steps - 1}; {_TRUSTED_HINT}"
            )
        try:
            result = env.step(episode["actions"][t])
        except ValueError as exc:
            raise DatasetError(f"{src} episode {e} step {t}: {exc}; {_TRUSTED_HINT}") from exc
        replay_obs[t + 1], replay_state[t + 1], replay_avail[t + 1] = result[:3]
        replay_reward[t], terminated[t], truncated[t] = result[3:6]
    if not (terminated[-1] or truncated[-1]):
        raise DatasetError(
            f"{src} episode {e}: the buffer ends the episode after step {steps - 1}, but {env.info.name} does not; "
            f"{_TRUSTED_HINT}"
        )
    for name, recorded, replayed in (
        ("obs", obs, replay_obs),
        ("state", state, replay_state),
        ("avail_actions", avail, replay_avail),
        ("reward", episode["reward"], replay_reward),
    ):
        differs = (recorded != replayed).reshape(len(recorded), -1).any(axis=1)
        if differs.any():
            t = int(np.argmax(differs))
            raise DatasetError(
                f"{src} episode {e}: recorded {name} at slot {t} is {recorded[t].tolist()}, "
                f"but {env.info.name} gives {replayed[t].tolist()}; {_TRUSTED_HINT}"
            )
    return episode


def _verify_checksums(src: Path) -> None:
    """Check the arrays against the first `SHA256SUMS` found in `src` or its parent (`sha256sum` format)."""
    for sums in (src / _CHECKSUMS, src.parent / _CHECKSUMS):
        if not sums.is_file():
            continue
        listed = {}
        for line in sums.read_text().splitlines():
            if line.strip():
                digest, _, name = line.strip().partition(" ")
                listed[(sums.parent / name.strip().lstrip("*")).resolve()] = digest.lower()
        for name in _FILES:
            file = (src / f"{name}.npy").resolve()
            if file not in listed:
                raise DatasetError(f"{file} is not listed in {sums}")
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            if digest != listed[file]:
                raise DatasetError(f"checksum mismatch for {file}: sha256 {digest}, {sums} says {listed[file]}")
        return


def _read_meta(src: Path) -> dict:
    file = src / "meta.json"
    if not file.is_file():
        raise DatasetError(f"{file} is missing: {src} is not a PyMARL buffer directory")
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{file} is not valid JSON: {exc}") from exc
    if "episodes_in_buffer" not in meta:
        raise DatasetError(f"{file} lacks 'episodes_in_buffer'")
    return meta


def _load(src: Path, name: str) -> np.ndarray:
    file = src / f"{name}.npy"
    if not file.is_file():
        raise DatasetError(f"PyMARL buffer file {file} is missing")
    return np.load(file, allow_pickle=False)


def _check_shapes(src: Path, raw: Mapping[str, np.ndarray], info: EnvInfo) -> None:
    e, t1 = raw["filled"].shape[:2]
    expected = {
        "obs": (e, t1, info.n_agents, info.obs_dim),
        "state": (e, t1, info.state_dim),
        "avail_actions": (e, t1, info.n_agents, info.n_actions),
        "actions": (e, t1, info.n_agents, 1),
        "reward": (e, t1, 1),
        "terminated": (e, t1, 1),
        "filled": (e, t1, 1),
    }
    for name, shape in expected.items():
        if raw[name].shape != shape:
            raise DatasetError(
                f"{src / (name + '.npy')} has shape {raw[name].shape}, expected {shape} for {info.name}"
            )
