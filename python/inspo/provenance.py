"""What a result records about where it came from: the package version, the source commit, and paths that name no
folder of the machine that made them."""
from __future__ import annotations

import functools
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

# The checkout this module was imported from (for an installed wheel: site-packages, which holds no .git).
_SOURCE = Path(__file__).resolve().parents[2]


def portable_path(path: str | os.PathLike) -> str:
    """``path`` relative to the source checkout or to the working directory when it lies inside one of them;
    otherwise its name alone (results record content digests beside paths, which identify the files). A result
    committed to a repository so names no folder of the machine that made it."""
    resolved = Path(path).resolve()
    for base in (_SOURCE, Path.cwd().resolve()):
        if resolved.is_relative_to(base):
            return resolved.relative_to(base).as_posix()
    return resolved.name


@functools.cache
def package_info() -> dict[str, Any]:
    """``{"version": ..., "commit": ...}``: the installed inspo's version and, when it was imported from a git
    checkout, that checkout's commit (with ``+dirty`` for uncommitted changes); None where unknown."""
    try:
        version = metadata.version("inspo")
    except metadata.PackageNotFoundError:
        version = None
    commit = None
    if (_SOURCE / ".git").exists():
        try:
            run = functools.partial(subprocess.run, cwd=_SOURCE, capture_output=True, text=True, timeout=10)
            head = run(["git", "rev-parse", "HEAD"])
            if head.returncode == 0:
                dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
                commit = head.stdout.strip() + ("+dirty" if dirty else "")
        except (OSError, subprocess.TimeoutExpired):
            pass
    return {"version": version, "commit": commit}
