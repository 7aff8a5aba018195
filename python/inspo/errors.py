"""The project's error types and the exit codes of the ``inspo`` command line (README, "Exit codes").

Every bad input ends the command with one line on stderr and :data:`EXIT_USAGE`; the types below are how the
library says "bad input" (rather than "bug"), so that the command line can tell the two apart. Standard library
only: every module may import it.
"""
from __future__ import annotations

__all__ = ["EXIT_OK", "EXIT_USAGE", "EXIT_NUMERICAL", "EXIT_INTERRUPTED", "InspoError", "MissingExtra"]

EXIT_OK = 0
"""The command did what was asked."""
EXIT_USAGE = 2
"""Bad usage, configuration or data (argparse uses 2 for bad arguments too); nothing was written."""
EXIT_NUMERICAL = 3
"""A numerical failure: a loss became non-finite; the run's last checkpoint holds the last good state."""
EXIT_INTERRUPTED = 130
"""Interrupted by SIGINT (128 + 2, the shells' convention) or SIGTERM."""


class InspoError(ValueError):
    """Bad input to the library: a value, file or key that is not what was expected. The message names it, what was
    found and what is expected. A ValueError, so that callers catching ValueError keep working."""


class MissingExtra(InspoError, ImportError):
    """An environment or feature needs an optional dependency that is not installed; the message gives the command
    that installs it."""
