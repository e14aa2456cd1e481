"""What the three agents share: the command line (options with environment fallbacks, one-sentence
errors, exit codes) and logging to stderr. Agents use Sentry's public API only, like any user."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NamedTuple

from sentry import SentryError, VerificationError

EXIT_CODES = "exit codes: 0 success, 1 verification failed, 2 usage or input error."


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (exit 2) and options that fall back to the environment."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")

    def add_env_option(self, flag: str, env: str, *, required: bool, help: str, **kwargs):
        """``flag``, else the environment variable ``env``; ``required``: one of them must be given."""
        default = os.environ.get(env) or None
        suffix = f" (default: ${env})"
        self.add_argument(flag, default=default, help=help + suffix, **kwargs)
        if required:
            self._env_required.append((flag, env))

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        for flag, env in self._env_required:
            if getattr(parsed, flag.lstrip("-").replace("-", "_")) is None:
                self.error(f"give {flag} or set {env}")
        return parsed

    def __init__(self, *args, **kwargs):
        super().__init__(*args, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
        self._env_required: list = []


def log(agent: str, message: str) -> None:
    print(f"{agent}: {message}", file=sys.stderr, flush=True)


def run(agent: str, main, argv=None) -> int:
    """Run ``main(argv)``; a Sentry error ends as one sentence on stderr with its exit code
    (1: verification failed, 2: usage or input error)."""
    try:
        return main(argv) or 0
    except VerificationError as exc:
        log(agent, f"refused: {exc}")
        return exc.exit_code
    except SentryError as exc:
        log(agent, f"error: {exc}")
        return exc.exit_code
    except ModuleNotFoundError as exc:  # safetensors, scikit-learn, pyarrow: what only the agents use
        log(agent, f"error: {(exc.name or str(exc)).split('.')[0]} is not installed: pip install 'sentry-artifacts[agents]'")
        return 2
    except KeyboardInterrupt:
        log(agent, "interrupted")
        return 130


class Signing(NamedTuple):
    """How an agent signs: ``signer`` for ``sentry.sign_*`` (a private key or a SigstoreSigner),
    ``verifier`` for reading back what it signed, ``who`` for its logs, ``files`` never to be written over."""
    signer: object
    verifier: object
    who: str
    files: list


class Verifying(NamedTuple):
    """Whose signatures an agent accepts: ``verifier`` for ``sentry.verify_*`` (a public key or a
    SigstoreVerifier), ``who`` for its logs, ``claims`` for what it reports, ``files`` it reads."""
    verifier: object
    who: str
    claims: dict
    files: list


def add_signing_options(p: Parser, whose: str) -> None:
    """--key (a private key file: a mounted secret) or --sigstore (keyless), and --password-file."""
    p.add_env_option("--key", "SENTRY_KEY_FILE", required=False, metavar="KEYFILE",
                     help=f"{whose} private key (PEM; a mounted secret, never in the image)")
    p.add_argument("--password-file", help="the key's password (default: $SENTRY_KEY_PASSWORD, if set)")
    p.add_argument("--sigstore", action="store_true", default=os.environ.get("SENTRY_SIGSTORE") == "1",
                   help="sign keyless with Sigstore instead of --key, as the OIDC identity of the token in "
                        "$SIGSTORE_IDENTITY_TOKEN, else of ambient CI credentials; needs the network "
                        "(default: on when $SENTRY_SIGSTORE=1)")


def add_verifying_options(p: Parser, prefix: str, whose: str) -> None:
    """--{prefix}public-key, or --{prefix}identity with --{prefix}issuer for keyless signatures."""
    env = "SENTRY_" + prefix.upper().replace("-", "_")
    p.add_env_option(f"--{prefix}public-key", f"{env}PUBLIC_KEY_FILE", required=False, metavar="PUB",
                     help=f"{whose} public key (PEM)")
    p.add_env_option(f"--{prefix}identity", f"{env}IDENTITY", required=False, metavar="ID",
                     help=f"instead, {whose} Sigstore identity (keyless signatures; with --{prefix}issuer)")
    p.add_env_option(f"--{prefix}issuer", f"{env}ISSUER", required=False, metavar="URL",
                     help=f"the OIDC issuer of --{prefix}identity")


def add_trust_config_option(p: Parser) -> None:
    p.add_env_option("--trust-config", "SENTRY_TRUST_CONFIG", required=False, metavar="FILE",
                     help="a Sigstore client trust config, for keyless signing and verifying (default: the "
                          "public-good instance's)")


def signing(args) -> Signing:
    """The signer the options ask for; the key or the identity token is checked before any work."""
    from sentry.signing import load_private_key, public_key_hint, read_password

    if args.sigstore:
        if args.key:
            raise SentryError("--sigstore signs without a key: leave out --key (and SENTRY_KEY_FILE)")
        from sentry.signing.sigstore import NO_IDENTITY, SigstoreSigner, SigstoreVerifier

        try:
            signer = SigstoreSigner(identity_token=os.environ.get("SIGSTORE_IDENTITY_TOKEN") or None,
                                    trust_config=args.trust_config, interactive=False)
        except SentryError as exc:  # the library's advice names the CLI's option; an agent reads the environment
            if exc.message != NO_IDENTITY:
                raise
            raise SentryError("--sigstore needs an OIDC identity: set SIGSTORE_IDENTITY_TOKEN, or run in CI with "
                              "ambient credentials (GitHub Actions: permissions id-token: write)") from None
        identity, issuer = signer.identity
        return Signing(signer, SigstoreVerifier(identity, issuer, trust_config=args.trust_config),
                       f"Sigstore identity {identity} (issuer {issuer})", [f for f in [args.trust_config] if f])
    if args.key is None:
        raise SentryError("give --key KEYFILE (or set SENTRY_KEY_FILE), or --sigstore to sign keyless")
    key = load_private_key(args.key, read_password(args.password_file, prompt=False))
    return Signing(key, key.public_key(), f"key {public_key_hint(key.public_key())}",
                   [f for f in (args.key, args.password_file) if f])


def verifying(args, prefix: str, *, required: bool = True):
    """The Verifying the --{prefix}... options ask for; None when none is given and not ``required``."""
    from sentry.signing import load_public_key, public_key_hint

    attr = prefix.replace("-", "_")
    public_key, identity, issuer = (getattr(args, attr + name) for name in ("public_key", "identity", "issuer"))
    if public_key and (identity or issuer):
        raise SentryError(f"choose one: --{prefix}public-key, or --{prefix}identity with --{prefix}issuer")
    if public_key:
        key = load_public_key(public_key)
        return Verifying(key, f"key {public_key_hint(key)}", {"key_fingerprint": public_key_hint(key)}, [public_key])
    if identity or issuer:
        if not (identity and issuer):
            raise SentryError(f"Sigstore verification needs both --{prefix}identity and --{prefix}issuer")
        from sentry.signing.sigstore import SigstoreVerifier

        return Verifying(SigstoreVerifier(identity, issuer, trust_config=args.trust_config),
                         f"Sigstore identity {identity} (issuer {issuer})",
                         {"signer_identity": identity, "signer_issuer": issuer}, [])
    if required:
        raise SentryError(f"give --{prefix}public-key PUB (or ${'SENTRY_' + attr.upper()}PUBLIC_KEY_FILE), or "
                          f"--{prefix}identity with --{prefix}issuer")
    return None


def same_file(a, b) -> bool:
    """Whether two paths name one file (resolved; an absent path is compared by name)."""
    a, b = Path(a), Path(b)
    try:
        return (a.exists() and b.exists() and os.path.samefile(a, b)) or a.resolve() == b.resolve()
    except OSError:
        return False


def signature_beside(path, given) -> Path:
    """The signature path given, else ``PATH.sig`` beside the artifact (Sentry's default)."""
    from sentry import default_signature_path

    return Path(given) if given else default_signature_path(path)
