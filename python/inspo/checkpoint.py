"""Checkpoint files: written atomically (temporary file, fsync, rename) and verified by a SHA-256 header.

Layout: one ASCII line ``inspo-checkpoint sha256=<hex>\\n`` followed by the ``torch.save`` payload. A file cut short
or altered fails the checksum instead of loading half a state.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from inspo.errors import InspoError

_MAGIC = b"inspo-checkpoint sha256="


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


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` (tensors, dicts, lists, numbers, strings) as a verified checkpoint."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    payload = buf.getvalue()
    header = _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    atomic_write(path, lambda fh: (fh.write(header), fh.write(payload)))


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Read a checkpoint written by :func:`save`, refusing it if the checksum does not match."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raw = path.read_bytes()
    header, sep, payload = raw.partition(b"\n")
    if not sep or not header.startswith(_MAGIC):
        raise CheckpointError(f"{path} is not an inspo checkpoint (missing its '{_MAGIC.decode()}' header)")
    expected = header[len(_MAGIC):].decode(errors="replace")
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated: sha256 {actual}, header says {expected}")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch's unpickler raises many types; all mean "not loadable"
        raise CheckpointError(f"checkpoint {path} passes its checksum but its payload cannot be loaded: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def sections(obj: Any, path: str | os.PathLike, required: tuple[str, ...], what: str) -> dict[str, Any]:
    """``obj`` (read from checkpoint ``path``) as a dict that holds every key in ``required``; CheckpointError naming
    the missing ones and what the file should have been (``what``, e.g. "a policy checkpoint (final.pt)")."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}; expected {what}")
    missing = [key for key in required if key not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the section(s) {missing} of {what} (it has {sorted(obj)})")
    return obj
