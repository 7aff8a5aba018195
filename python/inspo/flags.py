"""Command-line flags from a dataclass, and the dataclass back from the parsed flags (or from a JSON mapping).

Every field of the dataclass becomes one flag, named after it (``--lr-policy`` for ``lr_policy``):

- ``bool``: ``--name`` / ``--no-name`` (:class:`argparse.BooleanOptionalAction`);
- ``X | None``: parsed as ``X``;
- ``Literal[...]``, or a field whose metadata has ``choices``: ``choices=`` of the flag;
- ``dict``: repeatable ``KEY=VALUE`` items (VALUE parsed as JSON, else kept as a string), merged into the mapping;
- ``list[int]`` / ``list[float]``: one comma-separated value (``0,3,5``; integer items may be inclusive ranges,
  ``0-7``, see :func:`parse_list`);
- a nested dataclass (e.g. ``TrainConfig.icq``): one flag per field of it, flattened as ``<outer>_<inner>``
  (``--icq-critic-temp``), or as the inner field's metadata ``flat_name`` (names that predate the nesting).

Field metadata may also set ``help`` (shown with the default) and ``flag`` (the option string). Every flag defaults
to None, i.e. "not given", so that a preset or a config file below the flags keeps its values.

The flat names are also accepted as keys of a mapping (:func:`from_values`), so that configs written before a field
moved into a nested dataclass still load. Standard library only: the config modules import it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal

__all__ = ["Flag", "add_flags", "check_types", "flags_of", "flatten", "from_values", "nest", "parse_list",
           "values_from_args"]

INT_RANGE = (-(2**63), 2**63 - 1)
"""Integer fields hold 64-bit values: the torch and numpy code below them cannot take more."""


@dataclasses.dataclass(frozen=True)
class Flag:
    """One command-line flag of a dataclass field (``path``: the field, and the inner field of a nested one)."""

    name: str  # flat name, also the argparse ``dest``
    path: tuple[str, ...]
    kind: type
    default: Any
    choices: tuple[Any, ...] | None
    help: str | None
    option: str
    item: type | None = None  # the item type of a list field


def _nested(hint: Any) -> type | None:
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _kind(hint: Any) -> tuple[type, tuple[Any, ...] | None]:
    """The type a flag parses and its choices, from a field's type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"cannot make a flag of the union {hint}: expected X or X | None")
        return _kind(args[0])
    if origin is Literal:
        choices = typing.get_args(hint)
        return type(choices[0]), choices
    if origin is dict or hint is dict:
        return dict, None
    if origin is list and typing.get_args(hint)[0] in (int, float):
        return list, None
    if hint in (bool, int, float, str):
        return hint, None
    raise TypeError(f"cannot make a flag of a field of type {hint}: expected bool, int, float, str, a Literal, a dict, "
                    f"list[int], list[float] or a dataclass (or X | None of those)")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _fields(cls: type, outer: str | None = None, outer_default: Any = None) -> Iterator[Flag]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = _default(f) if outer is None else getattr(outer_default, f.name)
        inner = _nested(hints[f.name])
        if inner is not None:
            if outer is not None:
                raise TypeError(f"{cls.__name__}.{f.name}: dataclasses nest one level deep, not two")
            yield from _fields(inner, f.name, default)
            continue
        kind, choices = _kind(hints[f.name])
        choices = tuple(f.metadata["choices"]) if "choices" in f.metadata else choices
        name = f.name if outer is None else f.metadata.get("flat_name", f"{outer}_{f.name}")
        option = f.metadata.get("flag", "--" + name.replace("_", "-"))
        path = (f.name,) if outer is None else (outer, f.name)
        item = typing.get_args(_without_none(hints[f.name]))[0] if kind is list else None
        yield Flag(name, path, kind, default, choices, f.metadata.get("help"), option, item)


