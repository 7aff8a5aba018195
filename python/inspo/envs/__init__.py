"""Multi-agent environments with one SMAC-shaped interface (`inspo.envs.base`), and the registry behind `make`.

The interface (`EnvInfo`, `MultiAgentEnv`, `Observation`, `StepResult`) is defined in `inspo.envs.base` and
re-exported here; the concrete families are `inspo.envs.matrix`, `inspo.envs.bridge`, `inspo.envs.smax`,
`inspo.envs.smac` and `inspo.envs.pettingzoo` (the last three imported only when one of their environments is
made). `register` adds environments of one's own: a plain name, or a family `prefix:` whose factory receives the
rest of the id.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from inspo.envs.base import EnvInfo, MultiAgentEnv, Observation, RecordedEnv, StepResult
from inspo.envs.bridge import BridgeEnv, bridge_optimum
from inspo.envs.matrix import MatrixGame, make_mne, make_xor

__all__ = ["EnvInfo", "MultiAgentEnv", "Observation", "RecordedEnv", "StepResult", "check_known", "known_envs", "make",
           "optimum", "register"]


def _smax() -> type[MultiAgentEnv]:
    # Imported here: the SMAX module is light, but keeping the families out of this module's import keeps
    # `inspo.envs` free of their optional dependencies by construction.
    from inspo.envs.smax import SMAXEnv

    return SMAXEnv


def _smac() -> type[MultiAgentEnv]:
    from inspo.envs.smac import SMACEnv

    return SMACEnv


def _smacv2() -> Callable[..., MultiAgentEnv]:
    from inspo.envs.smac import SMACEnv

    return functools.partial(SMACEnv, version=2)


def _pettingzoo() -> type[MultiAgentEnv]:
    from inspo.envs.pettingzoo import PettingZooEnv

    return PettingZooEnv


_ENVS: dict[str, Callable[..., MultiAgentEnv]] = {
    "xor": make_xor,
    "mne": make_mne,
    "bridge-alberdice": BridgeEnv,
}
"""Plain names -> constructor(**options)."""

_PREFIXED: dict[str, Callable[[], Callable[..., MultiAgentEnv]]] = {
    "smax": _smax,  # JaxMARL's SMAX: pip install 'inspo[smax]'
    "smac": _smac,  # StarCraft II with oxwhirl/smac, installed from its repository
    "smacv2": _smacv2,  # StarCraft II with oxwhirl/smacv2 (no module-name collision with SMAC3)
    "pettingzoo": _pettingzoo,  # any PettingZoo ParallelEnv module: pip install 'inspo[pettingzoo]'
}
"""`prefix:<map>` families -> a function returning their constructor(map_name, **options)."""


def register(name: str, factory: Callable[..., MultiAgentEnv], *, overwrite: bool = False) -> None:
    """Make `factory` available to `make` (and so to `inspo datasets generate`, `train` and `evaluate`).

    A plain `name` (e.g. `"my-game"`) is built as `factory(**options)`. A name ending in `:` (e.g. `"mygames:"`)
    registers a family: `make("mygames:level1", **options)` calls `factory("level1", **options)`. The environment
    must report `info.name` equal to the id it was made from and `options` that rebuild it, since datasets and
    checkpoints record both. Registering a name again needs `overwrite=True`.
    """
    if not callable(factory):
        raise TypeError(f"register({name!r}, ...): factory must be callable, got {type(factory).__name__}")
    prefix, sep, rest = name.partition(":")
    if not prefix or rest or any(c.isspace() for c in name):
        raise ValueError(f"cannot register environment name {name!r}: expected a plain name such as 'my-game' or "
                         f"a family prefix ending in ':' such as 'mygames:'")
    table, key = (_PREFIXED, prefix) if sep else (_ENVS, name)
    if key in table and not overwrite:
        raise ValueError(f"environment {name!r} is already registered; pass overwrite=True to replace it")
    # Families are stored as loaders of their constructor (the built-in ones import their module on first use).
    table[key] = (lambda: factory) if sep else factory


def known_envs() -> list[str]:
    """Names accepted by `make` (prefixed families shown as `prefix:<map>`)."""
    return sorted(_ENVS) + [f"{p}:<map>" for p in sorted(_PREFIXED)]


def check_known(name: str) -> None:
    """Raise ValueError unless ``name`` is an environment name that :func:`make` accepts (without building it)."""
    prefix, sep, map_name = name.partition(":")
    if name in _ENVS or (sep and prefix in _PREFIXED and map_name):
        return
    if sep and prefix in _PREFIXED:
        raise ValueError(f"environment name '{name}' lacks a map: expected '{prefix}:<map>'")
    raise ValueError(f"unknown environment '{name}'; known: {', '.join(known_envs())}")


def _check_options(name: str, constructor: Callable[..., MultiAgentEnv], options: dict[str, Any], skip: int) -> None:
    """Refuse options that ``constructor`` (after its first ``skip`` parameters) does not take, naming the ones it
    does; a constructor taking ``**options`` passes them on and accepts any."""
    params = list(inspect.signature(constructor).parameters.values())[skip:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"environment '{name}' has no option {', '.join(map(repr, unknown))}; its options: "
                         f"{', '.join(known) or 'none'}")


def make(name: str, **options: Any) -> MultiAgentEnv:
    """Build an environment by name, e.g. `make("bridge-alberdice", episode_limit=20)`. An unknown name or option
    is a ValueError naming it and what is known."""
    check_known(name)
    if name in _ENVS:
        _check_options(name, _ENVS[name], options, skip=0)
        return _ENVS[name](**options)
    prefix, _, map_name = name.partition(":")
    constructor = _PREFIXED[prefix]()
    _check_options(name, constructor, options, skip=1)  # map_name
    return constructor(map_name, **options)


def optimum(env: MultiAgentEnv) -> float | None:
    """The optimal expected undiscounted return of ``env`` where it is known exactly, else None."""
    if isinstance(env, MatrixGame):
        return float(env.payoff.max()) * env.info.episode_limit
    if isinstance(env, BridgeEnv):
        return bridge_optimum(env.info.episode_limit)
    return None
