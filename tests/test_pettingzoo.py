"""`inspo.envs.register` and the PettingZoo adapter: a tiny custom environment, a fake ParallelEnv with action
masks, agents that leave early and a truncation of its own, and MPE simple_spread end to end through the CLI."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inspo import envs
from inspo.cli import main
from inspo.envs import EnvInfo, MultiAgentEnv, make


class _Counter(MultiAgentEnv):
    """Two agents; the team earns the sum of their actions; `rounds` steps."""

    def __init__(self, name: str = "tiny", rounds: int = 2) -> None:
        super().__init__(EnvInfo(name, 2, 1, 1, 2, rounds), {"rounds": rounds})

    def _reset(self, rng: np.random.Generator) -> None:
        pass

    def _observe(self):
        return np.zeros((2, 1)), np.zeros(1), np.ones((2, 2), dtype=bool)

    def _transition(self, actions: np.ndarray, at_limit: bool) -> tuple[float, bool]:
        return float(actions.sum()), False


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(envs, "_ENVS", dict(envs._ENVS))
    monkeypatch.setattr(envs, "_PREFIXED", dict(envs._PREFIXED))


def test_register_plain_names_and_families(registry: None) -> None:
    envs.register("tiny", _Counter)
    envs.register("counters:", lambda level, **options: _Counter(f"counters:{level}", int(level), **options))
    assert make("tiny", rounds=3).info.episode_limit == 3
    assert make("counters:4").info == EnvInfo("counters:4", 2, 1, 1, 2, 4)
    assert "tiny" in envs.known_envs() and "counters:<map>" in envs.known_envs()
    with pytest.raises(ValueError, match="already registered"):
        envs.register("tiny", _Counter)
    envs.register("tiny", _Counter, overwrite=True)
    for bad in ("", "a:b", "two words", ":"):
        with pytest.raises(ValueError, match="cannot register"):
            envs.register(bad, _Counter)


try:
    import gymnasium as gym
except ImportError:  # the fakes below describe their spaces with gymnasium, which PettingZoo installs
    gym = None
needs_gymnasium = pytest.mark.skipif(gym is None, reason="needs gymnasium: pip install 'inspo[pettingzoo]'")


class _Parallel:
    """A ParallelEnv-shaped fake: agent `a` (3 actions, mask in its Dict observation) and `b` (2 actions starting at
    1, mask in `infos`, 2-long observations); `b` terminates after step 2; `a` is truncated at step 4."""

    possible_agents = ["a", "b"]

    def __init__(self, state: bool = False) -> None:
        self._state, self.agents, self.t = state, [], 0
        self.unwrapped = self

    def observation_space(self, agent: str) -> Any:
        box = gym.spaces.Box(-1, 1, (1 if agent == "a" else 2,))
        if agent == "b":
            return box
        return gym.spaces.Dict({"observation": box, "action_mask": gym.spaces.MultiBinary(3)})

    def action_space(self, agent: str) -> Any:
        return gym.spaces.Discrete(3) if agent == "a" else gym.spaces.Discrete(2, start=1)

    def _obs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        obs = {"a": {"observation": np.array([self.t]), "action_mask": np.array([1, 0, 1])},
               "b": np.array([self.t, -self.t])}
        infos = {"a": {}, "b": {"action_mask": np.array([0, 1])}}
        return {k: v for k, v in obs.items() if k in self.agents}, {k: infos[k] for k in self.agents}

    def reset(self, seed: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        self.agents, self.t = list(self.possible_agents), 0
        return self._obs()

    def step(self, actions: dict[str, int]):
        self.sent = actions
        self.t += 1
        obs, infos = self._obs()
        rewards = {agent: 1.0 for agent in self.agents}
        terms = {agent: agent == "b" and self.t == 2 for agent in self.agents}
        truncs = {agent: self.t == 4 for agent in self.agents}
        self.agents = [agent for agent in self.agents if not (terms[agent] or truncs[agent])]
        return obs, rewards, terms, truncs, infos

    def state(self) -> np.ndarray:
        if not self._state:
            raise NotImplementedError
        return np.full(5, float(self.t))

    def close(self) -> None:
        pass


@needs_gymnasium
def test_pettingzoo_masks_departures_and_own_truncation() -> None:
    from inspo.envs.pettingzoo import PettingZooEnv

    env = PettingZooEnv(_Parallel, name="fake", episode_limit=10)
    assert env.info == EnvInfo("fake", 2, 2, 4, 3, 10)  # padded observations; state = observations concatenated
    obs, state, avail = env.reset(seed=0)
    assert avail.tolist() == [[True, False, True], [False, True, False]]
    assert state.tolist() == obs.ravel().tolist()
    _, _, _, reward, terminated, truncated, _ = env.step([2, 1])
    assert env._env.sent == {"a": 2, "b": 2}  # b's space starts at 1
    assert (reward, terminated, truncated) == (2.0, False, False)
    obs, _, avail, reward, terminated, truncated, _ = env.step([0, 1])
    assert (reward, terminated, truncated) == (2.0, False, False)  # b terminated, but a plays on
    assert avail[1].tolist() == [True, False, False] and obs[1].tolist() == [0, 0]  # b has left: action 0 only
    env.step([0, 0])
    assert env._env.sent == {"a": 0}
    obs, _, _, reward, terminated, truncated, _ = env.step([2, 0])
    assert (reward, terminated, truncated) == (1.0, False, True)  # the environment's own limit, before 10 steps
    assert obs[0].tolist() == [4, 0]  # the final observation is kept
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step([0, 0])
    assert PettingZooEnv(lambda: _Parallel(state=True), name="fake", episode_limit=3).info.state_dim == 5


@needs_gymnasium
def test_pettingzoo_refuses_continuous_actions_and_names_missing_modules() -> None:
    from inspo.envs.pettingzoo import PettingZooEnv

    class Continuous(_Parallel):
        def action_space(self, agent: str) -> Any:
            return gym.spaces.Box(-1, 1, (2,))

    with pytest.raises(ValueError, match="only Discrete action spaces"):
        PettingZooEnv(Continuous, name="fake", episode_limit=3)
    with pytest.raises(ValueError, match="episode_limit"):
        PettingZooEnv(_Parallel, name="fake")
    pytest.importorskip("pettingzoo")
    with pytest.raises(ImportError, match="no_such_module_xyz"):
        make("pettingzoo:no_such_module_xyz")


def test_simple_spread_generate_train_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mpe2")
    env_id = "pettingzoo:mpe2.simple_spread_v3"
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["datasets", "generate", "--env", env_id, "--quality", "random", "--env-option", "max_cycles=10",
                 "--episodes", "8", "--seed", "1", "--out", str(data)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"transitions": 80, "episodes": 8}
    assert summary["env_options"] == {"max_cycles": 10, "episode_limit": 10}
    assert main(["train", "--dataset", str(data), "--iters", "6", "--bc-steps", "4", "--batch-size", "16",
                 "--eval-every", "6", "--eval-episodes", "2", "--out", str(run)]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert np.isfinite(trained["final_return"])
    assert main(["evaluate", trained["checkpoint"], "--episodes", "2"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["episodes"] == 2 and np.isfinite(evaluated["mean"])
