"""Checkpoint files: written atomically (temporary file, fsync, rename) and verified by a SHA-256 digest.

Layout (version 2): a plain ``torch.save`` file, so ``torch.load(path, weights_only=True)`` reads it without inspo,
holding ``{"format": "inspo-checkpoint", "version": 2, "sha256": <hex>, "state": <the saved object>}``. The digest
is over the content of ``state`` (:func:`content_digest`: its structure, every number and string, every tensor's
dtype, shape and bytes), not over the file's bytes, which the digest is part of. A file cut short does not unzip;
an altered tensor or value fails the digest: either way :func:`load` refuses it instead of loading half a state.

Version 1 files (one ASCII line ``inspo-checkpoint sha256=<hex of the payload>`` before the ``torch.save`` payload)
still load: the SMAX policies shipped in ``data/smax_policies`` are such files, and their digests are recorded.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from inspo.errors import InspoError

_MAGIC = b"inspo-checkpoint sha256="
"""The first bytes of a version 1 file (the header line)."""
FORMAT = "inspo-checkpoint"
VERSION = 2


class CheckpointError(InspoError, RuntimeError):
    """A checkpoint file is missing, truncated, corrupted or not an inspo checkpoint (a RuntimeError too, as it was
    before the project had its own error type)."""


def atomic_write(path: str | os.PathLike, write: Callable[[Any], Any]) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make results unreadable to other users
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename, so that a reader never sees a half-written file."""
    atomic_write(path, lambda fh: fh.write(text.encode()))


def content_digest(obj: Any) -> str:
    """SHA-256 of the content of ``obj``: dicts (in order), lists, tuples, strings, bytes, numbers, None, torch
    dtypes, sizes and devices, and tensors (dtype, shape and bytes, wherever they live). TypeError naming any other
    type: a checkpoint holds only what ``torch.load(weights_only=True)`` reads back."""
    h = hashlib.sha256()

    def feed(tag: bytes, data: bytes) -> None:
        # Tag and length before the data: distinct structures never hash the same byte stream.
        h.update(tag + len(data).to_bytes(8, "little") + data)

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            feed(b"T", f"{t.dtype}{list(t.shape)}".encode())
            feed(b"B", t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            feed(b"D", str(len(x)).encode())
            for key, value in x.items():
                walk(key)
                walk(value)
        elif isinstance(x, (list, tuple)):  # torch.Size is a tuple
            feed(b"L" if isinstance(x, list) else b"U", str(len(x)).encode())
            for item in x:
                walk(item)
        elif x is None or isinstance(x, (bool, int, float, str, torch.dtype, torch.device)):
            feed(type(x).__name__.encode(), repr(x).encode())  # repr: floats round-trip exactly
        elif isinstance(x, bytes):
            feed(b"b", x)
        else:
            raise TypeError(f"cannot save a {type(x).__name__} in a checkpoint: expected tensors, dicts, lists, "
                            f"tuples, strings, bytes, numbers or None")

    walk(obj)
    return h.hexdigest()


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` (tensors, dicts, lists, numbers, strings) as a verified checkpoint (version 2, see the module
    docstring)."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, "sha256": content_digest(obj), "state": obj}, buf)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Read a checkpoint written by :func:`save` (or a version 1 file), refusing it if its digest does not match."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raw = path.read_bytes()
    if raw.startswith(_MAGIC):
        return _load_v1(path, raw, map_location)
    if not raw.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive
        raise CheckpointError(f"{path} is not an inspo checkpoint: neither a torch.save file (a zip archive) nor "
                              f"a version 1 file (its '{_MAGIC.decode()}' header)")
    try:
        saved = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch's reader raises many types; all mean "not loadable"
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated: it cannot be loaded "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
    if not (isinstance(saved, dict) and saved.get("format") == FORMAT):
        raise CheckpointError(f"{path} is not an inspo checkpoint: a torch file without the entry "
                              f"format={FORMAT!r} (nor the '{_MAGIC.decode()}' header of version 1)")
    if saved.get("version") != VERSION:
        raise CheckpointError(f"{path} is an inspo checkpoint of version {saved.get('version')!r}; this inspo "
                              f"reads versions 1 and {VERSION}")
    actual = content_digest(saved.get("state"))
    if actual != saved.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated: the digest of its content is {actual}, "
                              f"the file records {saved.get('sha256')}")
    return saved["state"]


def _load_v1(path: Path, raw: bytes, map_location: str | torch.device) -> Any:
    """A version 1 file: the header line's digest over the payload that follows it."""
    header, sep, payload = raw.partition(b"\n")
    if not sep:
        raise CheckpointError(f"checkpoint {path} is truncated: its '{_MAGIC.decode()}' header line has no end")
    expected = header[len(_MAGIC):].decode(errors="replace")
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated: sha256 {actual}, header says {expected}")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch's unpickler raises many types; all mean "not loadable"
        raise CheckpointError(f"checkpoint {path} passes its checksum but its payload cannot be loaded: "
                              f"{type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def sections(obj: Any, path: str | os.PathLike, required: tuple[str, ...], what: str) -> dict[str, Any]:
    """``obj`` (read from checkpoint ``path``) as a dict that holds every key in ``required``; CheckpointError naming
    the missing ones and what the file should have been (``what``, e.g. "a policy checkpoint (final.pt)")."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}; expected {what}")
    missing = [key for key in required if key not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the section(s) {missing} of {what} (it has {sorted(obj)})")
    return obj
