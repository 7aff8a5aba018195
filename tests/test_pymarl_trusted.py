"""Trusted import of PyMARL buffers (`import_pymarl(..., trusted=True)`, `inspo datasets import --format pymarl
--trusted`): a buffer written here by playing a stochastic environment, which a replay cannot reproduce."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inspo import envs
from inspo.cli import main
from inspo.data import DatasetError, import_pymarl, load_dataset, save_dataset
from inspo.data.trusted import source_digest
from inspo.envs import EnvInfo, MultiAgentEnv, Observation

LIMIT = 5


class Coin(MultiAgentEnv):
    """Two agents, three actions; the state is drawn at reset and after every step, the team reward is random and
    an episode ends with probability 1/3 per step: stochastic, so a replay cannot give a recorded episode back.
    Agent 1's action 2 is available only when the state's first entry is below 0.5."""

    def __init__(self, episode_limit: int = LIMIT) -> None:
        super().__init__(EnvInfo("coin", 2, 3, 4, 3, episode_limit), {"episode_limit": episode_limit})
        self._x = np.zeros(4)

    def _reset(self, rng: np.random.Generator) -> None:
        self._x = rng.random(4)

    def _observe(self) -> Observation:
        avail = np.ones((2, 3), dtype=bool)
        avail[1, 2] = self._x[0] < 0.5
        return np.stack([self._x[:3], self._x[1:]]), self._x, avail

    def _transition(self, actions: np.ndarray, at_limit: bool) -> tuple[float, bool]:
        reward = float(self._rng.random())
        self._x = self._rng.random(4)
        return reward, reward < 1 / 3


@pytest.fixture(autouse=True)
def coin(monkeypatch: pytest.MonkeyPatch) -> None:
    """`coin` installed, for this module's tests only."""
    monkeypatch.setitem(envs._ENVS, "coin", Coin)


def write_buffer(folder: Path, episodes: int = 30, seed: int = 0) -> list[bool]:
    """A PyMARL buffer of `episodes` episodes of `Coin` played uniformly at random (`terminated` set only where the
    task ended, as PyMARL's runner records it); returns whether each episode terminated (else it was truncated)."""
    env, rng = Coin(), np.random.default_rng(seed)
    slots = LIMIT + 1
    buf = {"obs": np.zeros((episodes, slots, 2, 3), np.float32), "state": np.zeros((episodes, slots, 4), np.float32),
           "avail_actions": np.zeros((episodes, slots, 2, 3), np.int32),
           "actions": np.zeros((episodes, slots, 2, 1), np.int64), "reward": np.zeros((episodes, slots, 1), np.float32),
           "terminated": np.zeros((episodes, slots, 1), np.uint8), "filled": np.zeros((episodes, slots, 1), np.uint8)}
    ended = []
    for e in range(episodes):
        obs, state, avail = env.reset(seed=int(rng.integers(2**31 - 1)))
        t, done = 0, False
        while True:
            buf["obs"][e, t], buf["state"][e, t], buf["avail_actions"][e, t], buf["filled"][e, t] = obs, state, avail, 1
            if done:
                break
            actions = np.array([rng.choice(np.flatnonzero(row)) for row in avail])
            obs, state, avail, reward, terminated, truncated, _ = env.step(actions)
            buf["actions"][e, t, :, 0], buf["reward"][e, t, 0], buf["terminated"][e, t, 0] = actions, reward, terminated
            t, done = t + 1, terminated or truncated
        ended.append(terminated)
    folder.mkdir(parents=True)
    for name, array in buf.items():
        np.save(folder / f"{name}.npy", array)
    (folder / "meta.json").write_text(json.dumps({"episodes_in_buffer": episodes}))
    return ended


def edited(folder: Path, name: str, change) -> Path:
    array = np.load(folder / f"{name}.npy")
    np.save(folder / f"{name}.npy", change(array))
    return folder


def test_replay_refuses_a_stochastic_environment_and_suggests_trusted(tmp_path: Path) -> None:
    write_buffer(tmp_path / "coin")
    with pytest.raises(DatasetError, match=r"coin episode 0: .*; if the environment is stochastic .*--trusted"):
        import_pymarl(tmp_path / "coin", "coin")