def _without_none(hint: Any) -> Any:
    """``X`` of the hint ``X | None`` (other hints as they are)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def flags_of(cls: type) -> list[Flag]:
    """The flags of dataclass ``cls``, in field order (a nested dataclass's fields in its place)."""
    return list(_fields(cls))


def add_flags(parser: argparse.ArgumentParser, cls: type, required: tuple[str, ...] = (),
              exclude: tuple[str, ...] = ()) -> None:
    """Add one flag per field of dataclass ``cls`` to ``parser`` (see the module docstring), but for the fields
    named in ``exclude``; the fields named in ``required`` must be given."""
    for flag in flags_of(cls):
        if flag.name in exclude:
            continue
        needed = flag.name in required
        note = "" if needed or flag.default is dataclasses.MISSING else f"default: {flag.default}"
        if flag.kind is dict:
            note = "repeatable" + (f"; {note}" if note and flag.default else "")
        text = "; ".join(t for t in (flag.help, note) if t).replace("%", "%%") or None
        common = {"dest": flag.name, "default": None, "help": text}
        if flag.kind is dict:
            parser.add_argument(flag.option, action="append", metavar="KEY=VALUE", required=needed, **common)
        elif flag.kind is bool:
            parser.add_argument(flag.option, action=argparse.BooleanOptionalAction, required=needed, **common)
        elif flag.kind is list:
            parser.add_argument(flag.option, type=_list_type(flag.option, flag.item), required=needed,
                                metavar=flag.name.upper(), **common)
        else:
            parser.add_argument(flag.option, type=flag.kind, choices=flag.choices, required=needed,
                                metavar=None if flag.choices else flag.name.upper(), **common)


def parse_list(text: str, item: type) -> list[Any]:
    """The comma-separated values of ``text`` as ``item`` (int or float): ``0,3,5``; integer items may also be
    inclusive ranges, ``0-7`` (0 to 7) or ``0-3,8``. ValueError naming the bad item and the expected forms."""
    forms = "comma-separated integers or ranges, e.g. 0-7 or 0,3,5" if item is int else \
        "comma-separated numbers, e.g. 0.1,0.3,1"
    out: list[Any] = []
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        try:
            if item is int and dash and low:
                first, last = int(low), int(high)
                if last < first:
                    raise ValueError(f"the range {part!r} is empty: its end {last} is below its start {first}")
                out.extend(range(first, last + 1))
            else:
                out.append(item(part))
        except ValueError as exc:
            reason = str(exc) if "is empty" in str(exc) else f"{part!r} is not one"
            raise ValueError(f"expected {forms}, got {text!r}: {reason}") from None
    return out


def _list_type(option: str, item: type) -> Any:
    """argparse's ``type=`` of a list flag: :func:`parse_list`, its error as argparse reports it."""
    def parse(text: str) -> list[Any]:
        try:
            return parse_list(text, item)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = option
    return parse


def parse_key_values(option: str, items: list[str] | None) -> dict[str, Any]:
    """Repeated ``KEY=VALUE`` items of ``option`` as a mapping; VALUE is parsed as JSON, else kept as a string."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _as_dict(value: Any) -> dict[str, Any]:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value)


def nest(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with the flat names of nested fields (``icq_critic_temp``) moved into their nested mapping
    (``{"icq": {"critic_temp": ...}}``), on top of what that mapping already holds. Other keys are kept as given."""
    flat = {flag.name: flag.path for flag in flags_of(cls) if len(flag.path) == 2}
    top = {f.name for f in dataclasses.fields(cls)}
    out = {k: v for k, v in values.items() if k in top or k not in flat}
    for key, value in values.items():
        if key in flat and key not in top:
            outer, inner = flat[key]
            out[outer] = {**_as_dict(out.get(outer, {})), inner: value}
    return out


def flatten(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`nest`: every field of a nested mapping under its flat name."""
    out = dict(values)
    for flag in flags_of(cls):
        if len(flag.path) == 2 and flag.path[0] in values:
            out.pop(flag.path[0], None)
            nested = _as_dict(values[flag.path[0]])
            if flag.path[1] in nested:
                out[flag.name] = nested[flag.path[1]]
    return out


def values_from_args(cls: type, args: argparse.Namespace, values: Mapping[str, Any] | None = None,
                     exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """``values`` (e.g. a preset and a JSON config, flat names allowed) with the flags given in ``args`` on top,
    as a mapping for :func:`from_values`; the fields named in ``exclude`` have no flags there (``args`` may hold
    other options of their names). A dict field's ``KEY=VALUE`` items update the mapping below them."""
    out = nest(cls, values or {})
    for flag in flags_of(cls):
        given = None if flag.name in exclude else getattr(args, flag.name, None)
        if given is None:
            continue
        if flag.kind is dict:
            given = {**(_get(out, flag.path) or {}), **parse_key_values(flag.option, given)}
        _set(out, flag.path, given)
    return out


def _get(values: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if key not in values:
            return None
        values = _as_dict(values[key]) if dataclasses.is_dataclass(values[key]) else values[key]
    return values


def _set(values: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    if len(path) == 1:
        values[path[0]] = value
    else:
        values[path[0]] = {**_as_dict(values.get(path[0], {})), path[1]: value}


def from_values(cls: type, values: Mapping[str, Any], what: str = "config") -> Any:
    """``cls`` built from a mapping (e.g. JSON, or :func:`values_from_args`): nested mappings become the nested
    dataclasses and flat names of nested fields are accepted (:func:`nest`). An unknown key is an error, not
    silently ignored; the message calls the mapping ``what``."""
    values = nest(cls, values)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        flat = sorted(f.name for f in flags_of(cls) if len(f.path) == 2)
        also = f" (or, for nested fields, {flat})" if flat else ""
        raise ValueError(f"unknown {what} keys {unknown}; known keys: {sorted(known)}{also}")
    built = {}
    for key, value in values.items():
        inner = _nested(hints[key])
        if inner is not None and isinstance(value, Mapping):
            value = from_values(inner, value, f"{what}.{key}")
        built[key] = value
    return cls(**built)


def _type_error(hint: Any, value: Any) -> str | None:
    """Why ``value`` does not fit the type hint ``hint`` (None when it does). ``bool`` is not an ``int`` (JSON's
    ``true`` where a count belongs is a mistake), an ``int`` is a ``float``, floats must be finite."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        reasons = [_type_error(a, value) for a in options if a is not type(None)]
        return None if None in reasons else reasons[0]
    if origin is Literal:
        return None if value in typing.get_args(hint) else f"one of {list(typing.get_args(hint))}"
    if origin is dict or hint is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            return "a mapping with string keys"
        inner = typing.get_args(hint)[1] if typing.get_args(hint) else Any
        reasons = [] if inner is Any else [_type_error(inner, v) for v in value.values()]
        bad = next((r for r in reasons if r is not None), None)
        return None if bad is None else f"a mapping with string keys whose values are each {bad}"
    if origin is list:
        if not isinstance(value, list):
            return "a list"
        bad = next((r for r in (_type_error(typing.get_args(hint)[0], v) for v in value) if r is not None), None)
        return None if bad is None else f"a list whose items are each {bad}"
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return "an integer"
        return None if INT_RANGE[0] <= value <= INT_RANGE[1] else "a 64-bit integer"
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "a number"
        return None if math.isfinite(value) else "a finite number"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    nested = _nested(hint)
    if nested is not None:
        return None if isinstance(value, nested) else f"a {nested.__name__} (or a mapping of its fields)"
    raise TypeError(f"cannot check a value against the type {hint}")


def check_types(obj: Any, what: str) -> None:
    """Raise ValueError naming the first field of dataclass instance ``obj`` whose value does not fit its type hint
    or is not one of its metadata's ``choices`` (``what.field``: found, expected); nested dataclasses are checked by
    their own ``validate``."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        expected = _type_error(hints[f.name], value)
        if expected is not None:
            raise ValueError(f"{what}.{f.name} must be {expected}, got {_show(value)} ({type(value).__name__})")
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ValueError(f"{what}.{f.name} must be one of {tuple(f.metadata['choices'])}, got {value!r}")


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
