"""Exceptions raised by symgrad; each carries a message meant for a person."""

from __future__ import annotations


class SymgradError(Exception):
    """Base class: a user-facing error with one readable message."""


class SpecError(SymgradError):
    """A spec failed validation; ``path`` is the YAML path (``layers[1].activation``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class ExpressionError(SymgradError):
    """A user expression was rejected by the whitelist parser."""


class DataError(SymgradError):
    """A data file could not be read or does not fit the spec."""


class DivergenceError(SymgradError):
    """Training produced NaN or inf; the last good parameters were kept."""


class LimitError(SymgradError):
    """A stated limit would be exceeded (memory, the size of a printed derivation or module)."""


class BudgetError(LimitError):
    """Deriving or printing ran past its time or memory budget."""


class CacheError(SymgradError):
    """The module cache cannot be used safely (not a folder, not private, not writable)."""
