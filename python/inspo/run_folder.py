"""A training run's output folder, claimed by one run at a time.

A run holds an exclusive lock on ``<folder>/.lock`` for as long as it works in the folder, so that a second run on
the same folder fails at once instead of silently interleaving its files with the first one's. A folder that
already holds a run is not replaced unless the caller says so (``overwrite``) or continues it (``resume``). Under
the lock, the temporaries that a checkpoint write killed half-way left behind (see
:func:`inspo.checkpoint.atomic_write`) are removed: no other process can be writing them.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["RUN_FILES", "RunFolderBusy", "claim"]

RUN_FILES = ("checkpoint.pt", "final.pt", "best.pt", "metrics.json", "checkpoint.previous.pt")
"""The files a training run writes into its folder (the last: a population member's, see
:mod:`inspo.population_training`); any of them means the folder holds a run."""

_LOCK = ".lock"


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder's lock: a run is working in it."""


@contextlib.contextmanager
def claim(folder: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
          files: tuple[str, ...] = RUN_FILES, command: str = "inspo train") -> Iterator[Path]:
    """Lock ``folder`` (created if missing) for one run, for the duration of the ``with`` block.

    Raises :class:`RunFolderBusy` when another process holds it, and ``FileExistsError`` when it already holds a
    run (one of ``files``: a run's, or a population's ``population.json``) and neither ``resume`` (continue that
    run) nor ``overwrite`` (delete its files now) is given; the error names ``command --resume``. Stale
    checkpoint-write temporaries are removed. On leaving, the lock file is removed, and so is the folder if this
    call created it and nothing was written into it (a run stopped before its first file).
    """
    path = Path(folder)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    fd = _lock(path)
    try:
        existing = [name for name in files if (path / name).exists()]
        if existing and not (resume or overwrite):
            raise FileExistsError(f"{path} already holds a run ({', '.join(existing)}); continue it with "
                                  f"`{command} --resume {path}`, replace it with --overwrite "
                                  f"(overwrite=True), or choose another --out")
        if overwrite and not resume:
            for name in existing:
                (path / name).unlink()
        for name in files:
            for stale in path.glob(f".{name}.*"):  # atomic_write's mkstemp names: .<name>.<random>
                stale.unlink(missing_ok=True)
        yield path
    finally:
        (path / _LOCK).unlink(missing_ok=True)  # while still holding it: see _lock for why that is safe
        os.close(fd)
        if created and not any(path.iterdir()):
            path.rmdir()


def _lock(folder: Path) -> int:
    """An open descriptor holding the exclusive lock on ``folder/.lock``; :class:`RunFolderBusy` if another process
    holds it."""
    lock = folder / _LOCK
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderBusy(f"run folder {folder} is in use by another run (process {holder} holds "
                                f"{lock}); wait for it to finish or choose another --out") from None
        # A holder removes the lock file before it lets go of it; had we opened the file it removed, we would
        # hold a lock nobody else can see, so lock the file that is there now instead.
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)
