"""PettingZoo `ParallelEnv` environments behind the project's environment interface: `pettingzoo:<module>`.

`make("pettingzoo:mpe2.simple_spread_v3", max_cycles=25)` imports the module and builds
`module.parallel_env(max_cycles=25)`; every option except `episode_limit` goes to `parallel_env`. PettingZoo and
the package of the environment are optional: `pip install 'inspo[pettingzoo]'` installs PettingZoo and MPE
(`mpe2`); other families come from their own packages.

Mapping (docs/design.md section 2 shapes, agents in `possible_agents` order):

- Observations: each agent's observation flattened to float32. A `Dict` observation space must hold the
  observation under `"observation"` (and may hold `"action_mask"`). Agents whose observations are shorter than
  the longest are padded with zeros.
- Actions: every agent's action space must be `Discrete` (continuous or multi-discrete spaces are refused);
  action `a` of the interface is `space.start + a`. `n_actions` is the largest space; the actions an agent's
  space lacks are never available to it.
- Available actions: the observation's `action_mask`, else the agent's `infos[agent]["action_mask"]`, else all
  of the agent's actions.
- State: `state()` of the environment when it implements it, else the agents' (padded) observations concatenated.
- Reward: the sum of the agents' rewards of the step is the team reward (cooperative environments that give
  every agent the same team reward thus count it once per agent; the data and the evaluation agree on it).
- Episode end: when every agent that acted is terminated or truncated (or none remains). It is a termination
  if any of them terminated, else a truncation (the environment's own step limit, e.g. MPE's `max_cycles`), so
  the two stay apart. `episode_limit` (default: the `max_cycles` option or attribute) cuts the episode too.
- Agents that left the episode early are kept in their slot: zero observation and only action 0 available
  (its value is never sent to the environment).
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from inspo.envs.base import EnvInfo, MultiAgentEnv, Observation

__all__ = ["PettingZooEnv"]

INSTALL_HINT = "pip install 'inspo[pettingzoo]' (PettingZoo and the MPE environments, mpe2)"


def _parallel_env_factory(module: str) -> Callable[..., Any]:
    """`<module>.parallel_env`, or an ImportError that says what to install."""
    if importlib.util.find_spec("pettingzoo") is None:
        raise ImportError(f"pettingzoo:{module} needs PettingZoo, which is not installed; {INSTALL_HINT}")
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise ImportError(f"pettingzoo:{module}: cannot import module '{module}' ({exc}); install the package that "
                          f"provides it (for MPE: {INSTALL_HINT})") from exc
    factory = getattr(found, "parallel_env", None)
    if not callable(factory):
        raise ValueError(f"pettingzoo:{module}: module '{module}' has no parallel_env() function; expected a "
                         f"PettingZoo environment module such as mpe2.simple_spread_v3")
    return factory


class PettingZooEnv(MultiAgentEnv):
    """A cooperative PettingZoo `ParallelEnv` with discrete actions (see the module docstring for the mapping).

    `source` is a module path whose `parallel_env(**env_kwargs)` builds the environment (the id is then
    `pettingzoo:<source>`), or a callable that builds it; a callable needs `name`, the id it is registered under
    with `inspo.envs.register`, so that datasets and checkpoints can rebuild it.
    """

    def __init__(self, source: str | Callable[..., Any], *, name: str | None = None,
                 episode_limit: int | None = None, **env_kwargs: Any) -> None:
        if isinstance(source, str):
            factory, name = _parallel_env_factory(source), name or f"pettingzoo:{source}"
        elif name is None:
            raise ValueError("PettingZooEnv built from a callable needs name=, the id it is registered under")
        else:
            factory = source
        self._env = factory(**env_kwargs)
        self._agents = list(self._env.possible_agents)
        self._starts, self._sizes = self._action_spaces(name)
        self._obs_sizes = [self._obs_size(name, agent) for agent in self._agents]
        if episode_limit is None:
            episode_limit = env_kwargs.get("max_cycles", getattr(self._env.unwrapped, "max_cycles", None))
            if episode_limit is None:
                raise ValueError(f"{name}: the environment states no max_cycles; pass episode_limit=<steps>")
        obs_dim = max(self._obs_sizes)
        self._obs_dim = obs_dim
        self._has_state = self._implements_state()
        state_dim = self._state_dim() if self._has_state else len(self._agents) * obs_dim
        info = EnvInfo(name, len(self._agents), obs_dim, state_dim, max(self._sizes), episode_limit)
        super().__init__(info, {**env_kwargs, "episode_limit": episode_limit})
        self._obs: Mapping[str, Any] = {}
        self._infos: Mapping[str, Any] = {}
        self._truncated = False

    def close(self) -> None:
        """Release the environment's resources (windows, processes)."""
        self._env.close()

    def _action_spaces(self, name: str) -> tuple[list[int], list[int]]:
        starts, sizes = [], []
        for agent in self._agents:
            space = self._env.action_space(agent)
            n = getattr(space, "n", None)
            if type(space).__name__ != "Discrete" or n is None:
                raise ValueError(f"{name}: agent '{agent}' has action space {space}; only Discrete action spaces are "
                                 f"supported (inspo's methods choose one of finitely many actions)")
            starts.append(int(getattr(space, "start", 0)))
            sizes.append(int(n))
        return starts, sizes

    def _obs_size(self, name: str, agent: str) -> int:
        space = self._env.observation_space(agent)
        if type(space).__name__ == "Dict":
            if "observation" not in space.spaces:
                raise ValueError(f"{name}: agent '{agent}' has a Dict observation space without an 'observation' "
                                 f"entry (it has {sorted(space.spaces)})")
            space = space.spaces["observation"]
        if getattr(space, "shape", None) is None:
            raise ValueError(f"{name}: agent '{agent}' has observation space {space}; expected a Box (or a Dict "
                             f"holding one under 'observation')")
        return int(np.prod(space.shape, dtype=np.int64))

    def _implements_state(self) -> bool:
        self._env.reset(seed=0)  # state() of some environments needs a reset first
        try:
            self._env.state()
        except (NotImplementedError, AttributeError):
            return False
        return True

    def _state_dim(self) -> int:
        return int(np.asarray(self._env.state()).size)

    def _reset(self, rng: np.random.Generator) -> None:
        # The episode's seed comes from the interface's generator, so `reset(seed=...)` reproduces episodes.
        self._obs, self._infos = self._env.reset(seed=int(rng.integers(2**31 - 1)))
        self._truncated = False

    def _observe(self) -> Observation:
        n, info = len(self._agents), self._info
        obs = np.zeros((n, self._obs_dim), dtype=np.float32)
        avail = np.zeros((n, info.n_actions), dtype=bool)
        for i, agent in enumerate(self._agents):
            if agent not in self._obs:  # the agent has left the episode
                avail[i, 0] = True
                continue
            raw, mask = self._obs[agent], None
            if isinstance(raw, Mapping):
                raw, mask = raw["observation"], raw.get("action_mask")
            if mask is None:
                mask = (self._infos.get(agent) or {}).get("action_mask")
            flat = np.asarray(raw, dtype=np.float32).ravel()
            obs[i, :flat.size] = flat
            if mask is None:
                avail[i, :self._sizes[i]] = True
            else:
                mask = np.asarray(mask).ravel()
                if mask.shape != (self._sizes[i],):
                    raise RuntimeError(f"{info.name}: agent '{agent}' has an action mask of shape {mask.shape}; its "
                                       f"action space has {self._sizes[i]} actions")
                avail[i, :self._sizes[i]] = mask != 0
                if not avail[i].any():
                    raise RuntimeError(f"{info.name}: agent '{agent}' has no available action (its action mask is "
                                       f"all zero)")
        state = np.asarray(self._env.state(), dtype=np.float32).ravel() if self._has_state else obs.ravel()
        if state.shape != (info.state_dim,):
            raise RuntimeError(f"{info.name}: state() returned {state.size} values, expected {info.state_dim}")
        return obs, state, avail

    def _transition(self, actions: np.ndarray, at_limit: bool) -> tuple[float, bool]:
        acting = [agent for agent in self._agents if agent in self._obs]
        index = {agent: i for i, agent in enumerate(self._agents)}
        joint = {agent: int(actions[index[agent]]) + self._starts[index[agent]] for agent in acting}
        self._obs, rewards, terminations, truncations, self._infos = self._env.step(joint)
        reward = float(sum(float(r) for r in rewards.values()))
        done = {agent: bool(terminations.get(agent)) or bool(truncations.get(agent)) for agent in acting}
        over = all(done.values()) or not self._env.agents
        terminated = over and any(bool(terminations.get(agent)) for agent in acting)
        self._truncated = over and not terminated
        if not over:
            # Agents that finished this step leave the episode, although some environments still report them;
            # at the end of the episode every final observation is kept (it is the next observation to learn from).
            self._obs = {agent: value for agent, value in self._obs.items() if not done.get(agent, False)}
        return reward, terminated

    def _cut_short(self) -> bool:
        return self._truncated
