"""Stopping a training run by SIGINT/SIGTERM after the step it is in, so that the state of that step is saved."""
from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["StopRequests", "TrainingInterrupted", "left_behind"]


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped a run after its current step; the message says where it can resume from."""


class StopRequests:
    """SIGINT/SIGTERM (main thread only): until ``deferred`` is set they raise :class:`TrainingInterrupted` at once
    (before the training loop there is no state worth saving, and loading a dataset can take long); then they set a
    flag that the loop checks between steps, so that it can save the state of the step it finished."""

    def __init__(self, before: str) -> None:
        self.signal: int | None = None
        self.deferred = False
        self._before = before  # what an immediate stop leaves behind, for its message
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.deferred:
            raise TrainingInterrupted(f"stopped by {signal.Signals(signum).name} before training started; "
                                      f"{self._before}")
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def left_behind(out: str | None, resume: bool) -> str:
    """What a run in ``out`` (``resume``: continuing the run there) leaves behind if a signal stops it before its
    first step: the end of :class:`StopRequests`' message."""
    if out is None:
        return "nothing was saved (no --out)"
    if resume:
        return f"{out} is unchanged; resume with: inspo train --resume {out}"
    return f"no run was written to {out}"
