"""Multi-agent environments with one SMAC-shaped interface (`inspo.envs.base`), and the registry behind `make`.

The interface (`EnvInfo`, `MultiAgentEnv`, `Observation`, `StepResult`) is defined in `inspo.envs.base` and
re-exported here; the concrete families are `inspo.envs.matrix`, `inspo.envs.bridge`, `inspo.envs.smax` and
`inspo.envs.smac` (the last two imported only when one of their environments is made).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from inspo.envs.base import EnvInfo, MultiAgentEnv, Observation, StepResult
from inspo.envs.bridge import BridgeEnv, bridge_optimum
from inspo.envs.matrix import MatrixGame, make_mne, make_xor

__all__ = ["EnvInfo", "MultiAgentEnv", "Observation", "StepResult", "check_known", "make", "known_envs", "optimum"]


def _smax() -> type[MultiAgentEnv]:
    # Imported here: the SMAX module is light, but keeping the families out of this module's import keeps
    # `inspo.envs` free of their optional dependencies by construction.
    from inspo.envs.smax import SMAXEnv

    return SMAXEnv


def _smac() -> type[MultiAgentEnv]:
    from inspo.envs.smac import SMACEnv

    return SMACEnv


_ENVS: dict[str, Callable[..., MultiAgentEnv]] = {
    "xor": make_xor,
    "mne": make_mne,
    "bridge-alberdice": BridgeEnv,
}
"""Plain names -> constructor(**options)."""

_PREFIXED: dict[str, Callable[[], Callable[..., MultiAgentEnv]]] = {
    "smax": _smax,  # JaxMARL's SMAX: pip install 'inspo[smax]'
    "smac": _smac,  # StarCraft II with oxwhirl/smac, installed from its repository
}
"""`prefix:<map>` families -> a function returning their constructor(map_name, **options)."""


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
