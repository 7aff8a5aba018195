"""The search space of ``inspo tune``: which TrainConfig fields are searched, over which ranges or choices.

A searched field is a :class:`Param` (a float or integer range, on a log scale where natural) or a :class:`Choice`
(a categorical field: ``order``, ``weighting``, a bool such as ``use_rho``). Its kind follows the field's type:
``--range hidden=32:256:log`` is an integer range because ``hidden`` is an int. The base config's own value is
always in the space (a range is widened to hold it, a choice list gets it added): it is the space's default, and
SMAC3 evaluates it first.

Standard library only (ConfigSpace is imported inside :func:`configspace`), so that the CLI parses ``--range``
without the optional extra installed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from inspo import flags
from inspo.config import ORDERS, WEIGHTINGS, TrainConfig

__all__ = ["DEFAULT_PARAMS", "SPACE", "Choice", "Param", "Space", "configspace", "parse_range", "resolve_space",
           "space_from_json", "space_to_json", "trial_values"]


@dataclass(frozen=True)
class Param:
    """A numeric field's range: floats, or integers when ``integer``; sampled on a log scale when ``log``."""

    lower: float
    upper: float
    log: bool = False
    integer: bool = False


@dataclass(frozen=True)
class Choice:
    """A categorical field's values (strings, or booleans for a bool field)."""

    choices: tuple[Any, ...]


Space = dict[str, Param | Choice]
"""A search space: each searched field (by its flat name) with its range or choices."""

SPACE: Space = {
    "alpha": Param(1e-3, 10.0, log=True),
    "critic_alpha": Param(1e-3, 10.0, log=True),
    "beta": Param(0.0, 2.0),
    "lr_policy": Param(1e-5, 1e-2, log=True),
    "lr_critic": Param(1e-5, 1e-2, log=True),
    "rho_max": Param(1.0, 1e3, log=True),
    "z_max": Param(1.0, 100.0, log=True),
    "cql_alpha": Param(1e-2, 10.0, log=True),
    "icq_critic_temp": Param(1.0, 1e4, log=True),
    "hidden": Param(16, 256, log=True, integer=True),
    "batch_size": Param(32, 1024, log=True, integer=True),
    "local_critic_steps": Param(1, 8, integer=True),
    "order": Choice(ORDERS),
    "weighting": Choice(WEIGHTINGS),
    "use_rho": Choice((True, False)),
}
"""The default range (or choices) of every field ``inspo tune`` knows; ``--range`` overrides or adds one. A
method's own settings go by their flat names, as their flags do (``cql_alpha`` for ``TrainConfig.cfcql.cql_alpha``)."""

DEFAULT_PARAMS: dict[str, tuple[str, ...]] = {
    "inspo": ("alpha", "beta", "lr_policy", "lr_critic", "rho_max", "z_max"),
    "icq": ("alpha", "lr_policy", "lr_critic"),
    "omiga": ("alpha", "lr_policy", "lr_critic", "z_max"),
    "cfcql": ("lr_critic", "cql_alpha"),
    "bc": ("lr_policy",),
}
"""The fields searched for each ``algo`` when ``--params`` is not given (the continuous ones the method reads)."""

# Fields that change how a trial runs or is measured, not what it learns: searching them compares nothing.
_UNTUNABLE = ("dataset", "env_options", "seed", "out", "threads", "device", "ddp", "backend", "compile",
              "checkpoint_every", "eval_every", "eval_episodes", "eval_episode_limit", "eval_greedy")
_SIGNIFICANT = 4  # float trial values are rounded to this many significant digits, so the saved configs read well
_BOOLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _fields() -> dict[str, flags.Flag]:
    return {f.name: f for f in flags.flags_of(TrainConfig)}


def parse_range(text: str) -> tuple[str, Param | Choice]:
    """``NAME=LO:HI[:log|:linear]`` (a numeric range) or ``NAME=A,B,...`` (choices, kept as strings until
    :func:`resolve_space` reads them by the field's type). ValueError names the text and the expected forms."""
    name, sep, rest = text.partition("=")
    expected = f"expected NAME=LO:HI, NAME=LO:HI:log or NAME=A,B,..., got {text!r}"
    if not sep or not name or not rest:
        raise ValueError(expected)
    name = name.strip().replace("-", "_")
    if ":" not in rest:
        values = tuple(v.strip() for v in rest.split(",") if v.strip())
        if not values:
            raise ValueError(expected)
        return name, Choice(values)
    parts = rest.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("log", "linear")):
        raise ValueError(expected)
    try:
        lower, upper = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(expected) from None
    return name, Param(lower, upper, len(parts) == 3 and parts[2] == "log")


def _as_choice(name: str, field: flags.Flag, given: Choice, value: Any) -> Choice:
    """The choices of a categorical field, read by its type, with the base value added."""
    values: list[Any] = []
    for v in given.choices:
        if field.kind is bool and isinstance(v, str):
            if v.lower() not in _BOOLS:
                raise ValueError(f"{name}: {v!r} is not a bool; expected true or false")
            v = _BOOLS[v.lower()]
        if field.choices is not None and v not in field.choices:
            raise ValueError(f"{name}: {v!r} is not one of {field.choices}")
        if v not in values:
            values.append(v)
    if value not in values:
        values.insert(0, value)
    if len(values) < 2:
        raise ValueError(f"{name}: a categorical parameter needs at least two values, got {values}")
    return Choice(tuple(values))


