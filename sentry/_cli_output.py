"""What one ``sentry`` command prints: text lines as they come, or with ``--json`` one object of a
single shape on every outcome (docs/cli-json.md)::

    {"ok": bool, "command": str, "error": {"kind", "message"} | null, "report": {...} | null,
     "context": {"path", "artifact_type", "format", "root", "signature", "signer", "method"}}

and the context a signature bundle gives (format, signed root, signer identity or key fingerprint).
"""
from __future__ import annotations

import base64
import json
from typing import Any

from .errors import SentryError

__all__ = ["CONTEXT_KEYS", "Output", "bundle_context", "certificate_identity", "command_of", "wants_json"]

CONTEXT_KEYS = ("path", "artifact_type", "format", "root", "signature", "signer", "method")


class Output:
    """One command's output. Text mode prints as it goes (:meth:`say`); JSON mode prints nothing
    until :meth:`finish` or :meth:`fail`, which print the one object, with what is known by then."""

    def __init__(self, command: str, as_json: bool):
        self.command, self.as_json = command, as_json
        self.context: dict[str, Any] = dict.fromkeys(CONTEXT_KEYS)
        self.report: dict | None = None

    def say(self, *lines: str) -> None:
        if lines and not self.as_json:
            print("\n".join(lines))

    def note(self, **context: Any) -> None:
        """Record what is known of the context (None leaves a value as it is)."""
        unknown = context.keys() - set(CONTEXT_KEYS)
        assert not unknown, unknown  # a programming error: the shape is fixed
        self.context.update({k: v for k, v in context.items() if v is not None})

    def note_bundle(self, signature, verifier=None):
        """With --json, note what a bundle says (format, root, signer; verified again with
        ``verifier``) and return its statement; None otherwise, or if it cannot be read again (the
        context never changes an outcome). Text output skips it: a bundle may hold 64 MiB to parse."""
        if not self.as_json:
            return None
        try:
            context, statement = bundle_context(signature, verifier)
        except (SentryError, OSError):
            return None
        self.note(**context)
        return statement

    def finish(self) -> None:
        """A success: every failure raises (a SentryError, for :meth:`fail`)."""
        if self.as_json:
            self._print(None)

    def fail(self, exc: BaseException, message: str) -> None:
        if self.as_json:
            self._print({"kind": type(exc).__name__, "message": message})

    def _print(self, error: dict | None) -> None:
        print(json.dumps({"ok": error is None, "command": self.command, "error": error, "report": self.report,
                          "context": self.context}, indent=2))


def wants_json(argv: list[str]) -> bool:
    """Whether the command line asks for JSON (before a ``--`` that ends the options)."""
    return "--json" in (argv[: argv.index("--")] if "--" in argv else argv)


def command_of(argv: list[str], commands, actions) -> str:
    """The (sub)command a command line names, read without the parser (whose error it may be for):
    its first word that is a command, and for ``image`` its action."""
    words = [w for w in argv if not w.startswith("-")]
    for i, word in enumerate(words):
        if word in commands:
            action = words[i + 1] if i + 1 < len(words) and word in actions else None
            return f"{word} {action}" if action in actions.get(word, ()) else word
    return ""


def bundle_context(signature, verifier=None) -> tuple[dict, Any]:
    """(context, statement) of a bundle: format, artifact type, signed root, signer, method. With
    ``verifier`` it is verified again first, so a verify reports only what it checked."""
    from .signing import parse_statement, read_bundle
    from .signing.bundle import signing_method

    bundle = read_bundle(signature)
    payload = verifier.verify(bundle) if verifier is not None else bundle.payload
    statement = parse_statement(payload)
    method = signing_method(bundle)
    context = {"format": _format(statement.predicate_type), "artifact_type": _artifact_type(statement),
               "root": statement.digest_hex, "signer": _signer(bundle.verification_material, method, verifier),
               "method": method}
    return context, statement


def _format(predicate_type: str) -> str | None:
    from .manifest import oms
    from .manifest.manifest import IMAGE_PREDICATE_TYPE, PREDICATE_TYPE

    return {PREDICATE_TYPE: "sentry", IMAGE_PREDICATE_TYPE: "sentry", oms.PREDICATE_TYPE: "oms"}.get(predicate_type)


def _artifact_type(statement) -> str | None:
    from .manifest import oms
    from .manifest.manifest import IMAGE_PREDICATE_TYPE

    if statement.predicate_type == oms.PREDICATE_TYPE:
        return "model"
    if statement.predicate_type == IMAGE_PREDICATE_TYPE:
        return "image"
    artifact = statement.predicate.get("artifact")
    kind = artifact.get("type") if isinstance(artifact, dict) else None
    return kind if kind in ("model", "dataset") else None


def _signer(material: dict, method: str, verifier) -> str | None:
    """The key's fingerprint (hex SHA-256 of its PEM public key, the bundle's key hint) or the signing
    certificate's identity (its e-mail or URI, else its subject); None if the material lacks it."""
    from .signing import keys

    try:
        if method == "key":
            key = getattr(verifier, "public_key", None)
            return keys.public_key_hint(key) if key is not None else material["publicKey"]["hint"] or None
        return certificate_identity(_leaf_certificate(material))
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _leaf_certificate(material: dict):
    from cryptography import x509

    if "certificate" in material:
        raw = material["certificate"]["rawBytes"]
    else:
        raw = material["x509CertificateChain"]["certificates"][0]["rawBytes"]
    return x509.load_der_x509_certificate(base64.b64decode(raw))


def certificate_identity(cert) -> str:
    """A certificate's identity as Sigstore names it: its subject alternative name (e-mail, then
    URI, then DNS name), else its subject."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return cert.subject.rfc4514_string()
    for kind in (x509.RFC822Name, x509.UniformResourceIdentifier, x509.DNSName):
        names = san.get_values_for_type(kind)
        if names:
            return names[0]
    return cert.subject.rfc4514_string()

