"""The failures a user sees, in two classes by exit code: bad input (2) and a failed verification (1).

Under them, the kinds a caller may want to tell apart::

    SentryError (2)            bad input: a missing file, an unreadable key, bad options
    ├── InvalidInput           a bad argument value (also a ValueError, as Python code expects)
    ├── MissingDependency      an optional package is not installed (also an ImportError)
    └── VerificationError (1)  the artifact or its signature did not verify
        ├── InvalidBundle      the signature file, its statement or the manifest it signs is malformed
        ├── BadSignature       the signature does not verify, or not by the signer given
        ├── UnsupportedFormat  signed data in a form Sentry cannot check (so it never passes)
        └── ContentMismatch    the content differs from what is signed; ``report`` names every difference

Lower layers never name a command-line option: an error that a setting would get past carries a
:class:`Remedy` naming the Python API's parameter, and the CLI words it as its own option.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

__all__ = [
    "BadSignature",
    "ContentMismatch",
    "InvalidBundle",
    "InvalidInput",
    "MissingDependency",
    "Remedy",
    "SentryError",
    "UnsupportedFormat",
    "VerificationError",
    "reason",
]

if TYPE_CHECKING:  # the errors sit below every layer: the report's class is named for type checkers only
    from .manifest.compare import Report


@dataclass(frozen=True)
class Remedy:
    """A setting that gets past an error, by its Python API name (``allow_symlinks``) and the value
    to give, as Python source (``"True"``, ``"'cpu'"``) or a placeholder (``"FILE"``).
    ``purpose`` says what it does ("to hash what it points to"); ``python`` replaces the whole
    Python wording when the remedy there is not a parameter (another function, say)."""

    setting: str
    value: str = "True"
    purpose: str = ""
    python: str = ""

    def in_python(self) -> str:
        return self.python or f"pass {self.setting}={self.value}" + (f" {self.purpose}" if self.purpose else "")


class SentryError(Exception):
    """A usage or input error: a missing file, an unreadable key, bad options."""

    exit_code = 2

    def __init__(self, message: str = "", *, remedy: Remedy | None = None):
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        return self.message if self.remedy is None else f"{self.message}; {self.remedy.in_python()}"


class InvalidInput(SentryError, ValueError):
    """A bad argument value given to the API."""


class MissingDependency(SentryError, ImportError):
    """An optional dependency is not installed: a usage error (exit 2) whose message names the extra
    to install, and an ImportError (``name``: the module), so ``except ImportError`` around an
    optional feature still works."""

    def __init__(self, message: str = "", *, name: str | None = None):
        super().__init__(message)
        self.name = name


class VerificationError(SentryError):
    """The artifact or its signature did not verify. ``report`` holds the differences as data."""

    exit_code = 1

    def __init__(self, message: str = "", report: Report | None = None, *, remedy: Remedy | None = None):
        super().__init__(message, remedy=remedy)
        self.report = report


class InvalidBundle(VerificationError):
    """The signature file, its statement, or the manifest, sidecar or provenance it signs is malformed."""


class BadSignature(VerificationError):
    """The signature does not verify, or was not made by the key, certificate or identity given."""


class UnsupportedFormat(VerificationError):
    """Signed data in a form Sentry cannot check: it fails, since what is not checked never passes."""


class ContentMismatch(VerificationError):
    """The content differs from what is signed: missing, extra or changed items (``report``)."""


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
