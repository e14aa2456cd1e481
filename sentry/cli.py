"""`sentry` command line: keygen, hash, sign, verify, audit, sign-samples, image, doctor.

Exit codes: 0 success, 1 verification failed, 2 usage or input error (and 141, as for SIGPIPE,
when stdout is closed before the output is written). Errors are one sentence on stderr; results
go to stdout (``--json`` for scripts: one object of one shape on every outcome, docs/cli-json.md).
Each subcommand has its own builder (``_add_*``); the option groups that several share (what to
hash, how, who signs, whom to trust, output, logging) are added by the helpers below them.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from ._cli_output import Output, command_of, wants_json
from .errors import SentryError, VerificationError

__all__ = ["COMMANDS", "build_parser", "error_message", "main"]

log = logging.getLogger("sentry.cli")  # not __name__: under `python -m` that is __main__

EPILOG = """exit codes: 0 success, 1 verification failed, 2 usage or input error.
examples:
  sentry keygen signing-key.pem            # writes signing-key.pem (0600) and signing-key.pub.pem
  sentry sign model/ --key signing-key.pem # writes model.sig beside model/
  sentry verify model/ --public-key signing-key.pub.pem
  sentry sign model/ --sigstore --format oms          # keyless, in model_signing's format
  sentry verify model/ --identity me@example.com --issuer https://github.com/login/oauth
  sentry audit hub/ --public-key signing-key.pub.pem  # every *.sig under hub/, one batch
  sentry sign-samples lab-a/ --key lab-a.pem --prefix lab-a/  # per-sample provenance of one source
  sentry verify data/ --dataset --public-key owner.pub.pem --source lab-a.provenance.jsonl lab-a.pub.pem
