"""Errors a user can act on.

Every error the toolkit raises on purpose derives from :class:`RecsysError`. The CLI
prints its message (no traceback unless ``--debug``) and exits with status 2.
"""

from __future__ import annotations

import os


class RecsysError(Exception):
    """Base class for errors that carry a message meant for the user."""


class InputError(RecsysError, ValueError):
    """Bad input data: the message names the file, line and column and what was expected.

    Rendered like a compiler diagnostic: ``ratings.csv:17: column 'rating': expected a
    number, got 'abc'``.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.reason = message
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.column = column
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        if self.column is not None:
            where += f"column '{self.column}': "
        return where + self.reason


class ModelFormatError(RecsysError):
    """A saved artifact (model directory, index, checkpoint) is missing, corrupt or incompatible."""


class ConfigError(RecsysError, ValueError):
    """An invalid option or hyper-parameter, reported before any work starts."""


DIVERGENCE_ADVICE = "Lower the learning rate or raise the regularization (and check the data for extreme values)"


class TrainingDiverged(RecsysError):
    """Training went non-finite (a learning rate too high, values too large): the model is
    not kept, and the message says which epoch and what to change."""


class TrackingError(RecsysError):
    """The experiment-tracking backend cannot be used (unreachable server, bad URI)."""
