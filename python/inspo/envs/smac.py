"""SMAC and SMACv2 (StarCraft II: oxwhirl/smac, oxwhirl/smacv2) behind the project's environment interface.

oxwhirl/smac is installed by the user from its repository (`pip install git+https://github.com/oxwhirl/smac.git`)
together with the StarCraft II game and its maps. The package called `smac` on the package index is SMAC3, a
hyper-parameter optimiser (used by `inspo tune`), a different project that installs the same module name; this
module recognises it and says so. SMACv2 installs the module `smacv2` and collides with nothing, so real StarCraft
and `inspo tune` can share one environment through `smacv2:<map>`; SMACv1 maps need oxwhirl/smac in a virtual
environment of its own (without the `tune` extra).

Mapping: `get_env_info()` gives the shapes (`n_agents`, `obs_shape`, `state_shape`, `n_actions`,
`episode_limit`). SMAC's `step` returns `terminated=True` also when its step limit ends the episode, flagged by
`info["episode_limit"]`; that case is reported here as `truncated`. `info["won"]` is SMAC's `battle_won`.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from inspo.envs.base import EnvInfo, MultiAgentEnv, Observation
from inspo.errors import MissingExtra

__all__ = ["SC2Game", "SMACEnv", "env_info_from_smac"]

INSTALL_HINT_V2 = ("install oxwhirl/smacv2 from its repository, pip install git+https://github.com/oxwhirl/smacv2.git, "
                   "and StarCraft II with the SMAC maps (SC2PATH names the game folder)")
INSTALL_HINT = ("install oxwhirl/smac from its repository, pip install git+https://github.com/oxwhirl/smac.git, "
                "and StarCraft II with the SMAC maps (see that repository's README; SC2PATH names the game folder)")


class SC2Game(Protocol):
    """The part of `smac.env.StarCraft2Env` that the adapter uses."""

    def get_env_info(self) -> Mapping[str, Any]: ...
    def reset(self) -> Any: ...
    def get_obs(self) -> Sequence[np.ndarray]: ...
    def get_state(self) -> np.ndarray: ...
    def get_avail_actions(self) -> Sequence[Sequence[int]]: ...
    def step(self, actions: Sequence[int]) -> tuple[float, bool, Mapping[str, Any]]: ...
    def close(self) -> None: ...


def _starcraft2_env() -> type:
    """`smac.env.StarCraft2Env`, or an ImportError that explains what is missing (or installed instead)."""
    try:
        from smac.env import StarCraft2Env
    except ImportError as exc:
        if importlib.util.find_spec("smac") is None:
            raise MissingExtra(f"SMAC environments need oxwhirl/smac, which is not installed; {INSTALL_HINT}") from exc
        try:
            dist = importlib.metadata.distribution("smac")
            found = f"'{dist.metadata['Name']}' {dist.version} ({dist.metadata['Summary']})"
        except importlib.metadata.PackageNotFoundError:
            found = "a module named 'smac'"
        raise MissingExtra(
            f"the installed package named 'smac' is {found}, not oxwhirl/smac, the StarCraft Multi-Agent "
            f"Challenge (it lacks smac.env.StarCraft2Env). SMAC3 (the hyper-parameter optimiser on the package "
            f"index, used by 'inspo tune') and oxwhirl/smac install the same module name, so use them in separate "
            f"virtual environments; {INSTALL_HINT}"
        ) from exc
    return StarCraft2Env


def _smacv2_game(map_name: str, **options: Any) -> SC2Game:
    """SMACv2's game for `map_name`: with a `capability_config` option (SMACv2's procedurally generated scenarios,
    e.g. `10gen_protoss`) its capability wrapper, otherwise its `StarCraft2Env`."""
    try:
        if "capability_config" in options:
            from smacv2.env.starcraft2.wrapper import StarCraftCapabilityEnvWrapper as game
        else:
            from smacv2.env import StarCraft2Env as game
    except ImportError as exc:
        raise ImportError(f"smacv2:<map> environments need oxwhirl/smacv2, which is not installed; {INSTALL_HINT_V2}"
                          ) from exc
    return game(map_name=map_name, **options)


def env_info_from_smac(name: str, env_info: Mapping[str, Any]) -> EnvInfo:
    """The `EnvInfo` of a SMAC game from its `get_env_info()` dictionary."""
    keys = {"n_agents": "n_agents", "obs_dim": "obs_shape", "state_dim": "state_shape", "n_actions": "n_actions",
            "episode_limit": "episode_limit"}
    missing = sorted(key for key in keys.values() if key not in env_info)
    if missing:
        raise ValueError(f"{name}: get_env_info() lacks {missing}; it has {sorted(env_info)}")
    return EnvInfo(name, **{field: int(env_info[key]) for field, key in keys.items()})


class SMACEnv(MultiAgentEnv):
    """`smac:<map>` (``version=1``, oxwhirl/smac) or `smacv2:<map>` (``version=2``, oxwhirl/smacv2): a StarCraft II
    micromanagement map.

    `sc2_options` go to `StarCraft2Env(map_name=..., **sc2_options)` (e.g. `seed`, `difficulty`; for SMACv2 a
    `capability_config` selects its capability wrapper for the generated scenarios); the game's
    randomness is seeded there, so `reset(seed=...)` cannot reseed it. `game` replaces the StarCraft II
    environment by any object with the same methods (see `SC2Game`), e.g. in tests without the game.
    """

    def __init__(self, map_name: str, *, game: SC2Game | None = None, version: int = 1, **sc2_options: Any) -> None:
        if version not in (1, 2):
            raise ValueError(f"SMAC version must be 1 (oxwhirl/smac) or 2 (oxwhirl/smacv2), got {version!r}")
        if game is None:
            game = (_starcraft2_env()(map_name=map_name, **sc2_options) if version == 1
                    else _smacv2_game(map_name, **sc2_options))
        self._game = game
        info = env_info_from_smac(f"{'smac' if version == 1 else 'smacv2'}:{map_name}", game.get_env_info())
        super().__init__(info, sc2_options)
        self._won = False

    def close(self) -> None:
        """Shut the game down (SMAC runs StarCraft II in a separate process)."""
        self._game.close()

    def _reset(self, rng: np.random.Generator) -> None:
        self._game.reset()
        self._won = False

    def _observe(self) -> Observation:
        obs = np.asarray(self._game.get_obs(), dtype=np.float32)
        state = np.asarray(self._game.get_state(), dtype=np.float32)
        avail = np.asarray(self._game.get_avail_actions()) != 0
        info = self._info
        expected = ((info.n_agents, info.obs_dim), (info.state_dim,), (info.n_agents, info.n_actions))
        for what, array, shape in zip(("obs", "state", "avail"), (obs, state, avail), expected):
            if array.shape != shape:
                raise RuntimeError(f"{info.name}: the game returned {what} of shape {array.shape}; its "
                                   f"get_env_info() promised {shape}")
        return obs, state, avail

    def _transition(self, actions: np.ndarray, at_limit: bool) -> tuple[float, bool]:
        reward, terminated, step_info = self._game.step(actions.tolist())
        self._won = bool(step_info.get("battle_won", False))
        # SMAC also sets `terminated` when its step limit ends the episode; that is a truncation here.
        return float(reward), bool(terminated) and not step_info.get("episode_limit", False)

    def _extra_info(self) -> dict[str, Any]:
        return {"won": self._won}