"""
EXIT_CODES = "exit codes: 0 success, 1 verification failed, 2 usage or input error."
DEVICES = ("auto", "cpu", "cuda")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PASSWORD_HELP = "password of an encrypted key (else SENTRY_KEY_PASSWORD, else a prompt on a terminal)"
FORCE_HELP = ("replace an existing file that is not an earlier output of the same kind (never the key, "
              "certificate or password files, the artifact, or a file inside it)")
SYMLINKS_HELP = ("hash what symbolic links point to (only inside {}); by default they are refused, "
                 "except in a Hugging Face cache snapshot (links into its repository's blobs/)")


def _never_over(earlier: str) -> str:
    """The help for an output option: what it may replace (docs/spec.md §8)."""
    return (f"never over a key file, the artifact, or a file inside it that is not {earlier}; over another "
            f"existing file that is not {earlier} only with --force")


# -- option groups shared by several subcommands ---------------------------------------------------------


def _logging_options(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """-v and --log-level, accepted before the subcommand and after it (a subcommand's default is
    SUPPRESS, so one that is not given them keeps what the top level parsed)."""
    group = p.add_argument_group("logging (on stderr)")
    group.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                       help="say more on stderr: -v INFO (the key, certificate or identity used), -vv DEBUG (which "
                            "backend hashed, C accelerator or not, file counts)")
    group.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default=None if top else argparse.SUPPRESS,
                       help="the least severe messages to show (default WARNING; overrides -v)")


def _selection_group(p: argparse.ArgumentParser, where: str = "PATH", *, defaults: bool = True,
                     symlinks: str = SYMLINKS_HELP):
    """--ignore, --no-default-ignores (unless not ``defaults``) and --allow-symlinks (``symlinks``:
    its help, where ``{}`` is ``where``)."""
    group = p.add_argument_group("what to hash")
    group.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                       help="leave out paths matching PATTERN (a signature records it); repeatable. A glob "
                            "without '/' matches any single path component at any depth ('*.log'); one with '/' "
                            "is anchored at the top ('runs/': the top-level directory runs, '/notes.txt': the "
                            "top-level file); a trailing '/' matches directories only")
    if defaults:
        group.add_argument("--no-default-ignores", dest="default_ignores", action="store_false",
                           help="also hash the top-level .git, .github, .gitattributes, .gitignore, .hg, .svn and "
                                ".DS_Store, which are left out by default (nested ones are always hashed; OMS: the "
                                "git paths, as model_signing's --no-ignore-git-paths); a signature records it. On "
                                "verify: check them too, whatever the signature recorded. Datasets have no default "
                                "ignores")
    group.add_argument("--allow-symlinks", action="store_true", help=symlinks.format(where))
    return group


def _hashing_group(p: argparse.ArgumentParser, *, leaf_size: str | None, device_for: str | None = None):
    """--device (``device_for``: what else than hashing it runs), --leaf-size (its note), -q."""
    group = p.add_argument_group("hashing")
    auto = "(default: auto = CUDA when a GPU is usable, else CPU)"
    group.add_argument("--device", choices=DEVICES, default="auto",
                       help=f"for {device_for} {auto}" if device_for else f"hashing backend {auto}; CUDA reads files "
                       "with kvikio (GPUDirect Storage or its compatibility mode) when it is installed")
    if leaf_size is not None:
        group.add_argument("--leaf-size", type=int, metavar="BYTES",
                           help=f"Merkle leaf size, a power of two (default 4096); {leaf_size}")
    _quiet_option(group)
    return group


def _quiet_option(group) -> None:
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _json_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument_group("output").add_argument(
        "--json", action="store_true",
        help=f"print {what} as JSON: one object of one shape on success and on every error (docs/cli-json.md)")


def _artifact_options(p: argparse.ArgumentParser, *, leaf_size: str | None) -> None:
    """PATH, what of it to hash, and how: shared by hash, sign and verify."""
    p.add_argument("path", help="model directory, checkpoint file (.safetensors: per tensor too) or dataset directory")
    _selection_group(p)
    _hashing_group(p, leaf_size=leaf_size)


def _dataset_args(args) -> dict:
    sample, source = getattr(args, "sample", None), getattr(args, "source", None)
    if not args.dataset:
        if args.sidecar or sample or source:
            raise SentryError("--sidecar, --sample and --source are for a dataset: add --dataset")
        return {}
    return {"sidecar": args.sidecar, **({"samples": sample} if sample else {}),
            **({"provenance": [tuple(s) for s in source]} if source else {})}


def _sidecar_option(group) -> None:
    group.add_argument("--sidecar", metavar="FILE",
                       help="with --dataset: the sample list (default: beside the signature, SIG's name with "
                            f".samples.jsonl); when signing: not SIG, and {_never_over('an earlier sample list')}")


def _signing_options(p: argparse.ArgumentParser) -> None:
    """How to sign (one signer, built by :func:`_signer_for`): shared by sign and image build."""
    group = p.add_argument_group("signer (--key, with --certificate for X.509, or --sigstore)")
    group.add_argument("--key", metavar="KEY.pem", help="ECDSA P-256 private key (PEM)")
    group.add_argument("--certificate", metavar="CERT.pem",
                       help="with --key: its X.509 signing certificate (PEM; further certificates in it join the chain)")
    group.add_argument("--certificate-chain", action="append", default=[], metavar="CHAIN.pem",
                       help="with --certificate: intermediate certificates to put in the bundle; repeatable")
    group.add_argument("--password-file", metavar="FILE", help=PASSWORD_HELP)
    group.add_argument("--sigstore", action="store_true",
                       help="sign keyless with Sigstore: an OIDC identity (--identity-token, ambient CI credentials, "
                            "or a login on a terminal) gets a short-lived certificate; needs the network")
    group.add_argument("--identity-token", metavar="TOKEN", help="with --sigstore: the OIDC identity token to use")
    group.add_argument("--staging", action="store_true", help="with --sigstore: use Sigstore's staging instance")
    group.add_argument("--trust-config", metavar="FILE",
                       help="with --sigstore: a Sigstore client trust config to use")
    group.add_argument("--cache-dir", metavar="DIR",
                       help="with --sigstore: where the trust root fetched by TUF is kept "
                            "(default: $SENTRY_CACHE_DIR, else ~/.cache/sentry)")


def _verifying_options(p: argparse.ArgumentParser) -> None:
    """Whom to trust (one verifier, built by :func:`_verifier_for`): shared by verify and image verify."""
    group = p.add_argument_group("verifier (one of --public-key, --certificate-chain, --identity with --issuer)")
    group.add_argument("--public-key", metavar="PUB.pem", help="for a key bundle: the signer's public key (PEM)")
    group.add_argument("--certificate-chain", action="append", default=[], metavar="CA.pem",
                       help="for a certificate bundle: trusted CA certificates (PEM); repeatable")
    group.add_argument("--identity", metavar="ID",
                       help="for a Sigstore bundle: the signer's identity (e-mail, or workflow URI in CI)")
    group.add_argument("--issuer", metavar="URL", help="for a Sigstore bundle: the identity's OIDC issuer")
    group.add_argument("--trust-config", metavar="FILE",
                       help="for a Sigstore bundle: a client trust config (default: the public instance's trusted "
                            "root shipped with sigstore-python; verification is offline either way)")
    group.add_argument("--staging", action="store_true",
                       help="for a Sigstore bundle: trust Sigstore's staging instance")


# -- the parser: one builder per subcommand ------------------------------------------------------------


class _UsageExit(SystemExit):
    """An argparse usage error (exit 2), carrying its message for a JSON answer."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors (printed as argparse prints them) can also be answered
    in JSON: main catches the :class:`_UsageExit` (a SystemExit, for callers that expect one)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise _UsageExit(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sentry", description="Merkle-hash ML models and datasets, sign them, verify them.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="print the version, the CPU hashing path and the "
                        "optional dependencies installed, then exit (`sentry doctor` also probes CUDA)")
    _logging_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    made: list[argparse.ArgumentParser] = []
    for add in (_add_keygen, _add_hash, _add_sign, _add_verify, _add_sign_samples, _add_audit, _add_image,
                _add_doctor):
        add(sub, made)
    for p in made:  # last, so that each command's own options come first in its --help
        _logging_options(p)
    return parser


