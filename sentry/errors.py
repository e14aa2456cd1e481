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
