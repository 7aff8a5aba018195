"""What a result records about where it came from: the package version, the source commit, and paths that name no
folder of the machine that made them."""
from __future__ import annotations

import functools
import os
import platform
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
def package_version() -> str:
    """inspo's version: the installed package's metadata, else (run from a checkout that was never installed) the
    ``version`` of the checkout's ``pyproject.toml``: the one place the version is written."""
    try:
        return metadata.version("inspo")
    except metadata.PackageNotFoundError:
        pass
    try:
        import tomllib  # Python >= 3.11; older Pythons run inspo installed, with metadata
        with (_SOURCE / "pyproject.toml").open("rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])
    except (ImportError, OSError, KeyError, ValueError):
        return "0+unknown"


@functools.cache
def package_info() -> dict[str, Any]:
    """``{"version": ..., "commit": ...}``: inspo's version (:func:`package_version`) and, when it was imported
    from a git checkout, that checkout's commit (with ``+dirty`` for uncommitted changes; None elsewhere)."""
    version = package_version()
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


@functools.cache
def machine_info() -> dict[str, Any]:
    """What a result records of the machine that made it: the CPU's model name (``/proc/cpuinfo``, else
    ``platform.processor()``), its logical CPU count and the platform. SMAX data and timings depend on it."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform()}
