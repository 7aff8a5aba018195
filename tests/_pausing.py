"""``inspo train ARGS...`` in a child process that stops itself (SIGSTOP) inside its N-th write of any
checkpoint.pt, after the new state is in the temporary file and before it is renamed over the last one: the moment a
kill must not lose the run. Tests then kill it there and resume."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PAUSING_TRAIN = r"""
import os, signal, sys
from inspo import checkpoint, cli
real, writes = checkpoint.atomic_write, []
def atomic_write(path, write):
    def write_then_pause(fh):
        write(fh)
        if path.name == "checkpoint.pt":
            writes.append(path)
            if len(writes) == int(os.environ["PAUSE_AT_WRITE"]):
                fh.flush()
                os.kill(os.getpid(), signal.SIGSTOP)
    real(path, write_then_pause)
checkpoint.atomic_write = atomic_write
sys.exit(cli.main(["train", *sys.argv[1:]]))
"""


def paused_train(write: int, *args: str) -> subprocess.Popen:
    """``inspo train ARGS`` stopped in its ``write``-th checkpoint write; fails the test if it ends before."""
    proc = subprocess.Popen([sys.executable, "-c", _PAUSING_TRAIN, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PAUSE_AT_WRITE": str(write)})
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):
        pytest.fail(f"the run ended before its checkpoint write {write}: {proc.stderr.read()}")
    return proc
