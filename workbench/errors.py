"""Error types that adapters (CLI, UI, workers) turn into one clear line for the user."""

from collections.abc import Iterator
from contextlib import contextmanager

from workbench.redaction import redact


class WorkbenchError(Exception):
    """Base class: an expected failure whose message is safe and useful to show as is.

    Safe because its text arguments are redacted on creation (:func:`workbench.redaction.redact`): a
    database URL quoted in a message shows ``postgresql://workbench:***@host/db`` in every adapter and log.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class SettingsError(WorkbenchError):
    """A setting has a bad value; the message names the setting."""


class SchemaOutOfDateError(WorkbenchError):
    """The database schema is behind the code; the message says which command upgrades it."""


class NotFoundError(WorkbenchError):
    """A referenced object (case, model version, job, ...) does not exist."""


class ValidationError(WorkbenchError):
    """An input from outside (file, CSV row, form field, argument) is invalid."""


class PermissionDenied(WorkbenchError):
    """The acting user's role does not allow the action."""


class ConflictError(WorkbenchError):
    """The action conflicts with the current state (stale lease, job already running, ...)."""


@contextmanager
def file_read_errors(path: object) -> Iterator[None]:
    """Turn the OS errors of reading ``path`` into one ValidationError each, naming the file."""
    try:
        yield
    except FileNotFoundError:
        raise ValidationError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise ValidationError(f"not a regular file (is a directory): {path}") from None
    except OSError as exc:
        raise ValidationError(f"cannot read file: {path} ({exc.strerror or exc})") from None
