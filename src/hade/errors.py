"""Errors that carry a message meant for the user (the CLI prints them without a traceback)."""


class HadeError(Exception):
    """Base class: the message names the file/field and what was expected."""


class InputError(HadeError, ValueError):
    """Bad user input: a data file, a column, a config field, a CLI argument."""


class AudioError(InputError):
    """An audio file that cannot be used (missing, unreadable, empty, NaN, ...)."""
