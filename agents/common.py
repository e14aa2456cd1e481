"""What the three agents share: the command line (options with environment fallbacks, one-sentence
errors, exit codes) and logging to stderr. Agents use Sentry's public API only, like any user."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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
    except KeyboardInterrupt:
        log(agent, "interrupted")
        return 130


def key_fingerprint(public_key_path) -> str:
    """The hex SHA-256 of the public key's PEM (the hint a Sentry bundle carries)."""
    from sentry.signing import load_public_key, public_key_hint

    return public_key_hint(load_public_key(public_key_path))


def same_file(a, b) -> bool:
    """Whether two paths name one file (resolved; an absent path is compared by name)."""
    a, b = Path(a), Path(b)
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b) or a.resolve() == b.resolve()
    except OSError:
        return False


def signature_beside(path, given) -> Path:
    """The signature path given, else ``PATH.sig`` beside the artifact (Sentry's default)."""
    from sentry import default_signature_path

    return Path(given) if given else default_signature_path(path)
