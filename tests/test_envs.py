"""Environments: interface, input validation, matrix payoffs, Bridge rules against the public data, DP optimum."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from inspo.envs import EnvInfo, MultiAgentEnv, Observation, known_envs, make
from inspo.envs.bridge import GOALS, STARTS, BridgeEnv, _move_agents, bridge_optimum
from inspo.envs.matrix import MNE_PAYOFF, XOR_PAYOFF

STAY, UP, DOWN, RIGHT, LEFT = range(5)  # Bridge actions: row-1 is "up", col+1 is "right"


def _load_buffer(path: Path) -> dict[str, np.ndarray]:
    names = ("obs", "state", "avail_actions", "actions", "reward", "terminated", "filled")
    return {name: np.load(path / f"{name}.npy") for name in names}


def _replay(env: MultiAgentEnv, buf: dict[str, np.ndarray], e: int) -> None:
    """Step `env` through episode `e` of a PyMARL buffer, asserting every recorded quantity."""
    steps = int(buf["filled"][e, :, 0].sum()) - 1  # the final filled slot holds only the last observation
    outputs = [env.reset()]
    rewards, ends = [], []
    for t in range(steps):
        obs, state, avail, reward, terminated, truncated, _ = env.step(buf["actions"][e, t, :, 0])
        outputs.append((obs, state, avail))
        rewards.append(reward)
        ends.append((terminated, truncated))
    obs, state, avail = (np.stack(column) for column in zip(*outputs))
    np.testing.assert_array_equal(obs, buf["obs"][e, : steps + 1], err_msg=f"episode {e}")
    np.testing.assert_array_equal(state, buf["state"][e, : steps + 1], err_msg=f"episode {e}")
    np.testing.assert_array_equal(avail, buf["avail_actions"][e, : steps + 1] != 0, err_msg=f"episode {e}")
    np.testing.assert_array_equal(np.float32(rewards), buf["reward"][e, :steps, 0], err_msg=f"episode {e}")
    # The buffer sets `terminated` on the last step whether the task ended or the step limit was hit.
    np.testing.assert_array_equal([any(end) for end in ends], buf["terminated"][e, :steps, 0] != 0)
    assert ends[-1] in ((True, False), (False, True))
    if ends[-1][1]:
        assert steps == env.info.episode_limit


# ---------------------------------------------------------------- registry and interface


def test_make_known_names_and_info() -> None:
    assert make("xor").info == EnvInfo("xor", n_agents=2, obs_dim=4, state_dim=4, n_actions=2, episode_limit=1)
    assert make("mne").info == EnvInfo("mne", n_agents=2, obs_dim=4, state_dim=4, n_actions=3, episode_limit=1)
    assert make("bridge-alberdice").info == EnvInfo(
        "bridge-alberdice", n_agents=2, obs_dim=8, state_dim=8, n_actions=5, episode_limit=50
    )
    assert make("bridge-alberdice", episode_limit=20).info.episode_limit == 20
    with pytest.raises(dataclasses.FrozenInstanceError):
        make("xor").info.n_agents = 3  # type: ignore[misc]


def test_make_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown environment 'pong'; known: bridge-alberdice, mne, xor"):
        make("pong")
    assert "smax:<map>" in known_envs() and "smac:<map>" in known_envs()


def test_prefixed_families_need_a_map() -> None:
    # The families themselves (smax:, smac:) are tested in tests/test_smax.py.
    with pytest.raises(ValueError, match=r"lacks a map: expected 'smax:<map>'"):
        make("smax:")


@pytest.mark.parametrize("name", ["xor", "mne", "bridge-alberdice"])
def test_reset_and_step_shapes(name: str) -> None:
    env = make(name)
    info = env.info
    obs, state, avail = env.reset(seed=0)
    assert obs.shape == (info.n_agents, info.obs_dim) and obs.dtype == np.float32
    assert state.shape == (info.state_dim,) and state.dtype == np.float32
    assert avail.shape == (info.n_agents, info.n_actions) and avail.dtype == bool
    obs2, state2, avail2, reward, terminated, truncated, step_info = env.step(np.zeros(info.n_agents, np.int64))
    assert obs2.shape == obs.shape and state2.shape == state.shape and avail2.shape == avail.shape
    assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert step_info["episode_step"] == 1


def test_returned_arrays_are_not_aliased() -> None:
    env = make("bridge-alberdice")
    _, state, _ = env.reset()
    env.step([LEFT, LEFT])
    np.testing.assert_array_equal(state, [1, 2, 2, 5, 1, 3, 0, 0])


# ---------------------------------------------------------------- invalid input


def test_step_before_reset_raises() -> None:
    with pytest.raises(RuntimeError, match=r"xor: step\(\) called before reset\(\)"):
        make("xor").step([0, 1])


def test_step_after_end_raises() -> None:
    env = make("xor")
    env.reset()
    env.step([0, 1])
    with pytest.raises(RuntimeError, match=r"called after the episode ended \(at step 1\); call reset\(\)"):
        env.step([0, 1])


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        ([0, 1, 1], r"expected actions of shape \(2,\) \(one per agent\), got shape \(3,\)"),
        ([[0, 1]], r"expected actions of shape \(2,\) .* got shape \(1, 2\)"),
        ([0, 5], r"action 5 of agent 1 is out of range \[0, 5\)"),
        ([-1, 0], r"action -1 of agent 0 is out of range \[0, 5\)"),
        ([0.0, 1.0], r"actions must be integers, got dtype float64"),
    ],
)
def test_bad_actions_raise(actions: list, message: str) -> None:
    env = make("bridge-alberdice")
    env.reset()
    with pytest.raises(ValueError, match=message):
        env.step(actions)
    env.step([STAY, STAY])  # a refused step leaves the episode usable


class _MaskedGame(MultiAgentEnv):
    """One agent whose action 1 is never available: exercises the availability check of the base class."""

    def __init__(self) -> None:
        super().__init__(EnvInfo("masked", 1, 1, 1, 2, 1), {})

    def _reset(self, rng: np.random.Generator) -> None:
        pass

    def _observe(self) -> Observation:
        return np.zeros((1, 1)), np.zeros(1), np.array([[True, False]])

    def _transition(self, actions: np.ndarray, at_limit: bool) -> tuple[float, bool]:
        return 0.0, at_limit


def test_unavailable_action_raises() -> None:
    env = _MaskedGame()
    env.reset()
    with pytest.raises(ValueError, match=r"masked: action 1 of agent 0 is unavailable; available actions: \[0\]"):
        env.step([1])


def test_bad_episode_limit_raises() -> None:
    with pytest.raises(ValueError, match=r"bridge-alberdice: episode_limit must be a positive integer, got 0"):
        make("bridge-alberdice", episode_limit=0)


# ---------------------------------------------------------------- matrix games


@pytest.mark.parametrize(("name", "payoff"), [("xor", XOR_PAYOFF), ("mne", MNE_PAYOFF)])
def test_matrix_payoffs_one_step(name: str, payoff: np.ndarray) -> None:
    env = make(name)
    for a1 in range(payoff.shape[0]):
        for a2 in range(payoff.shape[1]):
            env.reset()
            *_, reward, terminated, truncated, _ = env.step([a1, a2])
            assert reward == payoff[a1, a2]
            assert terminated and not truncated


def test_matrix_payoff_values() -> None:
    np.testing.assert_array_equal(XOR_PAYOFF, [[0, 1], [1, -2]])
    np.testing.assert_array_equal(MNE_PAYOFF, [[10, -5, -5], [-5, 2, 0], [-5, 0, 5]])


def test_repeated_matrix_game_terminates_after_its_rounds() -> None:
    env = make("xor", episode_limit=3)
    env.reset()
    ends = [env.step([1, 0])[4:6] for _ in range(3)]
    assert ends == [(False, False), (False, False), (True, False)]


def test_xor_data_replays(shared_data: Path) -> None:
    for name in ("xor_02", "xor_02_20", "xor_00_02_20", "xor_random"):
        buf = _load_buffer(shared_data / name)
        env = make("xor", episode_limit=buf["filled"].shape[1] - 1)
        for e in range(buf["filled"].shape[0]):
            _replay(env, buf, e)


# ---------------------------------------------------------------- Bridge


@pytest.mark.parametrize(
    ("p1", "p2", "a1", "a2", "expected"),
    [
        # A move into a wall or off the grid is a stay.
        ((1, 2), (1, 4), UP, STAY, ((1, 2), (1, 4))),
        ((0, 0), (1, 4), LEFT, STAY, ((0, 0), (1, 4))),
        # Both into one cell: agent 1 moves, agent 2 stays.
        ((1, 2), (1, 4), RIGHT, LEFT, ((1, 3), (1, 4))),
        # Swap: both stay ...
        ((1, 2), (1, 3), RIGHT, LEFT, ((1, 2), (1, 3))),
        # ... unless agent 1 steps onto its goal.
        ((1, 5), (2, 5), DOWN, UP, ((2, 5), (1, 5))),
        # Into the cell of an agent that stays: cancelled ...
        ((1, 2), (1, 3), RIGHT, STAY, ((1, 2), (1, 3))),
        ((1, 2), (1, 3), STAY, LEFT, ((1, 2), (1, 3))),
        # ... unless that cell is the mover's goal.
        ((1, 5), (2, 5), DOWN, STAY, ((2, 5), (2, 5))),
        ((0, 0), (0, 1), STAY, LEFT, ((0, 0), (0, 0))),
        # Into a cell the other agent is leaving: allowed.
        ((1, 2), (1, 3), RIGHT, RIGHT, ((1, 3), (1, 4))),
        # An agent on its goal is off the board: the other passes through, and it never moves again.
        ((2, 5), (1, 5), DOWN, DOWN, ((2, 5), (2, 5))),
        ((2, 5), (0, 0), UP, DOWN, ((2, 5), (0, 0))),
    ],
)
def test_bridge_conflict_table(p1, p2, a1, a2, expected) -> None:
    assert _move_agents(p1, p2, a1, a2) == expected


def test_bridge_rewards_and_termination() -> None:
    env = BridgeEnv(episode_limit=5)
    _, state, _ = env.reset()
    np.testing.assert_array_equal(state, [*STARTS[0], *GOALS[0], *STARTS[1], *GOALS[1]])
    *_, reward, terminated, truncated, _ = env.step([LEFT, LEFT])  # agent 2 follows agent 1 out of (1,2)
    assert env.positions == ((1, 1), (1, 2))
    assert reward == pytest.approx(-0.1 * (np.hypot(1, 4) + np.hypot(1, 2)) / 2)
    assert not terminated and not truncated
    for _ in range(3):
        *_, reward, terminated, truncated, _ = env.step([STAY, STAY])
    *_, reward, terminated, truncated, _ = env.step([STAY, STAY])
    assert (reward, terminated, truncated) == (0.0, False, True)  # the step limit scores 0


def test_bridge_optimum_matches_spec() -> None:
    assert round(bridge_optimum(20), 4) == -1.2355
    assert bridge_optimum(1) == 0.0  # the only step is also the last, which scores 0


def test_bridge_optimal_data_replays(shared_data: Path) -> None:
    buf = _load_buffer(shared_data / "bridge_optimal")
    env = make("bridge-alberdice")
    n = buf["filled"].shape[0]
    assert n == 500
    for e in range(n):
        _replay(env, buf, e)
    returns = buf["reward"][:, :, 0].sum(axis=1, dtype=np.float64)
    assert round(float(returns.mean()), 3) == -1.262
    # The best recorded episode attains the DP optimum, and no episode beats it.
    assert returns.max() == pytest.approx(bridge_optimum(20), abs=1e-6)


def test_bridge_mix_data_replays(shared_data: Path) -> None:
    buf = _load_buffer(shared_data / "bridge_mix")
    env = make("bridge-alberdice")
    n = buf["filled"].shape[0]
    assert n == 1000
    for e in range(n):
        _replay(env, buf, e)
