"""Errors that carry a message meant for the user (the CLI prints them without a traceback)."""


class HadeError(Exception):
    """Base class: the message names the file/field and what was expected."""


class InputError(HadeError, ValueError):
    """Bad user input: a data file, a column, a config field, a CLI argument."""


class AudioError(InputError):
    """An audio file that cannot be used (missing, unreadable, empty, NaN, ...)."""


class IndexDamaged(HadeError):
    """A file of a search index is missing, truncated or corrupt.

    `file` is the damaged file (absolute or relative to the index), `repair` the command that repairs it;
    the message names both, on one line.
    """

    def __init__(self, message: str, file: str = "", repair: str = "") -> None:
        super().__init__(message)
        self.file = file
        self.repair = repair


class StaleFile(HadeError):
    """An indexed audio file that is no longer what was indexed: gone, changed since indexing, or now
    resolving (through a symlink) outside the indexed folder. `reason` is 'missing', 'changed' or 'outside'."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
