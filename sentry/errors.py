"""The two failures a user sees: bad input (exit 2) and a failed verification (exit 1)."""
from __future__ import annotations


class SentryError(Exception):
    """A usage or input error: a missing file, an unreadable key, bad options."""

    exit_code = 2


class VerificationError(SentryError):
    """The artifact or its signature did not verify. ``report`` holds the differences as data."""

    exit_code = 1

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class MissingDependency(SentryError, ImportError):
    """An optional dependency is not installed: a usage error (exit 2) whose message names the extra
    to install, and an ImportError, so ``except ImportError`` around an optional feature still works."""


def reason(exc: BaseException, limit: int = 200) -> str:
    """A library exception as a short clause for a one-sentence message: its first line (or,
    for an exception without a message, its class name and the cause's)."""
    lines = str(exc).strip().splitlines()
    if lines:
        text = lines[0].rstrip(".")
    else:
        cause = exc.__cause__ or exc.__context__
        text = type(exc).__name__ + (f": {reason(cause, limit)}" if cause is not None else "")
    return text if len(text) <= limit else text[: limit - 3] + "..."
