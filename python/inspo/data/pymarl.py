"""Import of PyMARL episode buffers (the public AlberDICE data) into the project's dataset format.

A buffer directory holds `[episodes, episode_limit + 1, ...]` arrays (`obs`, `state`, `avail_actions`,
`actions`, `reward`, `terminated`, `filled`) and a `meta.json`. Slot t holds the observation before step t and
the action and reward of step t; the slot after the last step holds only the final observation (its action is
filler). `filled` marks valid slots, including that final one.

The recorded `terminated` is also set when the step limit ends an episode (PyMARL convention), so it cannot
tell a finished task from a time-out. Every episode is therefore replayed through the environment, which both
proves that the data and the environment agree (observations, state, available actions, rewards, episode end)
and supplies the true `terminated` / `truncated` flags.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from inspo.data.format import Dataset, DatasetError
from inspo.envs import MultiAgentEnv, make
from inspo.provenance import portable_path

__all__ = ["import_pymarl"]

_FILES = ("obs", "state", "avail_actions", "actions", "reward", "terminated", "filled")
_CHECKSUMS = "SHA256SUMS"


def import_pymarl(
    src_dir: str | os.PathLike[str], env: str | MultiAgentEnv, *, verify_checksums: bool = True
) -> Dataset:
    """Convert the PyMARL buffer in `src_dir`, recorded on `env`, into a `Dataset`.

    `env` is an environment or a name for `make`; a name gets the buffer's own step limit (its time dimension
    minus one). With `verify_checksums`, a `SHA256SUMS` file in `src_dir` or its parent must list every file
    read here with the right digest.
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
    if isinstance(env, str):
        env = make(env, episode_limit=step_limit)
    _check_shapes(src, raw, env)
    if env.info.episode_limit != step_limit:
        raise DatasetError(
            f"buffer {src} was recorded with a step limit of {step_limit} (time dimension "
            f"{step_limit + 1}) but the environment has episode_limit {env.info.episode_limit}"
        )
    episodes = [_replay_episode(src, e, raw, env) for e in range(n_episodes)]
    arrays = {name: np.concatenate([ep[name] for ep in episodes]) for name in episodes[0]}
    return Dataset.create(
        arrays,
        env,
        behaviour={"kind": "unknown", "description": f"policy that filled the PyMARL buffer '{src.name}'"},
        seed=None,
        source=f"imported from PyMARL buffer {portable_path(src)}",
    )


def _replay_episode(src: Path, e: int, raw: Mapping[str, np.ndarray], env: MultiAgentEnv) -> dict[str, np.ndarray]:
    filled = raw["filled"][e, :, 0].astype(bool)
    n_slots = int(filled.sum())
    if n_slots < 2 or not filled[:n_slots].all():
        raise DatasetError(
            f"{src} episode {e}: 'filled' must mark a prefix of at least 2 slots, got {filled.astype(int).tolist()}"
        )
    steps = n_slots - 1
    obs = raw["obs"][e, :n_slots]
    state = raw["state"][e, :n_slots]
    avail = raw["avail_actions"][e, :n_slots] != 0
    actions = raw["actions"][e, :steps, :, 0].astype(np.int64)
    reward = raw["reward"][e, :steps, 0]
    recorded_end = raw["terminated"][e, :steps, 0] != 0
    if recorded_end[:-1].any():
        t = int(np.argmax(recorded_end[:-1]))
        raise DatasetError(f"{src} episode {e}: 'terminated' is set at step {t}, before its last step {steps - 1}")
    if not recorded_end[-1] and steps < env.info.episode_limit:
        raise DatasetError(
            f"{src} episode {e} ends after {steps} steps, before the step limit {env.info.episode_limit}, "
            "without 'terminated'"
        )

    replay_obs, replay_state, replay_avail = (np.empty_like(a) for a in (obs, state, avail))
    replay_reward = np.empty(steps, dtype=np.float32)
    terminated = np.zeros(steps, dtype=bool)
    truncated = np.zeros(steps, dtype=bool)
    replay_obs[0], replay_state[0], replay_avail[0] = env.reset()
    for t in range(steps):
        if t > 0 and (terminated[t - 1] or truncated[t - 1]):
            raise DatasetError(
                f"{src} episode {e}: {env.info.name} ends the episode after step {t - 1}, "
                f"but the buffer continues to step {steps - 1}"
            )
        try:
            result = env.step(actions[t])
        except ValueError as exc:
            raise DatasetError(f"{src} episode {e} step {t}: {exc}") from exc
        replay_obs[t + 1], replay_state[t + 1], replay_avail[t + 1] = result[:3]
        replay_reward[t], terminated[t], truncated[t] = result[3:6]
    if not (terminated[-1] or truncated[-1]):
        raise DatasetError(
            f"{src} episode {e}: the buffer ends the episode after step {steps - 1}, but {env.info.name} does not"
        )
    for name, recorded, replayed in (
        ("obs", obs, replay_obs),
        ("state", state, replay_state),
        ("avail_actions", avail, replay_avail),
        ("reward", reward, replay_reward),
    ):
        differs = (recorded != replayed).reshape(len(recorded), -1).any(axis=1)
        if differs.any():
            t = int(np.argmax(differs))
            raise DatasetError(
                f"{src} episode {e}: recorded {name} at slot {t} is {recorded[t].tolist()}, "
                f"but {env.info.name} gives {replayed[t].tolist()}"
            )
    start = np.zeros(steps, dtype=bool)
    start[0] = True
    return {
        "obs": obs[:-1],
        "state": state[:-1],
        "avail": avail[:-1],
        "actions": actions,
        "reward": reward,
        "terminated": terminated,
        "truncated": truncated,
        "next_obs": obs[1:],
        "next_state": state[1:],
        "next_avail": avail[1:],
        "episode_start": start,
    }


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


def _check_shapes(src: Path, raw: Mapping[str, np.ndarray], env: MultiAgentEnv) -> None:
    info = env.info
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
