"""User-facing errors.

Every error a user can cause by what they type or the files they pass is a
:class:`SeeError`. The CLI prints its message without a traceback and exits
with code 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

from pathlib import Path


class SeeError(Exception):
    """An error caused by user input (a file, a flag, a config value)."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None,
                 field: str | None = None, hint: str | None = None):
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.hint = hint
        self.reason = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        field = f"field '{self.field}': " if self.field else ""
        text = f"{where}{field}{self.reason}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class DataError(SeeError):
    """A data file that cannot be read as a task."""


class ConfigError(SeeError):
    """A config file or override that does not fit the schema."""


class StoreError(SeeError):
    """An ensemble directory that is missing, corrupted or incompatible."""


class ModelError(SeeError):
    """A base or fallback model that cannot be loaded."""


class QualityError(SeeError):
    """An expert that did not learn its task well enough to be added (``train.min_score``)."""

    exit_code = 3


class TrainingError(SeeError):
    """Training that cannot produce a usable expert (a loss or weight that is NaN or infinite)."""
