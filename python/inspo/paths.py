"""Checks of the folders a command will write, made before any work so that a bad ``--out`` costs nothing."""
from __future__ import annotations

import os
from pathlib import Path

from inspo.errors import InspoError

__all__ = ["check_out_dir"]


def check_out_dir(path: str | os.PathLike, flag: str = "--out") -> None:
    """Raise InspoError when the folder ``path`` (given as ``flag``) cannot be created or used: it, or the nearest
    of its parents that exists, is not a folder."""
    target = Path(path)
    for existing in (target, *target.parents):
        if existing.exists():
            if not existing.is_dir():
                where = "" if existing == target else f" beneath {existing}"
                raise InspoError(f"{flag} {target}: cannot make a folder{where}: {existing} is a file, "
                                 f"expected a folder (existing or new)")
            return
