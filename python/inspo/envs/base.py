"""The interface every environment implements: `EnvInfo`, `MultiAgentEnv` and the shapes of what they return.

Every environment follows the same protocol (docs/design.md section 2):

- `reset(seed=None) -> (obs[N, obs_dim] float32, state[state_dim] float32, avail[N, A] bool)`
- `step(actions[N]) -> (obs, state, avail, reward: float, terminated: bool, truncated: bool, info: dict)`
- `info` -> `EnvInfo(name, n_agents, obs_dim, state_dim, n_actions, episode_limit)`

`terminated` means the task itself ended (no bootstrapping past it); `truncated` means the step limit cut the
episode short. Exactly one of them is set on the last step of an episode.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["EnvInfo", "MultiAgentEnv", "Observation", "RecordedEnv", "StepResult"]

Observation = tuple[np.ndarray, np.ndarray, np.ndarray]
"""`(obs[N, obs_dim] float32, state[state_dim] float32, avail[N, A] bool)`."""

StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, float, bool, bool, dict[str, Any]]
"""`(obs, state, avail, reward, terminated, truncated, info)`."""


@dataclass(frozen=True)
class EnvInfo:
    """Static description of an environment: what a dataset recorded from it must match."""

    name: str
    n_agents: int
    obs_dim: int
    state_dim: int
    n_actions: int
    episode_limit: int


@dataclass(frozen=True)
class RecordedEnv:
    """An environment as data or a checkpoint describe it (its `info` and the `options` that rebuild it), without
    building it: what stands for an environment that is not installed here where only its description is needed
    (writing a dataset's manifest or a policy checkpoint)."""

    info: EnvInfo
    options: dict[str, Any]


class MultiAgentEnv(abc.ABC):
    """Base class: validates actions and tracks the episode clock; subclasses supply the dynamics.

    Subclasses implement `_reset`, `_observe` and `_transition`; they never see invalid actions and never
    need to count steps.
    """

    def __init__(self, info: EnvInfo, options: dict[str, Any]) -> None:
        limit = info.episode_limit
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ValueError(f"{info.name}: episode_limit must be a positive integer, got {info.episode_limit!r}")
        self._info = info
        self._options = dict(options)
        self._t = 0
        self._running = False
        self._avail: np.ndarray | None = None  # None until the first reset
        self._rng = np.random.default_rng()

    @property
    def info(self) -> EnvInfo:
        """Static shapes and limits of this environment."""
        return self._info

    @property
    def options(self) -> dict[str, Any]:
        """The keyword options that `make(self.info.name, **options)` needs to rebuild this environment."""
        return dict(self._options)

    @property
    def episode_step(self) -> int:
        """Number of steps taken in the current episode."""
        return self._t

    def reset(self, seed: int | None = None) -> Observation:
        """Start a new episode. `seed` reseeds the environment's own randomness (if it has any); None keeps
        the current generator running."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._t = 0
        self._running = True
        self._reset(self._rng)
        return self._snapshot()

    def step(self, actions: npt.ArrayLike) -> StepResult:
        """Apply one joint action (one integer per agent) and return the next observation and the outcome."""
        acts = self._validate_actions(actions)
        self._t += 1
        at_limit = self._t >= self._info.episode_limit
        reward, terminated = self._transition(acts, at_limit)
        truncated = (at_limit or self._cut_short()) and not terminated
        self._running = not (terminated or truncated)
        obs, state, avail = self._snapshot()
        info = {"episode_step": self._t, **self._extra_info()}
        return obs, state, avail, float(reward), bool(terminated), bool(truncated), info

    def _snapshot(self) -> Observation:
        obs, state, avail = self._observe()
        # Copies, so that callers storing the arrays never see them change under a later step.
        obs = np.array(obs, dtype=np.float32)
        state = np.array(state, dtype=np.float32)
        avail = np.array(avail, dtype=bool)
        self._avail = avail
        return obs, state, avail

    def _validate_actions(self, actions: npt.ArrayLike) -> np.ndarray:
        name, n, n_actions = self._info.name, self._info.n_agents, self._info.n_actions
        if self._avail is None:
            raise RuntimeError(f"{name}: step() called before reset()")
        if not self._running:
            raise RuntimeError(
                f"{name}: step() called after the episode ended (at step {self._t}); call reset() first"
            )
        acts = np.asarray(actions)
        if acts.shape != (n,):
            raise ValueError(f"{name}: expected actions of shape ({n},) (one per agent), got shape {acts.shape}")
        if not np.issubdtype(acts.dtype, np.integer):
            raise ValueError(f"{name}: actions must be integers, got dtype {acts.dtype} ({acts.tolist()})")
        acts = acts.astype(np.int64)
        for agent, a in enumerate(acts):
            if not 0 <= a < n_actions:
                raise ValueError(f"{name}: action {a} of agent {agent} is out of range [0, {n_actions})")
            if not self._avail[agent, a]:
                available = np.flatnonzero(self._avail[agent]).tolist()
                raise ValueError(
                    f"{name}: action {a} of agent {agent} is unavailable; available actions: {available}"
                )
        return acts

    def _cut_short(self) -> bool:
        """True when the last transition hit a step limit of the wrapped environment's own (a truncation), which
        may come before `episode_limit`; environments without one of their own never are."""
        return False

    def _extra_info(self) -> dict[str, Any]:
        """Environment-specific entries of the last step's `info` (e.g. `won` in StarCraft battles)."""
        return {}

    @abc.abstractmethod
    def _reset(self, rng: np.random.Generator) -> None:
        """Put the environment in its initial state."""

    @abc.abstractmethod
    def _observe(self) -> Observation:
        """Observations, state and available actions of the current state."""

    @abc.abstractmethod
    def _transition(self, actions: np.ndarray, at_limit: bool) -> tuple[float, bool]:
        """Apply valid actions; return `(team reward, terminated)`. `at_limit`: this step is the last allowed."""
