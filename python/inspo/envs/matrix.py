"""Cooperative matrix games (two agents, one shared payoff), one-step or repeated a fixed number of rounds."""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

from inspo.envs.base import EnvInfo, MultiAgentEnv, Observation

__all__ = ["XOR_PAYOFF", "MNE_PAYOFF", "MatrixGame", "make_xor", "make_mne"]

XOR_PAYOFF = np.array([[0.0, 1.0], [1.0, -2.0]])
"""XOR game: optimum 1 at (A,B) or (B,A); (B,B) is the out-of-distribution trap. Row = agent 1."""

MNE_PAYOFF = np.array([[10.0, -5.0, -5.0], [-5.0, 2.0, 0.0], [-5.0, 0.0, 5.0]])
"""Multi-equilibrium game (our own instance): optimum 10 at (A,A), sub-optimal equilibria at (B,B) and (C,C)."""

# Shared module-level constants: a caller mutating one in place would silently change every later experiment.
XOR_PAYOFF.setflags(write=False)
MNE_PAYOFF.setflags(write=False)

# The public AlberDICE XOR buffers record this constant vector as every observation and state;
# reproducing it keeps our datasets and the imported ones interchangeable.
_OBS = np.array([0.0, 1.0, 0.0, 1.0], dtype=np.float32)


class MatrixGame(MultiAgentEnv):
    """A two-agent matrix game played for `episode_limit` rounds; the team reward of a round is
    `payoff[a1, a2]`.

    The state never changes, so all rounds are identical. The game *terminates* after its last round (it is
    a finite game, not a time-limited one), which for the default single round is the usual one-step game.
    """

    def __init__(self, name: str, payoff: npt.ArrayLike, episode_limit: int = 1) -> None:
        table = np.asarray(payoff, dtype=np.float64)
        if table.ndim != 2 or table.shape[0] != table.shape[1] or not np.isfinite(table).all():
            raise ValueError(f"{name}: payoff must be a finite square matrix, got shape {table.shape}")
        info = EnvInfo(name, n_agents=2, obs_dim=_OBS.size, state_dim=_OBS.size,
                       n_actions=table.shape[0], episode_limit=episode_limit)
        super().__init__(info, {"episode_limit": episode_limit})
        self.payoff = table

    def _reset(self, rng: np.random.Generator) -> None:
        pass  # stateless apart from the step counter that the base class keeps

    def _observe(self) -> Observation:
        n, a = self.info.n_agents, self.info.n_actions
        return np.tile(_OBS, (n, 1)), _OBS.copy(), np.ones((n, a), dtype=bool)

    def _transition(self, actions: np.ndarray, at_limit: bool) -> tuple[float, bool]:
        return float(self.payoff[actions[0], actions[1]]), at_limit


def make_xor(episode_limit: int = 1) -> MatrixGame:
    """The XOR game (`xor`); `episode_limit=50` is the repeated form of the public AlberDICE buffers."""
    return MatrixGame("xor", XOR_PAYOFF, episode_limit)


def make_mne(episode_limit: int = 1) -> MatrixGame:
    """The multi-equilibrium game (`mne`), actions A, B, C = 0, 1, 2."""
    return MatrixGame("mne", MNE_PAYOFF, episode_limit)
