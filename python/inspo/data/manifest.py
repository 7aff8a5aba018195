"""A dataset's ``manifest.json``: its schema, its own digest, and reading it back (docs/design.md section 4).

The schema is closed: every key has one type (and range), and a key that is missing, unknown or of another type
is a :class:`DatasetError` naming it. A manifest whose ``manifest_sha256`` was recomputed after an edit passes
the digest check, so the schema check is what keeps such a file from reaching the code that trusts it.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from inspo.envs import check_known
from inspo.errors import InspoError

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST", "DatasetError", "check_manifest", "manifest_digest",
           "read_manifest"]

FORMAT_NAME = "inspo-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

_INT64_MAX = 2**63 - 1  # sizes and shapes go to numpy, whose integers are 64-bit


class DatasetError(InspoError):
    """A dataset on disk or in memory is malformed, corrupted, or does not fit the environment."""


Check = Callable[[Any], bool]


def _integer(low: int) -> tuple[Check, str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= _INT64_MAX,
            f"an integer >= {low}")


def _finite_or_null(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))


def _shape(v: Any) -> bool:
    return isinstance(v, list) and all(_integer(0)[0](d) for d in v)


_STRING = (lambda v: isinstance(v, str), "a string")
_SHA256 = (lambda v: isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v),
           "64 lowercase hexadecimal digits")
_MAPPING = (lambda v: isinstance(v, dict), "a mapping")

_SPEC = {"name": _STRING, "n_agents": _integer(1), "obs_dim": _integer(0), "state_dim": _integer(0),
         "n_actions": _integer(1), "episode_limit": _integer(1)}
_ENV = {"id": _STRING, "options": _MAPPING, "spec": _SPEC}
_COUNTS = {"transitions": _integer(0), "episodes": _integer(0)}
_RETURNS = {key: (_finite_or_null, "a finite number or null") for key in ("mean", "std", "min", "max")}
_FILE = {"sha256": _SHA256, "shape": (_shape, "a list of integers >= 0"), "dtype": _STRING, "bytes": _integer(0)}
_SCHEMA: dict[str, Any] = {
    "format": (lambda v: v == FORMAT_NAME, f"'{FORMAT_NAME}'"),
    "format_version": (lambda v: v == FORMAT_VERSION and not isinstance(v, bool), f"{FORMAT_VERSION} (this version "
                                                                                   f"reads {FORMAT_VERSION})"),
    "env": _ENV,
    "counts": _COUNTS,
    "returns": _RETURNS,
    "behaviour": (lambda v: isinstance(v, (dict, str)), "a mapping or a string (the policy that collected the data)"),
    "seed": (lambda v: v is None or _integer(-_INT64_MAX - 1)[0](v), "an integer or null"),
    "source": _STRING,
    "files": None,  # file name -> _FILE, checked in check_manifest
    "manifest_sha256": _SHA256,
}
"""Key -> (check, what is expected), or the schema of a nested mapping."""


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check(value: Any, schema: Any, where: str, file: Path) -> None:
    if isinstance(schema, tuple):
        ok, expected = schema
        if not ok(value):
            raise DatasetError(f"{file}: '{where}' is {_show(value)}; expected {expected}")
        return
    if not isinstance(value, dict):
        raise DatasetError(f"{file}: '{where}' is {_show(value)}; expected a mapping with the keys {sorted(schema)}")
    missing = sorted(set(schema) - set(value))
    unknown = sorted(set(value) - set(schema))
    if missing or unknown:
        found = "; ".join(part for part in (missing and f"lacks {missing}", unknown and f"has unknown {unknown}")
                          if part)
        raise DatasetError(f"{file}: '{where}' {found}; expected the keys {sorted(schema)}")
    for key, inner in schema.items():
        if inner is not None:
            _check(value[key], inner, f"{where}.{key}" if where else key, file)


def check_manifest(manifest: Any, file: Path, known_env: bool = True) -> None:
    """Raise DatasetError naming the first key of ``manifest`` (read from ``file``) that is missing, unknown or not
    of its type and range; also, with ``known_env``, the environment id must be one :func:`inspo.envs.make`
    knows."""
    _check(manifest, _SCHEMA, "", file)
    files = manifest["files"]
    if not isinstance(files, dict):
        raise DatasetError(f"{file}: 'files' is {_show(files)}; expected a mapping of file name -> entry")
    for name, entry in files.items():
        _check(entry, _FILE, f"files.{name}", file)
    env = manifest["env"]
    if env["spec"]["name"] != env["id"]:
        raise DatasetError(f"{file}: 'env.spec.name' is {_show(env['spec']['name'])}; expected the env id "
                           f"{_show(env['id'])}")
    if not known_env:
        return
    try:
        check_known(env["id"])
    except ValueError as exc:
        raise DatasetError(f"{file}: 'env.id': {exc}") from None


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of a manifest's canonical JSON, without its own ``manifest_sha256`` entry.

    It covers what the per-file checksums do not: the environment, counts, statistics and provenance.
    """
    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_manifest(root: Path, known_env: bool = True) -> dict[str, Any]:
    """The manifest of the dataset folder ``root``, its digest and schema checked (and, with ``known_env``, that
    its environment id is known here)."""
    file = root / MANIFEST
    if not root.is_dir():
        raise DatasetError(f"dataset directory {root} does not exist")
    if not file.is_file():
        raise DatasetError(f"{file} is missing: {root} is not a dataset directory")
    try:
        manifest = json.loads(file.read_text())
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON or bad UTF-8; RecursionError: deep nesting
        raise DatasetError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DatasetError(f"{file} is not an {FORMAT_NAME} manifest (its 'format' is missing or different)")
    try:
        digest = manifest_digest(manifest)
    except ValueError as exc:  # e.g. an integer with more digits than json.dumps writes
        raise DatasetError(f"{file} cannot be hashed: {exc}") from None
    if manifest.get("manifest_sha256") != digest:
        raise DatasetError(f"{file} was modified after it was written: its content hashes to sha256 {digest}, "
                           f"its manifest_sha256 says {manifest.get('manifest_sha256')!r}")
    check_manifest(manifest, file, known_env)
    return manifest