def _subcommand(sub, name: str, made: list, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand's parser; ``made`` collects them for the options every one gets."""
    p = sub.add_parser(name, help=help, description=description, epilog=EXIT_CODES)
    made.append(p)
    return p


def _add_keygen(sub, made) -> None:
    p = _subcommand(sub, "keygen", made, "write a new ECDSA P-256 key pair",
                    "Write a new ECDSA P-256 key pair: the private key (mode 0600) and its public key.")
    p.add_argument("key", help="private key file to write (PEM)")
    p.add_argument("--public-key", metavar="FILE", help="public key file (default: KEY with .pub.pem)")
    p.add_argument("--encrypt", action="store_true",
                   help="encrypt the private key with a password (from --password-file, SENTRY_KEY_PASSWORD or a prompt)")
    p.add_argument("--password-file", metavar="FILE", help="read the password from the first line of FILE")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")


def _add_hash(sub, made) -> None:
    p = _subcommand(sub, "hash", made, "print the Merkle roots of an artifact's items",
                    "Print every item's size and RFC 9162 Merkle root, and the manifest root.")
    _artifact_options(p, leaf_size="recorded in the signature")
    _json_option(p, "the manifest")


def _add_sign(sub, made) -> None:
    p = _subcommand(sub, "sign", made, "hash an artifact and write a signature bundle",
                    "Hash an artifact and write a Sigstore bundle (DSSE, in-toto statement) signing its manifest: "
                    "with a private key, a key and its X.509 certificate, or Sigstore keyless.")
    _artifact_options(p, leaf_size="recorded in the signature")
    _signing_options(p)
    group = p.add_argument_group("signature")
    group.add_argument("--format", choices=("sentry", "oms"), default="sentry",
                       help="sentry (default: Merkle roots, per tensor too) or oms (model_signing's format, "
                            "SHA-256 per file, which `model_signing verify` accepts)")
    group.add_argument("--signature", metavar="SIG",
                       help="where to write the bundle (default: PATH.sig beside PATH; the items of a model too "
                            "large for it, some 150k+, go to SIG's name with .manifest.jsonl, beside it); "
                            f"{_never_over('an earlier bundle')}")
    group.add_argument("--training-data", action="append", default=[], metavar="DATASET.sig",
                       help="a model: record the dataset it was trained on (docs/spec.md §3.1), from that dataset's "
                            "signature, verified first with --dataset-public-key; repeatable")
    group.add_argument("--dataset-public-key", metavar="PUB.pem",
                       help="with --training-data: the dataset owner's public key")
    group.add_argument("--force", action="store_true", help=FORCE_HELP)
    group = p.add_argument_group("datasets")
    group.add_argument("--dataset", action="store_true",
                       help="sign PATH as a dataset: its samples go to a sidecar that the signature covers")
    group.add_argument("--part-samples", type=int, default=0, metavar="N",
                       help="with --dataset: split the sidecar into parts of N records (a power of two), "
                            "SIDECAR.000000.jsonl, ... (docs/spec.md §6.5)")
    _sidecar_option(group)
    _json_option(p, "what was signed (root, items, signature, format, signer)")


def _add_verify(sub, made) -> None:
    p = _subcommand(sub, "verify", made, "check a signature, then the artifact against it",
                    "Check the bundle's signature, recompute the artifact's manifest and name every missing, "
                    "extra or changed item.")
    _artifact_options(p, leaf_size=None)
    _verifying_options(p)
    group = p.add_argument_group("signature")
    group.add_argument("--signature", metavar="SIG", help="the bundle (default: PATH.sig beside PATH)")
    group.add_argument("--allow-uncovered", action="store_true",
                       help="against a signature of a model in memory (tensors only): accept the files on disk "
                            "that no signed tensor covers (config, code, pickles); they are listed, but by default "
                            "each fails the verification")
    group = p.add_argument_group("datasets")
    group.add_argument("--dataset", action="store_true", help="PATH is a dataset")
    _sidecar_option(group)
    group.add_argument("--sample", action="append", metavar="NAME",
                       help="with --dataset: check only this sample (relative name), without rehashing the rest; "
                            "repeatable")
    group.add_argument("--source", action="append", nargs=2, metavar=("PROVENANCE", "PUB.pem"),
                       help="with --dataset: also require each sample's signature by its source, from this "
                            "provenance file (see sign-samples) and the source's public key; repeatable, one per source")
    _json_option(p, "the verification report")


def _add_sign_samples(sub, made) -> None:
    p = _subcommand(sub, "sign-samples", made, "sign every sample of a dataset source (per-sample provenance)",
                    "Hash every file under DIR and sign each one's Merkle root with the source's key (batch ECDSA "
                    "P-256, on the GPU when one is usable), into a provenance file. A loader or `sentry verify "
                    "--dataset --source` then checks every sample of an assembled dataset against the source that "
                    "contributed it.")
    p.add_argument("path", metavar="DIR", help="the source's directory of samples")
    group = p.add_argument_group("signer")
    group.add_argument("--key", required=True, metavar="KEY.pem", help="the source's ECDSA P-256 private key (PEM)")
    group.add_argument("--password-file", metavar="FILE", help=PASSWORD_HELP)
    group = p.add_argument_group("provenance file")
    group.add_argument("--prefix", default="", metavar="DIR/",
                       help="put DIR/ before every sample name: where these samples sit in the assembled dataset")
    group.add_argument("-o", "--output", metavar="FILE",
                       help="the provenance file to write (default: DIR.provenance.jsonl beside DIR); "
                            f"{_never_over('an earlier provenance file')}")
    group.add_argument("--force", action="store_true", help=FORCE_HELP)
    _selection_group(p, "DIR", defaults=False)
    _hashing_group(p, leaf_size="must be the dataset's", device_for="the hashing and the signatures")


def _add_audit(sub, made) -> None:
    p = _subcommand(sub, "audit", made, "check every signature under a directory in one batch, then the artifacts",
                    "Find every bundle (*.sig) under DIR, check all their signatures in one batch (on the GPU when "
                    "one is usable), then verify each artifact X beside its X.sig as `verify` would (a model, a "
                    "dataset with its sidecar, or an OMS bundle). Each bundle passes or fails on its own; the exit "
                    "code is 1 if any failed.")
    p.add_argument("directory", metavar="DIR", help="directory holding signed models or datasets and their .sig files")
    group = p.add_argument_group("verifier")
    group.add_argument("--public-key", required=True, metavar="PUB.pem", help="public key of the signer (PEM)")
    group.add_argument("--signatures-only", action="store_true", help="check the signatures, not the artifacts")
    _hashing_group(p, leaf_size=None, device_for="the signatures and the hashing")
    _json_option(p, "one record per bundle")


def _add_doctor(sub, made) -> None:
    p = _subcommand(sub, "doctor", made, "say which hashing paths this installation runs, and why",
                    "Print the version, the CPU hashing path (the C accelerator, or why it is missing), where the "
                    "CUDA kernels and cufile.json are, the optional dependencies and their versions, and what a "
                    "cheap CUDA probe finds.")
    _json_option(p, "the report")


def _add_image(sub, made) -> None:
    image = _subcommand(sub, "image", made, "build or verify a model disk image (EROFS + dm-verity)",
                        "Model disk images: a reproducible EROFS image of a model directory with its dm-verity hash "
                        "tree (docs/spec.md §10).")
    actions = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    _add_image_build(actions, made)
    _add_image_verify(actions, made)


def _add_image_build(actions, made) -> None:
    p = _subcommand(actions, "build", made, "build the image and its verity tree (and sign them)",
                    "Build the image and its verity tree; with --key (and --certificate) or --sigstore, also sign a "
                    "statement binding the verity root, the image's SHA-256 and the model's manifest root "
                    "(docs/spec.md §10.5).")
    p.add_argument("path", metavar="DIR", help="model directory")
    group = p.add_argument_group("image")
    group.add_argument("-o", "--output", required=True, metavar="OUT.img", help="the image to write (tree appended)")
    group.add_argument("--layout", choices=("plain", "modelwrap", "privatemode"), default="plain",
                       help="plain (default), modelwrap (Tinfoil .mpk + .info) or privatemode (Edgeless, repart.json)")
    group.add_argument("--model-id", metavar="ORG/NAME@REVISION", help="modelwrap: the model identity (salt and UUID)")
    group.add_argument("--salt", metavar="HEX", help="plain: the verity salt (default 00)")
    group.add_argument("--uuid", help="plain: the file system and verity UUID (default all zeros)")
    group.add_argument("--force", action="store_true", help="replace existing outputs")
    group = _selection_group(p, "DIR", symlinks="copy what symbolic links point to (only inside {})")
    group.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the verity tree is hashed")
    _quiet_option(group)
    _signing_options(p)
    p.add_argument_group("signature").add_argument(
        "--signature", metavar="SIG", help="when signing: where to write the bundle (default OUT.img.sig)")
    _json_option(p, "the result")


def _add_image_verify(actions, made) -> None:
    p = _subcommand(actions, "verify", made, "check an image against a dm-verity root hash or its signature",
                    "Check an image against a trusted root hash (--root-hash), or against its signed statement (a "
                    "verifier option: --public-key, --certificate-chain, or --identity with --issuer), which gives "
                    "the root, hash offset, salt and superblock flag and the image's SHA-256.")
    p.add_argument("image", metavar="IMAGE", help="the image with its tree")
    group = p.add_argument_group("trusted root")
    group.add_argument("--root-hash", metavar="HEX",
                       help="the trusted dm-verity root hash (with a signature: it must be the signed one)")
    group.add_argument("--hash-offset", type=int, metavar="BYTES",
                       help="where the tree (or its superblock) starts; default: the EROFS image's size")
    group.add_argument("--salt", metavar="HEX", help="the salt (default: the verity superblock's)")
    group.add_argument("--no-superblock", action="store_true", help="the tree starts at the hash offset (privatemode)")
    group.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the tree is recomputed")
    _verifying_options(p)
    group = p.add_argument_group("signature")
    group.add_argument("--signature", metavar="SIG", help="the image's signature bundle (default: IMAGE.sig)")
    group.add_argument("--model-signature", metavar="MODEL.sig",
                       help="with a signature: a Sentry model signature (same verifier) that must sign the manifest "
                            "root the image's statement names, i.e. the same weights")
    _json_option(p, "the result")


class _Version(argparse.Action):
    """``--version``: the report of ``sentry doctor`` without the CUDA probe, so it stays instant."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from .doctor import collect, lines

        print("\n".join(lines(collect(gpu=False))))
        parser.exit()


# -- running a command --------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress(args):
    """A progress bar on a terminal (not with --quiet); None otherwise, so that no work (such as
    totalling file sizes) is spent on a bar nobody sees."""
    from .progress import ProgressBar

    bar = ProgressBar(enabled=False if args.quiet else None)
    if not bar.enabled:
        yield None
        return
    with bar:
        yield bar


def _password_for(key_path, password_file):
    from .signing.keys import private_key_is_encrypted, read_password

    if password_file is None and not private_key_is_encrypted(key_path):
        return None
    return read_password(password_file, prompt=True)


def cmd_keygen(args, out: Output) -> None:
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
    out.say(f"wrote private key {key} and public key {public}")


def cmd_hash(args, out: Output) -> None:
    from .api import hash_artifact

    out.note(path=args.path)
    with _progress(args) as bar:
        manifest = hash_artifact(args.path, leaf_size=args.leaf_size, ignore=args.ignore,
                                 default_ignores=args.default_ignores, allow_symlinks=args.allow_symlinks,
                                 device=args.device, progress=bar)
    root = manifest.root().hex()
    out.note(artifact_type=manifest.artifact_type, format="sentry", root=root)
    out.report = {"root": root, **manifest.to_predicate()}
    out.say(*(f"{it.root.hex()}  {it.size:>14}  {it.label}" for it in manifest.items),
            f"manifest root {root} ({len(manifest.items)} items, leaf size {manifest.params.leaf_size})")


def _signer_for(args):
    """The Signer the options ask for; every combination problem is a usage error."""
    from .signing import CertificateSigner, KeySigner, load_certificates, load_private_key

    sigstore_only = [o for o, v in (("--identity-token", args.identity_token), ("--staging", args.staging),
                                    ("--trust-config", args.trust_config), ("--cache-dir", args.cache_dir)) if v]
    if args.sigstore:
        if args.key or args.certificate:
            raise SentryError("--sigstore signs without a key of yours: leave out --key and --certificate")
        from .signing.sigstore import SigstoreSigner

        log.info("signing keyless with Sigstore%s", " (staging)" if args.staging else "")
        return SigstoreSigner(identity_token=args.identity_token, staging=args.staging,
                              trust_config=args.trust_config, cache_dir=args.cache_dir)
    if sigstore_only:
        raise SentryError(f"{sigstore_only[0]} is for keyless signing: add --sigstore")
    if args.key is None:
        raise SentryError("choose how to sign: --key KEY.pem (with --certificate CERT.pem for X.509) or --sigstore")
    if args.certificate_chain and not args.certificate:
        raise SentryError("--certificate-chain goes with --certificate")
    key = load_private_key(args.key, _password_for(args.key, args.password_file))
    log.info("signing with the key %s%s", args.key,
             f" and the certificate {args.certificate}" if args.certificate else "")
    if not args.certificate:
        return KeySigner(key)
    certificate, *chain = load_certificates(args.certificate)
    return CertificateSigner(key, certificate, chain + [c for p in args.certificate_chain for c in load_certificates(p)])


def _verifier_for(args):
    """The Verifier the options ask for: exactly one of a public key, CA certificates, a Sigstore identity."""
    from .signing import CertificateVerifier, KeyVerifier, load_certificates, load_public_key

    chosen = [o for o, v in (("--public-key", args.public_key), ("--certificate-chain", args.certificate_chain),
                             ("--identity/--issuer", args.identity or args.issuer)) if v]
    if len(chosen) != 1:
        raise SentryError("choose one way to verify: --public-key PUB.pem, --certificate-chain CA.pem, "
                          "or --identity ID with --issuer URL")
    if (args.trust_config or args.staging) and not (args.identity or args.issuer):
        raise SentryError("--trust-config and --staging are for Sigstore bundles: add --identity and --issuer")
    log.info("trusting %s", f"the public key {args.public_key}" if args.public_key else
             f"the CA certificates in {', '.join(args.certificate_chain)}" if args.certificate_chain else
             f"the Sigstore identity {args.identity} from {args.issuer}")
    if args.public_key:
        return KeyVerifier(load_public_key(args.public_key))
    if args.certificate_chain:
        return CertificateVerifier([c for p in args.certificate_chain for c in load_certificates(p)])
    if not (args.identity and args.issuer):
        raise SentryError("Sigstore verification needs both --identity and --issuer")
    from .signing.sigstore import SigstoreVerifier

    return SigstoreVerifier(args.identity, args.issuer, trust_config=args.trust_config, staging=args.staging)


def _key_files(args) -> dict:
    """The files signing reads its key, identity or password from: never written over."""
    files = {path: "a certificate chain file" for path in getattr(args, "certificate_chain", ())}
    for path, what in ((getattr(args, "certificate", None), "the signing certificate"),
                       (getattr(args, "trust_config", None), "the trust config"),
                       (args.password_file, "the password file"), (args.key, "the signing key")):
        if path:
            files[path] = what
    return files


def _sign_options(args) -> dict:
    """The API's options that the sign command's flags give, each combination problem a usage error."""
    if args.dataset and args.format == "oms":
        raise SentryError("the OMS format signs models: leave out --dataset or --format oms")
    if args.dataset and args.training_data:
        raise SentryError("--training-data links a model to its datasets: leave out --dataset")
    options = {"format": args.format} if args.format != "sentry" else {}
    if not args.dataset:  # a dataset has no default ignores
        options["default_ignores"] = args.default_ignores
    if args.training_data:
        options.update(training_data=args.training_data, dataset_public_key=args.dataset_public_key)
    if args.part_samples:
        if not args.dataset:
            raise SentryError("--part-samples splits a dataset's sidecar: add --dataset")
        options["part_samples"] = args.part_samples
    return {**options, **_dataset_args(args)}


def cmd_sign(args, out: Output) -> None:
    from .api import sign_dataset, sign_model
    from .manifest.claim import read_claim
    from .manifest.dataset import default_sidecar_path

    out.note(path=args.path, artifact_type="dataset" if args.dataset else "model", format=args.format,
             signature=args.signature)
    options = _sign_options(args)
    signer = _signer_for(args)
    sign = sign_dataset if args.dataset else sign_model
    with _progress(args) as bar:
        sig = sign(args.path, key=signer, signature=args.signature, ignore=args.ignore, allow_symlinks=args.allow_symlinks,
                   leaf_size=args.leaf_size, device=args.device, progress=bar, force=args.force,
                   key_files=_key_files(args), **options)
    out.note(signature=str(sig))
    sidecar = (args.sidecar or default_sidecar_path(sig)) if args.dataset else None
    statement = out.note_bundle(sig)  # what was just written, read back
    if statement is not None:
        claim = read_claim(statement, Path(sig))
        sidecar = sidecar or getattr(getattr(claim, "sidecar", None), "path", None)  # a model's item list
        out.report = {"items": claim.item_count(), "sidecar": None if sidecar is None else str(sidecar),
                      "part_samples": args.part_samples or None, "training_data": args.training_data}
    if not args.dataset:
        out.say(f"signed {args.path} -> {sig}")
    else:
        out.say(f"signed {args.path} -> {sig} (samples listed in "
                f"{f'parts beside {sidecar}' if args.part_samples else sidecar})")


def cmd_verify(args, out: Output) -> None:
    from .api import default_signature_path, verify_dataset, verify_model

    if args.dataset and args.allow_uncovered:
        raise SentryError("--allow-uncovered is for models (every file of a dataset is a sample): "
                          "leave it out or drop --dataset")
    out.note(path=args.path, artifact_type="dataset" if args.dataset else "model",
             signature=str(args.signature or default_signature_path(args.path)))
    verify = verify_dataset if args.dataset else verify_model
    model_options = {} if args.dataset else {"allow_uncovered": args.allow_uncovered}
    verifier = _verifier_for(args)
    try:
        with _progress(args) as bar:
            report = verify(args.path, public_key=verifier, signature=args.signature, ignore=args.ignore,
                            default_ignores=args.default_ignores, allow_symlinks=args.allow_symlinks,
                            device=args.device, progress=bar, **_dataset_args(args), **model_options)
    except VerificationError as exc:
        if exc.report is not None:  # the signature verified; what it signs did not match
            out.note_bundle(out.context["signature"], verifier)
            out.report = exc.report.to_json()
            out.say(*exc.report.lines())
        raise
    out.note_bundle(out.context["signature"], verifier)
    out.note(root=report.root)  # the root the verify checked (the bundle read again could have been replaced)
    out.report = report.to_json()
    # What passed without being compared (allowed, tied, uncovered) is said on success too.
    out.say(*report.lines(), f"OK: {report.summary()}")


def cmd_audit(args, out: Output) -> None:
    from .audit import audit

    out.note(path=args.directory)
    with _progress(args) as bar:
        entries = audit(args.directory, args.public_key, signatures_only=args.signatures_only,
                        device=args.device, progress=bar)
    if not entries:
        raise SentryError(f"no signature bundles (*.sig) under {args.directory}")
    failed = [e for e in entries if not e.ok]
    out.report = {"verified": len(entries) - len(failed), "failed": len(failed),
                  "bundles": [e.to_json() for e in entries]}
    for e in entries:
        out.say(f"OK    {e.signature}: {e.summary}" if e.ok else f"FAIL  {e.signature}: {e.error}")
    out.say(f"{len(entries) - len(failed)} of {len(entries)} bundles verified")
    if failed:  # each bundle's error is in its line (and its record) above
        raise VerificationError(f"{len(failed)} of {len(entries)} bundles failed verification")


def cmd_sign_samples(args, out: Output) -> None:
    from .api import sign_samples
    from .signing import load_private_key

    key = load_private_key(args.key, _password_for(args.key, args.password_file))
    with _progress(args) as bar:
        written = sign_samples(args.path, key, args.output, prefix=args.prefix, ignore=args.ignore,
                               allow_symlinks=args.allow_symlinks, leaf_size=args.leaf_size, device=args.device,
                               progress=bar, force=args.force, key_files=_key_files(args))
    out.say(f"signed the samples of {args.path} -> {written}")


def cmd_doctor(args, out: Output) -> None:
    from .doctor import collect, lines

    out.report = collect()
    out.say(*lines(out.report))


# -- sentry image: model disk images (EROFS + dm-verity), sentry/image ----------------------------------


def _root_hash_arg(text):
    try:
        root = bytes.fromhex(text)
    except ValueError:
        root = b""
    if len(root) != 32:
        raise SentryError("--root-hash must be 64 hex digits")
    return root


def _image_verify(args) -> tuple[dict, object]:
    """The summary of ``image verify``, and the verifier of a signed image (else None)."""
    from . import image

    root = None if args.root_hash is None else _root_hash_arg(args.root_hash)
    signed = bool(args.signature or args.public_key or args.certificate_chain or args.identity or args.issuer)
    if signed:
        if args.hash_offset is not None or args.salt is not None or args.no_superblock:
            raise SentryError("the signed statement gives the hash offset, salt and superblock flag: leave out "
                              "--hash-offset, --salt and --no-superblock")
        verifier = _verifier_for(args)
        return image.verify_signed_image(args.image, verifier, args.signature, root_hash=root,
                                         model_signature=args.model_signature, device=args.device), verifier
    if args.model_signature:
        raise SentryError("--model-signature is checked against the image's signature: add its verifier "
                          "(--public-key, --certificate-chain, or --identity with --issuer)")
    if root is None:
        raise SentryError("give the trusted --root-hash HEX, or the image signature's verifier (--public-key, "
                          "--certificate-chain, or --identity with --issuer)")
    salt = None if args.salt is None else image.layouts.parse_salt(args.salt)
    return image.verify_image(args.image, root, hash_offset=args.hash_offset, salt=salt,
                              superblock=not args.no_superblock, device=args.device), None


def _note_image_signature(out: Output, signature: str, verifier, manifest_root: str) -> None:
    """An image signature's context; its root is the model's manifest root, not the statement's
    subject (the image's digest)."""
    out.note_bundle(signature, verifier)
    out.note(signature=signature, root=manifest_root)


def _signing_asked(args) -> bool:
    return any((args.key, args.certificate, args.certificate_chain, args.password_file, args.sigstore,
                args.identity_token, args.staging, args.trust_config, args.cache_dir))


def cmd_image(args, out: Output) -> None:
    (_cmd_image_verify if args.image_command == "verify" else _cmd_image_build)(args, out)


def _cmd_image_verify(args, out: Output) -> None:
    out.note(path=args.image, artifact_type="image", signature=args.signature)
    summary, verifier = _image_verify(args)
    out.report = summary
    if "signature" in summary:
        _note_image_signature(out, summary["signature"], verifier, summary["manifest_root"])
    out.say(f"OK: {args.image} matches root hash {summary['root_hash']}"
            + (f" (signed by {summary['signature']})" if "signature" in summary else ""))


def _cmd_image_build(args, out: Output) -> None:
    from . import image

    out.note(path=args.path, artifact_type="image")
    signer = _signer_for(args) if _signing_asked(args) else None
    with _progress(args) as bar:
        result = image.build_image(args.path, args.output, layout=args.layout, salt=args.salt, uuid=args.uuid,
                                   model_id=args.model_id, ignore=args.ignore, default_ignores=args.default_ignores,
                                   allow_symlinks=args.allow_symlinks, device=args.device, force=args.force,
                                   signer=signer, signature=args.signature, progress=bar, key_files=_key_files(args))
    j = out.report = result.to_json()
    out.note(root=j["manifest_root"])
    if signer is not None:
        _note_image_signature(out, str(args.signature or f"{args.output}.sig"), None, j["manifest_root"])
    out.say(f"wrote {', '.join(j['outputs'])}: root hash {j['root_hash']}, hash offset {j['hash_offset']}, "
            f"salt {j['salt'] or '-'}" + (f"; reference {j['reference']}" if "reference" in j else ""))


# -- errors in the command line's words ------------------------------------------------------------------


# The option that gives each API setting an error's remedy names (sentry.errors.Remedy).
_REMEDY_OPTIONS = {
    "allow_symlinks": "--allow-symlinks",
    "device": "--device {}",
    "force": "--force",
    "trust_config": "--trust-config FILE",
    "identity_token": "--identity-token TOKEN",
    "leaf_size": "--leaf-size {}",
    "dataset_public_key": "--dataset-public-key PUB",
    "public_key": "--public-key PUB",
    "certificate_chain": "--certificate-chain CA.pem",
    "identity": "--identity and --issuer",
    "hash_offset": "--hash-offset {}",
    "salt": "--salt {}",
    "superblock": "--no-superblock",
    "model_id": "--model-id {}",
    "part_samples": "--part-samples {}",
    "sidecar": "--sidecar {}",
}


def error_message(exc: SentryError) -> str:
    """The error in the command line's words: its remedy names this CLI's option."""
    remedy = exc.remedy
    if remedy is None:
        return str(exc)
    if remedy.setting == "dataset":
        advice = ("add" if remedy.value == "True" else "drop") + " --dataset"
    elif remedy.setting == "image":
        advice = "verify it with sentry image verify IMAGE --signature SIG"
    elif remedy.setting == "password":
        from .signing.keys import PASSWORD_ENV

        advice = f"give its password with --password-file FILE or {PASSWORD_ENV}"
    else:
        option = _REMEDY_OPTIONS[remedy.setting].format(remedy.value.strip("'"))
        advice = f"pass {option}" + (f" {remedy.purpose}" if remedy.purpose else "")
    return f"{exc.message}; {advice}"


# -- main ------------------------------------------------------------------------------------------------


COMMANDS = {"doctor": cmd_doctor, "keygen": cmd_keygen, "hash": cmd_hash, "sign": cmd_sign, "verify": cmd_verify,
            "audit": cmd_audit, "sign-samples": cmd_sign_samples, "image": cmd_image}
_ACTIONS = {"image": ("build", "verify")}


class _StderrHandler(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment (a caller or test may have replaced it)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("sentry: %(levelname)s: %(name)s: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


@contextlib.contextmanager
def _logging(verbose: int, level: str | None):
    """The ``sentry`` loggers' level while a command runs: --log-level, else WARNING lowered a step
    per -v, on stderr; restored after, for a caller that runs main in its own process."""
    logger = logging.getLogger("sentry")
    handler, before = _StderrHandler(), logger.level
    logger.setLevel(level or max(logging.DEBUG, logging.WARNING - 10 * verbose))
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(map(str, argv))
    try:
        args = build_parser().parse_args(argv)
    except _UsageExit as exc:
        if wants_json(argv):  # a script asked for JSON: it gets it for a usage error too
            Output(command_of(argv, COMMANDS, _ACTIONS), True).fail(SentryError(), exc.message)
        raise
    command = args.command + (f" {args.image_command}" if args.command == "image" else "")
    with _logging(args.verbose, args.log_level):
        return _run(args, Output(command, getattr(args, "json", False)))


def _run(args, out: Output) -> int:
    try:
        COMMANDS[args.command](args, out)  # a failure raises: SentryError, or VerificationError (exit 1)
        out.finish()
        sys.stdout.flush()  # a closed pipe must show up here, not as a message at interpreter exit
        return 0
    except BrokenPipeError:
        # stdout was closed early (`sentry hash big/ | head`): stop quietly, as a tool killed by SIGPIPE
        # would (not 0 or 1: the output is incomplete, and 1 means "verification failed").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE
    except SentryError as exc:
        message = error_message(exc)
        out.fail(exc, message)
        print(f"sentry: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sentry: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
