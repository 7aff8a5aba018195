"""The Bridge game (Fu et al. 2022) in the variant of the public AlberDICE buffers (`bridge-alberdice`).

Two agents on a 3x6 grid must cross a one-lane bridge (row 1, columns 2-3) in opposite directions, one after the
other. The rules, including the conflict table, were read off the shared buffers (docs/design.md section 2); the data
replay test holds them to every recorded episode.
"""
from __future__ import annotations

import numpy as np

from inspo.envs.base import EnvInfo, MultiAgentEnv, Observation

__all__ = ["BridgeEnv", "bridge_optimum", "ROWS", "COLS", "WALLS", "STARTS", "GOALS", "MOVES"]

Cell = tuple[int, int]

ROWS, COLS = 3, 6
WALLS: frozenset[Cell] = frozenset({(0, 2), (0, 3), (2, 2), (2, 3)})
STARTS: tuple[Cell, Cell] = ((1, 2), (1, 3))
GOALS: tuple[Cell, Cell] = ((2, 5), (0, 0))
MOVES: tuple[Cell, ...] = ((0, 0), (-1, 0), (1, 0), (0, 1), (0, -1))
"""Action -> (row, col) offset: 0 stay, 1 row-1, 2 row+1, 3 col+1, 4 col-1."""

STEP_COST = 0.1


def _target(pos: Cell, action: int) -> Cell:
    """Where an action leads on an empty board; walls and the edge turn the move into a stay."""
    dr, dc = MOVES[action]
    cell = (pos[0] + dr, pos[1] + dc)
    if not (0 <= cell[0] < ROWS and 0 <= cell[1] < COLS) or cell in WALLS:
        return pos
    return cell


def _move_agents(p1: Cell, p2: Cell, a1: int, a2: int) -> tuple[Cell, Cell]:
    """Joint move with the conflict table of the data. An agent on its goal is off the board and frozen."""
    done1, done2 = p1 == GOALS[0], p2 == GOALS[1]
    t1 = p1 if done1 else _target(p1, a1)
    t2 = p2 if done2 else _target(p2, a2)
    if done1 or done2:
        return t1, t2
    moving1, moving2 = t1 != p1, t2 != p2
    if moving1 and moving2 and t1 == t2:
        return t1, p2  # agent 1 has priority
    if moving1 and moving2 and t1 == p2 and t2 == p1:
        return (t1, t2) if t1 == GOALS[0] else (p1, p2)  # a swap only succeeds when agent 1 finishes
    if moving1 and not moving2 and t1 == p2:
        return (t1 if t1 == GOALS[0] else p1), p2  # entering a goal cell is never blocked
    if moving2 and not moving1 and t2 == p1:
        return p1, (t2 if t2 == GOALS[1] else p2)
    return t1, t2


def _step_cost(p1: Cell, p2: Cell, new1: Cell, new2: Cell) -> float:
    """Team reward of a step that does not end the episode: mean over agents of -0.1 * distance to goal,
    counting only agents still on the board when the step began."""
    per_agent = np.zeros(2, dtype=np.float32)
    for i, (old, new, goal) in enumerate(((p1, new1, GOALS[0]), (p2, new2, GOALS[1]))):
        if old != goal:
            per_agent[i] = -STEP_COST * np.hypot(goal[0] - new[0], goal[1] - new[1])
    # The recorded rewards are float32 per-agent rewards averaged in float32; averaging in float64 instead
    # differs from the data in the last bit for about 1 step in 5.
    return float(per_agent.sum(dtype=np.float32) / np.float32(2))


class BridgeEnv(MultiAgentEnv):
    """`bridge-alberdice`: obs of each agent = state = `[row1, col1, goal_row1, goal_col1, row2, col2,
    goal_row2, goal_col2]`; all 5 actions are always available.

    Terminated when both agents are on their goals; truncated at `episode_limit` steps (50 in the data, 20 for
    evaluation). The step that ends the episode, either way, scores 0.
    """

    def __init__(self, episode_limit: int = 50) -> None:
        info = EnvInfo("bridge-alberdice", n_agents=2, obs_dim=8, state_dim=8, n_actions=len(MOVES),
                       episode_limit=episode_limit)
        super().__init__(info, {"episode_limit": episode_limit})
        self._pos: tuple[Cell, Cell] = STARTS

    @property
    def positions(self) -> tuple[Cell, Cell]:
        """Current (row, col) of agent 1 and agent 2."""
        return self._pos

    def _reset(self, rng: np.random.Generator) -> None:
        self._pos = STARTS

    def _observe(self) -> Observation:
        (p1, p2), (g1, g2) = self._pos, GOALS
        state = np.array([*p1, *g1, *p2, *g2], dtype=np.float32)
        return np.tile(state, (2, 1)), state, np.ones((2, len(MOVES)), dtype=bool)

    def _transition(self, actions: np.ndarray, at_limit: bool) -> tuple[float, bool]:
        p1, p2 = self._pos
        new1, new2 = _move_agents(p1, p2, int(actions[0]), int(actions[1]))
        self._pos = (new1, new2)
        terminated = new1 == GOALS[0] and new2 == GOALS[1]
        reward = 0.0 if terminated or at_limit else _step_cost(p1, p2, new1, new2)
        return reward, terminated


def bridge_optimum(episode_limit: int = 20) -> float:
    """Optimal undiscounted return from the start within `episode_limit` steps, by backward induction over
    all position pairs (the game is deterministic, so this is also the optimal expected return)."""
    if episode_limit < 1:
        raise ValueError(f"episode_limit must be a positive integer, got {episode_limit}")
    cells = [(r, c) for r in range(ROWS) for c in range(COLS) if (r, c) not in WALLS]
    pairs = [(p1, p2) for p1 in cells for p2 in cells]
    index = {pair: i for i, pair in enumerate(pairs)}
    joint = [(a1, a2) for a1 in range(len(MOVES)) for a2 in range(len(MOVES))]
    successor = np.zeros((len(pairs), len(joint)), dtype=np.int64)
    cost = np.zeros((len(pairs), len(joint)))
    finishes = np.zeros((len(pairs), len(joint)), dtype=bool)  # both agents on their goals afterwards
    for i, (p1, p2) in enumerate(pairs):
        for j, (a1, a2) in enumerate(joint):
            n1, n2 = _move_agents(p1, p2, a1, a2)
            successor[i, j] = index[(n1, n2)]
            cost[i, j] = _step_cost(p1, p2, n1, n2)
            finishes[i, j] = n1 == GOALS[0] and n2 == GOALS[1]
    # With one step left every action scores 0 (the last step of an episode always does), so V_1 = 0.
    value = np.zeros(len(pairs))
    for _ in range(episode_limit - 1):
        value = np.where(finishes, 0.0, cost + value[successor]).max(axis=1)
    return float(value[index[STARTS]])
