"""The two roles every signing method plays: a Signer makes a bundle, a Verifier checks one.

Key, X.509 certificate and Sigstore signers all fit these; the caller never needs to know
which one it holds.
"""
from __future__ import annotations

import abc

from sentry.signing.bundle import Bundle
from sentry.signing.statement import statement_of

__all__ = ["Signer", "Verifier"]


class Signer(abc.ABC):
    """Signs a statement payload and returns the Sigstore bundle holding its DSSE envelope."""

    @abc.abstractmethod
    def sign(self, payload: bytes) -> Bundle:
        """Sign ``payload`` (an in-toto statement's bytes) and return the bundle (its JSON in ``raw``)."""

    def sign_claim(self, subject_name: str, claim) -> Bundle:
        """The bundle of ``claim`` (a :class:`~sentry.manifest.claim.Claim`): its statement, signed."""
        return self.sign(statement_of(subject_name, claim))


class Verifier(abc.ABC):
    """Checks a bundle's signature and returns the payload that it authenticates."""

    @abc.abstractmethod
    def verify(self, bundle: Bundle) -> bytes:
        """Return the verified payload bytes, or raise VerificationError."""
