"""Progress of long commands on stderr: a tqdm bar on a terminal, a plain line every half minute elsewhere.

Off a terminal (nohup, SLURM, CI logs) a redrawn bar would be a stream of carriage returns, and tqdm prints nothing
there by default (``disable=None``); so :class:`ProgressBar` writes one plain line (done/total, elapsed, rate, the
estimated time left and the caller's note) every ``interval`` seconds instead. A command that ends before the first
interval prints nothing off a terminal, and one that printed lines ends with a last one.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

__all__ = ["PLAIN_INTERVAL", "ProgressBar"]

PLAIN_INTERVAL = 30.0
"""Seconds between two plain progress lines off a terminal."""


class ProgressBar:
    """Progress of ``total`` units of work labelled ``label`` on ``stream`` (default: stderr); ``enabled=False``
    silences it. A tqdm bar when the stream is a terminal, else a plain line every ``interval`` seconds."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream: TextIO | None = None,
                 interval: float = PLAIN_INTERVAL) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.label, self.interval = max(total, 1), label, interval
        self.enabled = enabled
        isatty = getattr(self.stream, "isatty", None)
        self.terminal = bool(isatty is not None and isatty())
        self.start = self.last_line = time.perf_counter()
        self.done, self.note, self.lines = 0, "", 0
        self._bar: tqdm | None = None
        if enabled and self.terminal:
            self._bar = tqdm(total=self.total, desc=label, file=self.stream, ascii=" #", leave=True,
                             dynamic_ncols=True, mininterval=0.2,
                             bar_format="{desc} [{bar:24}] {n_fmt}/{total_fmt} {elapsed}<{remaining} "
                                        "{rate_fmt}  {postfix}")

    def update(self, done: int, note: str = "") -> None:
        """``done`` units of the total are finished (an absolute count, not an increment); ``note`` says what."""
        if not self.enabled:
            return
        self.done, self.note = done, note
        if self._bar is not None:
            self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(done - self._bar.n)  # tqdm redraws at most every mininterval
            return
        now = time.perf_counter()
        if now - self.last_line >= self.interval:
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = tqdm.format_interval((self.total - self.done) / rate) if 0 < rate and self.done < self.total else "-"
        self.stream.write(f"{self.label}: {self.done}/{self.total} ({100 * self.done / self.total:.0f}%), "
                          f"{tqdm.format_interval(elapsed)} elapsed, {rate:.3g}/s, eta {eta}  {self.note}\n")
        self.stream.flush()
        self.last_line, self.lines = now, self.lines + 1

    def close(self) -> None:
        """End the bar (a newline on a terminal; a last plain line if any was printed). Closing twice is allowed."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self.lines:
            self._line(time.perf_counter())
        self.enabled = False
