"""`sentry` command line: keygen, hash, sign, verify.

Exit codes: 0 success, 1 verification failed, 2 usage or input error (and 141, as for SIGPIPE,
when stdout is closed before the output is written). Errors are one sentence on stderr; results
go to stdout (``--json`` for scripts).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from .errors import SentryError, VerificationError

EPILOG = """exit codes: 0 success, 1 verification failed, 2 usage or input error.
examples:
  sentry keygen signing-key.pem            # writes signing-key.pem (0600) and signing-key.pub.pem
  sentry sign model/ --key signing-key.pem # writes model.sig beside model/
  sentry verify model/ --public-key signing-key.pub.pem
"""
EXIT_CODES = "exit codes: 0 success, 1 verification failed, 2 usage or input error."


def _hashing_options(p: argparse.ArgumentParser, *, leaf_size: bool) -> None:
    p.add_argument("path", help="model directory, checkpoint file (.safetensors: per tensor too) or dataset directory")
    p.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                   help="leave out paths matching PATTERN (glob; without '/', matches any path component); repeatable")
    p.add_argument("--allow-symlinks", action="store_true",
                   help="hash what symbolic links point to (only inside PATH); by default they are refused")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="hashing backend (default: auto = CUDA when a GPU is usable, else CPU)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    if leaf_size:
        p.add_argument("--leaf-size", type=int, default=4096, metavar="BYTES",
                       help="Merkle leaf size, a power of two (default 4096); recorded in the signature")


def _dataset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sidecar", metavar="FILE",
                   help="with --dataset: the sample list (default: beside the signature, SIG's name with .samples.jsonl)")


def _dataset_args(args) -> dict:
    if not args.dataset:
        if args.sidecar or getattr(args, "sample", None):
            raise SentryError("--sidecar and --sample are for a dataset: add --dataset")
        return {}
    return {"sidecar": args.sidecar, **({"samples": args.sample} if getattr(args, "sample", None) else {})}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentry", description="Merkle-hash ML models and datasets, sign them, verify them.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("keygen", help="write a new ECDSA P-256 key pair",
                       description="Write a new ECDSA P-256 key pair: the private key (mode 0600) and its public key.",
                       epilog=EXIT_CODES)
    p.add_argument("key", help="private key file to write (PEM)")
    p.add_argument("--public-key", metavar="FILE", help="public key file (default: KEY with .pub.pem)")
    p.add_argument("--encrypt", action="store_true",
                   help="encrypt the private key with a password (from --password-file, SENTRY_KEY_PASSWORD or a prompt)")
    p.add_argument("--password-file", metavar="FILE", help="read the password from the first line of FILE")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")

    p = sub.add_parser("hash", help="print the Merkle roots of an artifact's items",
                       description="Print every item's size and RFC 9162 Merkle root, and the manifest root.",
                       epilog=EXIT_CODES)
    _hashing_options(p, leaf_size=True)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")

    p = sub.add_parser("sign", help="hash an artifact and write a signature bundle",
                       description="Hash an artifact and write a Sigstore bundle (DSSE, in-toto statement) signing its manifest.",
                       epilog=EXIT_CODES)
    _hashing_options(p, leaf_size=True)
    p.add_argument("--key", required=True, metavar="KEY.pem", help="ECDSA P-256 private key (PEM)")
    p.add_argument("--signature", metavar="SIG", help="where to write the bundle (default: PATH.sig beside PATH)")
    p.add_argument("--password-file", metavar="FILE",
                   help="password of an encrypted key (else SENTRY_KEY_PASSWORD, else a prompt on a terminal)")
    p.add_argument("--dataset", action="store_true",
                   help="sign PATH as a dataset: its samples go to a sidecar that the signature covers")
    _dataset_options(p)

    p = sub.add_parser("verify", help="check a signature, then the artifact against it",
                       description="Check the bundle's signature, recompute the artifact's manifest and name every "
                                   "missing, extra or changed item.",
                       epilog=EXIT_CODES)
    _hashing_options(p, leaf_size=False)
    p.add_argument("--public-key", required=True, metavar="PUB.pem", help="public key of the signer (PEM)")
    p.add_argument("--signature", metavar="SIG", help="the bundle (default: PATH.sig beside PATH)")
    p.add_argument("--dataset", action="store_true", help="PATH is a dataset")
    _dataset_options(p)
    p.add_argument("--sample", action="append", metavar="NAME",
                   help="with --dataset: check only this sample (relative name), without rehashing the rest; repeatable")
    p.add_argument("--json", action="store_true", help="print the verification report as JSON")
    return parser


def _progress(args):
    from .progress import ProgressBar

    return ProgressBar(enabled=False if args.quiet else None)


def _password_for(key_path, password_file):
    from .signing.keys import private_key_is_encrypted, read_password

    if password_file is None and not private_key_is_encrypted(key_path):
        return None
    return read_password(password_file, prompt=True)


def cmd_keygen(args) -> int:
    from .signing import write_keypair
    from .signing.keys import read_password

    if args.password_file is not None and not args.encrypt:
        # Without this, `keygen k.pem --password-file pw` would quietly write an unencrypted key.
        raise SentryError("--password-file is for an encrypted key: add --encrypt")
    key = Path(args.key)
    public = Path(args.public_key) if args.public_key else key.with_name(key.name.removesuffix(".pem") + ".pub.pem")
    password = read_password(args.password_file, prompt=True, confirm=True) if args.encrypt else None
    if args.encrypt and password is None:
        raise SentryError("--encrypt needs a password: --password-file, SENTRY_KEY_PASSWORD or a terminal to ask on")
    write_keypair(key, public, password, overwrite=args.force)
    print(f"wrote private key {key} and public key {public}")
    return 0


def cmd_hash(args) -> int:
    from .api import hash_artifact

    with _progress(args) as bar:
        manifest = hash_artifact(args.path, leaf_size=args.leaf_size, ignore=args.ignore,
                                 allow_symlinks=args.allow_symlinks, device=args.device, progress=bar)
    root = manifest.root().hex()
    if args.json:
        print(json.dumps({"root": root, **manifest.to_predicate()}, indent=2))
    else:
        for it in manifest.items:
            print(f"{it.root.hex()}  {it.size:>14}  {it.label}")
        print(f"manifest root {root} ({len(manifest.items)} items, leaf size {manifest.params.leaf_size})")
    return 0


def cmd_sign(args) -> int:
    from .api import sign_dataset, sign_model

    password = _password_for(args.key, args.password_file)
    sign = sign_dataset if args.dataset else sign_model
    with _progress(args) as bar:
        sig = sign(args.path, key=args.key, signature=args.signature, password=password, ignore=args.ignore,
                   allow_symlinks=args.allow_symlinks, leaf_size=args.leaf_size, device=args.device, progress=bar,
                   **_dataset_args(args))
    if args.dataset:
        from .manifest.dataset import default_sidecar_path

        print(f"signed {args.path} -> {sig} (samples listed in {args.sidecar or default_sidecar_path(sig)})")
    else:
        print(f"signed {args.path} -> {sig}")
    return 0


def cmd_verify(args) -> int:
    from .api import verify_dataset, verify_model

    verify = verify_dataset if args.dataset else verify_model
    try:
        with _progress(args) as bar:
            report = verify(args.path, public_key=args.public_key, signature=args.signature, ignore=args.ignore,
                            allow_symlinks=args.allow_symlinks, device=args.device, progress=bar,
                            **_dataset_args(args))
    except VerificationError as exc:
        if args.json:  # scripts always get a JSON verdict, also when the signature itself is bad
            body = exc.report.to_json() if exc.report is not None else {"ok": False}
            print(json.dumps({**body, "error": str(exc)}, indent=2))
        elif exc.report is not None:
            print("\n".join(exc.report.lines()))
        raise
    print(json.dumps(report.to_json(), indent=2) if args.json else f"OK: {report.summary()}")
    return 0


COMMANDS = {"keygen": cmd_keygen, "hash": cmd_hash, "sign": cmd_sign, "verify": cmd_verify}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe must show up here, not as a message at interpreter exit
        return code
    except BrokenPipeError:
        # stdout was closed early (`sentry hash big/ | head`): stop quietly, as a tool killed by SIGPIPE
        # would (not 0 or 1: the output is incomplete, and 1 means "verification failed").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    except SentryError as exc:
        print(f"sentry: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sentry: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