def _as_range(name: str, field: flags.Flag, p: Param, value: Any) -> Param:
    """The range of a numeric field, integer for an int field, widened to hold the base value."""
    integer = field.kind is int
    if integer and not (float(p.lower).is_integer() and float(p.upper).is_integer()):
        raise ValueError(f"{name} is an integer field: its range needs integer bounds, got [{p.lower}, {p.upper}]")
    lower, upper = min(p.lower, value), max(p.upper, value)
    if not lower < upper:
        raise ValueError(f"empty range for {name}: [{lower}, {upper}]; expected LO < HI")
    if p.log and lower <= 0:
        raise ValueError(f"{name}: a log-scale range must be > 0, but it would have to hold the base value "
                         f"{value}; set {name} in the base config or give a linear --range")
    if integer:
        return Param(int(lower), int(upper), p.log, integer=True)
    return Param(float(lower), float(upper), p.log)


def resolve_space(base: TrainConfig, params: list[str] | None = None, ranges: Space | None = None) -> Space:
    """The searched fields and their ranges or choices: ``params`` (default: :data:`DEFAULT_PARAMS` of the algo),
    each with its :data:`SPACE` entry or the one in ``ranges`` (which adds its fields too). See the module
    docstring for how the base value enters the space; ValueError names a field that cannot be searched."""
    ranges = dict(ranges or {})
    names = list(params) if params else list(DEFAULT_PARAMS[base.algo])
    names += [n for n in ranges if n not in names]
    values = flags.flatten(TrainConfig, base.to_dict())
    fields = _fields()
    space: Space = {}
    for name in names:
        if name not in fields:
            raise ValueError(f"cannot tune {name!r}: not a TrainConfig field")
        field = fields[name]
        if name in _UNTUNABLE or field.kind in (dict,) or (field.kind is str and field.choices is None):
            raise ValueError(f"cannot tune {name!r}: it sets how a trial runs or is measured, not what it learns; "
                             f"expected a numeric, bool or categorical training field")
        given = ranges.get(name, SPACE.get(name))
        if given is None:
            form = "A,B,..." if field.kind in (bool, str) else "LO:HI[:log]"
            raise ValueError(f"no default range for {name!r}; give one with --range {name}={form}")
        if field.kind in (bool, str):
            if not isinstance(given, Choice):
                raise ValueError(f"{name} is categorical: give its values as --range {name}=A,B,..., "
                                 f"not a range [{given.lower}, {given.upper}]")
            space[name] = _as_choice(name, field, given, values[name])
        else:
            if not isinstance(given, Param):
                raise ValueError(f"{name} is numeric: give a range as --range {name}=LO:HI[:log], "
                                 f"not the values {','.join(map(str, given.choices))}")
            if values[name] is None:
                raise ValueError(f"cannot tune {name!r} from its unset (None) base value: set it in the base config")
            space[name] = _as_range(name, field, given, values[name])
    if not space:
        raise ValueError("nothing to tune: --params is empty")
    return space


def configspace(space: Space, base: dict[str, Any], seed: int) -> Any:
    """The ConfigSpace of ``space``, defaulting to the base config's values (``base``: its fields by flat name)."""
    from ConfigSpace import Categorical, ConfigurationSpace, Float, Integer

    cs = ConfigurationSpace(seed=seed)
    for name, p in space.items():
        if isinstance(p, Choice):
            # ConfigSpace keeps the items as given; the bools of use_rho come back as bools.
            cs.add(Categorical(name, list(p.choices), default=base[name]))
        elif p.integer:
            cs.add(Integer(name, (int(p.lower), int(p.upper)), default=int(base[name]), log=p.log))
        else:
            cs.add(Float(name, (p.lower, p.upper), default=float(base[name]), log=p.log))
    return cs


def _round(value: float) -> float:
    return float(f"{value:.{_SIGNIFICANT}g}")


def trial_values(base: dict[str, Any], proposed: dict[str, Any], space: Space) -> dict[str, Any]:
    """A trial's values as trained and saved, as plain Python values of the field's type: floats rounded to 4
    significant digits (the base value stays exact), integers as ints, choices as they are."""
    out: dict[str, Any] = {}
    for name, value in proposed.items():
        p = space[name]
        if isinstance(p, Choice):
            value = next(c for c in p.choices if c == value)  # the choice itself, not a numpy scalar of it
        elif p.integer:
            value = int(value)
        else:
            value = _round(float(value))
            if math.isclose(value, base[name], rel_tol=10 ** (1 - _SIGNIFICANT)):
                value = base[name]
        out[name] = value
    return out


def space_to_json(space: Space, base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The space as ``tune.json`` records it (with each field's default, the base value)."""
    out: dict[str, dict[str, Any]] = {}
    for name, p in space.items():
        if isinstance(p, Choice):
            out[name] = {"type": "categorical", "choices": list(p.choices), "default": base[name]}
        else:
            out[name] = {"type": "int" if p.integer else "float", "lower": p.lower, "upper": p.upper, "log": p.log,
                         "default": base[name]}
    return out


def space_from_json(saved: dict[str, dict[str, Any]]) -> Space:
    """The space ``tune.json`` records (a search from before integer and categorical parameters: all floats)."""
    space: Space = {}
    for name, p in saved.items():
        kind = p.get("type", "float")
        if kind == "categorical":
            space[name] = Choice(tuple(p["choices"]))
        else:
            space[name] = Param(p["lower"], p["upper"], p["log"], integer=kind == "int")
    return space