def test_trusted_import_takes_the_buffers_episode_ends(tmp_path: Path) -> None:
    src = tmp_path / "coin"
    ended = write_buffer(src)
    assert any(ended) and not all(ended)  # both kinds of end
    ds = import_pymarl(src, "coin", trusted=True)
    raw = {name: np.load(src / f"{name}.npy") for name in ("obs", "reward", "filled")}
    lengths = raw["filled"][:, :, 0].sum(1) - 1
    assert ds.n_episodes == 30 and len(ds) == lengths.sum()
    ends = np.flatnonzero(ds.terminated | ds.truncated)
    assert ds.terminated[ends].tolist() == ended and ds.truncated[ends].tolist() == [not x for x in ended]
    assert (lengths[~np.array(ended)] == LIMIT).all()  # truncations come at the step limit
    assert np.array_equal(ds.reward, np.concatenate([raw["reward"][e, :n, 0] for e, n in enumerate(lengths)]))
    assert np.array_equal(ds.next_obs[ends], np.stack([raw["obs"][e, n] for e, n in enumerate(lengths)]))
    assert ds.env_info == Coin().info
    behaviour = ds.manifest["behaviour"]
    assert behaviour["trusted"] is True and behaviour["env_from"] == "environment"
    assert behaviour["sha256"] == source_digest(src) and source_digest(src) in ds.manifest["source"]
    back = load_dataset(save_dataset(ds, tmp_path / "data"), env="coin")
    assert back.manifest["behaviour"] == behaviour and np.array_equal(back.actions, ds.actions)


def test_trusted_import_describes_an_environment_not_installed(tmp_path: Path) -> None:
    write_buffer(tmp_path / "coin")
    ds = import_pymarl(tmp_path / "coin", "smac:3m", trusted=True)  # oxwhirl/smac is not installed here
    assert ds.env_info == EnvInfo("smac:3m", 2, 3, 4, 3, LIMIT) and ds.manifest["env"]["options"] == {
        "episode_limit": LIMIT}
    assert ds.manifest["behaviour"]["env_from"] == "data"
    with pytest.raises(DatasetError, match=r"n_actions: PyMARL buffer 3 vs environment 2"):
        import_pymarl(tmp_path / "coin", "xor", trusted=True)


REFUSALS = {
    "a flag neither 0 nor 1": ("filled", lambda a: np.where(a == 1, 2, a), r"filled\.npy holds 2 at index"),
    "a filled slot without a legal action": (
        "avail_actions", lambda a: np.concatenate([a[:, :, :1], np.zeros_like(a[:, :, 1:])], axis=2),
        r"avail_actions\.npy allows no action at \(episode, slot, agent\) \(0, 0, 1\)"),
    "an action out of range": ("actions", lambda a: np.full_like(a, 7), r"action 7 is out of range \[0, 3\)"),
    "an unavailable chosen action": (  # agent 1's action 2, which is unavailable in about half the states
        "actions", lambda a: np.concatenate([a[:, :, :1], np.full_like(a[:, :, 1:], 2)], axis=2),
        r"index \(\d+, 1\): action 2 is unavailable"),
    "terminated before the last step": (
        "terminated", lambda a: np.ones_like(a), r"episode \d+: 'terminated' is set at step 0, before its last step"),
    "an unterminated end before the limit": (
        "terminated", lambda a: np.zeros_like(a), r"ends after \d steps, before the step limit 5, without"),
    "continuous actions": ("actions", lambda a: a + 0.5, r"actions\.npy holds non-integer values"),
    "a state of another length of episode": ("state", lambda a: a[:, :-1], r"state\.npy has shape \(30, 5, 4\)"),
}


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_trusted_import_refuses_what_does_not_fit(refusal: str, tmp_path: Path) -> None:
    name, change, message = REFUSALS[refusal]
    write_buffer(tmp_path / "coin")
    with pytest.raises(DatasetError, match=message):
        import_pymarl(edited(tmp_path / "coin", name, change), "coin", trusted=True)


def test_cli_trusted_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_buffer(tmp_path / "coin")
    assert main(["datasets", "import", str(tmp_path / "coin"), "--env", "coin", "--out",
                 str(tmp_path / "replayed")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--trusted" in err and not (tmp_path / "replayed").exists()
    assert main(["datasets", "import", str(tmp_path / "coin"), "--format", "pymarl", "--trusted", "--env", "coin",
                 "--out", str(tmp_path / "data")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["behaviour"]["trusted"] is True and summary["counts"]["episodes"] == 30
    assert main(["datasets", "verify", str(tmp_path / "data")]) == 0
