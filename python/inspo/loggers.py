"""Logs written while a run goes (``TrainConfig.logger``, see :meth:`~inspo.config.TrainConfig.loggers`): a CSV file,
TensorBoard event files, Weights & Biases.

Every log point (each evaluation, and every ``TrainConfig.log_every`` steps) is one row: ``step`` (training steps
done, behaviour cloning included: the x axis), ``iteration`` (learner iterations done, 0 before the learner
starts), then what the run measured there: losses, and at evaluations ``return``, ``return_std`` and ``win_rate``
(SMAX), with ``updates_per_second`` (the average so far). Rows hold numbers only; lists (an evaluation's
per-episode returns) stay in the curve of ``metrics.json``.

- ``csv``: ``out/progress.csv``, one line per row, flushed as it is written. A column first seen later (the
  learner's losses after behaviour cloning) rewrites the file once with the wider header. A resumed run keeps the
  rows its checkpoint knew of and drops the rows logged after it, which it logs again: no row appears twice.
- ``tensorboard``: ``out/tb/`` (``torch.utils.tensorboard``; the optional extra ``tensorboard``), the tags grouped
  as ``eval/...``, ``train/...`` and ``perf/...``. A resumed run purges the events after its checkpoint.
- ``wandb``: a Weights & Biases run in ``out/wandb`` (the optional extra ``wandb``), offline unless the environment
  sets ``WANDB_MODE`` (``wandb sync`` uploads it later); its id is kept in ``out/wandb-run-id`` so that a resumed
  run continues it.
"""
from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path
from typing import Any

from inspo.checkpoint import atomic_write
from inspo.errors import MissingExtra

__all__ = ["CSVLog", "RunLog", "TensorBoardLog", "WandbLog"]

_EVAL_KEYS = ("return", "return_std", "win_rate")
"""What an evaluation measures: TensorBoard shows them under eval/."""

def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class CSVLog:
    """``progress.csv`` of a run folder (see the module docstring). ``keep_rows``: resuming, the number of rows the
    checkpoint knew of (the rows after them are dropped); None: a new file."""

    def __init__(self, path: Path, keep_rows: int | None) -> None:
        self.path = path
        self.fields: list[str] = []
        self.rows: list[dict[str, str]] = []
        if keep_rows is not None and path.is_file():
            with path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                self.fields = list(reader.fieldnames or [])
                self.rows = list(reader)[:keep_rows]
        self._rewrite()

    def _rewrite(self) -> None:
        def write(fh: Any) -> None:
            text = _TextSink()
            writer = csv.DictWriter(text, self.fields, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
            fh.write(text.value.encode())

        atomic_write(self.path, write)
        self._fh = self.path.open("a", newline="")  # the new inode: atomic_write replaced the file
        self._writer = csv.DictWriter(self._fh, self.fields, restval="")

    def write(self, step: int, row: dict[str, float]) -> None:
        """Append ``row`` (the log point at ``step``, already in it) and flush it."""
        line = {k: str(v) for k, v in row.items()}
        self.rows.append(line)
        new = [k for k in line if k not in self.fields]
        if new:
            self._fh.close()
            self.fields += new
            self._rewrite()
        else:
            self._writer.writerow(line)
            self._fh.flush()

    def close(self) -> None:
        """Close the file (every row is already on disk)."""
        self._fh.close()


class _TextSink:
    """A write-only text buffer for :class:`csv.DictWriter` (the file itself is written atomically, as bytes)."""

    def __init__(self) -> None:
        self.value = ""

    def write(self, text: str) -> None:
        self.value += text


class TensorBoardLog:
    """TensorBoard event files in ``folder``; ``purge_step``: resuming, the first step logged again (TensorBoard
    drops the events at and after it from the earlier files)."""

    def __init__(self, folder: Path, purge_step: int | None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package
            raise MissingExtra("config.logger 'tensorboard' needs the tensorboard package: "
                               "pip install 'inspo[tensorboard]'") from None
        self.writer = SummaryWriter(str(folder), purge_step=purge_step)

    def write(self, step: int, row: dict[str, float]) -> None:
        """Add every value of ``row`` as a scalar at ``step``, and flush."""
        for key, value in row.items():
            if key in ("step", "iteration"):
                continue
            group = "eval" if key in _EVAL_KEYS else "perf" if key == "updates_per_second" else "train"
            self.writer.add_scalar(f"{group}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


class WandbLog:
    """A Weights & Biases run in ``folder / "wandb"``, offline unless ``WANDB_MODE`` says otherwise; resumed when
    ``folder`` already holds its id."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError:
            raise MissingExtra("config.logger 'wandb' needs the wandb package: pip install 'inspo[wandb]'") from None
        id_file = folder / "wandb-run-id"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:16]
        id_file.write_text(run_id + "\n")
        (folder / "wandb").mkdir(exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "inspo"), dir=str(folder), id=run_id,
                              resume="allow", config=config, mode=os.environ.get("WANDB_MODE", "offline"))

    def write(self, step: int, row: dict[str, float]) -> None:
        """Log ``row`` at ``step``."""
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def close(self) -> None:
        """Finish the run (offline: its files are complete for ``wandb sync``)."""
        self.run.finish()


class RunLog:
    """The loggers ``names`` of a run writing into ``folder``: :meth:`log` writes one row to each. ``rows`` counts
    the rows logged (the run's checkpoint keeps it); resuming, ``keep_rows`` is that count at the checkpoint and
    ``resume_step`` its step: what was logged after them is dropped, to be logged again."""

    def __init__(self, names: tuple[str, ...], folder: Path, config: dict[str, Any], keep_rows: int | None = None,
                 resume_step: int | None = None) -> None:
        self.rows = keep_rows or 0
        self.backends: list[CSVLog | TensorBoardLog | WandbLog] = []
        try:
            for name in names:
                if name == "csv":
                    self.backends.append(CSVLog(folder / "progress.csv", keep_rows))
                elif name == "tensorboard":
                    self.backends.append(TensorBoardLog(folder / "tb", None if resume_step is None
                                                        else resume_step + 1))
                else:
                    self.backends.append(WandbLog(folder, config))
        except BaseException:
            self.close()
            raise

    def log(self, step: int, iteration: int, values: dict[str, Any]) -> None:
        """One row: ``step``, ``iteration`` and the numbers among ``values``."""
        row: dict[str, float] = {"step": step, "iteration": iteration}
        row.update((k, v) for k, v in _scalars(values).items() if k not in row)
        for backend in self.backends:
            backend.write(step, row)
        self.rows += 1

    def close(self) -> None:
        """Close every logger (safe to call twice)."""
        backends, self.backends = self.backends, []
        for backend in backends:
            backend.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
