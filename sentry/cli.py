"""`sentry` command line: keygen, hash, sign, verify, audit, sign-samples, image, doctor.

Exit codes: 0 success, 1 verification failed, 2 usage or input error (and 141, as for SIGPIPE,
when stdout is closed before the output is written). Errors are one sentence on stderr; results
go to stdout (``--json`` for scripts).
"""
from __future__ import annotations

import argparse
import contextlib
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
  sentry sign model/ --sigstore --format oms          # keyless, in model_signing's format
  sentry verify model/ --identity me@example.com --issuer https://github.com/login/oauth
  sentry audit hub/ --public-key signing-key.pub.pem  # every *.sig under hub/, one batch
  sentry sign-samples lab-a/ --key lab-a.pem --prefix lab-a/  # per-sample provenance of one source
  sentry verify data/ --dataset --public-key owner.pub.pem --source lab-a.provenance.jsonl lab-a.pub.pem
"""
EXIT_CODES = "exit codes: 0 success, 1 verification failed, 2 usage or input error."


def _never_over(earlier: str) -> str:
    """The help for an output option: what it may replace (docs/spec.md §8)."""
    return (f"never over a key file, the artifact, or a file inside it that is not {earlier}; over another "
            f"existing file that is not {earlier} only with --force")


FORCE_HELP = ("replace an existing file that is not an earlier output of the same kind (never the key, "
              "certificate or password files, the artifact, or a file inside it)")


def _ignore_options(p: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    p.add_argument("--ignore", action="append", default=[], metavar="PATTERN",
                   help="leave out paths matching PATTERN (a signature records it); repeatable. A glob "
                        "without '/' matches any single path component at any depth ('*.log'); one with '/' "
                        "is anchored at the top ('runs/': the top-level directory runs, '/notes.txt': the "
                        "top-level file); a trailing '/' matches directories only")
    if not defaults:
        return
    p.add_argument("--no-default-ignores", dest="default_ignores", action="store_false",
                   help="also hash the top-level .git, .github, .gitattributes, .gitignore, .hg, .svn and "
                        ".DS_Store, which are left out by default (nested ones are always hashed; OMS: the git "
                        "paths, as model_signing's --no-ignore-git-paths); a signature records it. On verify: "
                        "check them too, whatever the signature recorded. Datasets have no default ignores")


def _hashing_options(p: argparse.ArgumentParser, *, leaf_size: bool) -> None:
    p.add_argument("path", help="model directory, checkpoint file (.safetensors: per tensor too) or dataset directory")
    _ignore_options(p)
    p.add_argument("--allow-symlinks", action="store_true",
                   help="hash what symbolic links point to (only inside PATH); by default they are refused, "
                        "except in a Hugging Face cache snapshot (links into its repository's blobs/)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="hashing backend (default: auto = CUDA when a GPU is usable, else CPU); CUDA reads "
                        "files with kvikio (GPUDirect Storage or its compatibility mode) when it is installed")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    if leaf_size:
        p.add_argument("--leaf-size", type=int, metavar="BYTES",
                       help="Merkle leaf size, a power of two (default 4096); recorded in the signature")


def _dataset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sidecar", metavar="FILE",
                   help="with --dataset: the sample list (default: beside the signature, SIG's name with .samples.jsonl); "
                        f"when signing: not SIG, and {_never_over('an earlier sample list')}")


def _dataset_args(args) -> dict:
    sample, source = getattr(args, "sample", None), getattr(args, "source", None)
    if not args.dataset:
        if args.sidecar or sample or source:
            raise SentryError("--sidecar, --sample and --source are for a dataset: add --dataset")
        return {}
    return {"sidecar": args.sidecar, **({"samples": sample} if sample else {}),
            **({"provenance": [tuple(s) for s in source]} if source else {})}


def _signing_options(p: argparse.ArgumentParser) -> None:
    """How to sign (one signer, built by :func:`_signer_for`): shared by sign and image build."""
    p.add_argument("--key", metavar="KEY.pem", help="ECDSA P-256 private key (PEM)")
    p.add_argument("--certificate", metavar="CERT.pem",
                   help="with --key: its X.509 signing certificate (PEM; further certificates in it join the chain)")
    p.add_argument("--certificate-chain", action="append", default=[], metavar="CHAIN.pem",
                   help="with --certificate: intermediate certificates to put in the bundle; repeatable")
    p.add_argument("--password-file", metavar="FILE",
                   help="password of an encrypted key (else SENTRY_KEY_PASSWORD, else a prompt on a terminal)")
    p.add_argument("--sigstore", action="store_true",
                   help="sign keyless with Sigstore: an OIDC identity (--identity-token, ambient CI credentials, "
                        "or a login on a terminal) gets a short-lived certificate; needs the network")
    p.add_argument("--identity-token", metavar="TOKEN", help="with --sigstore: the OIDC identity token to use")
    p.add_argument("--staging", action="store_true", help="with --sigstore: use Sigstore's staging instance")
    p.add_argument("--trust-config", metavar="FILE", help="with --sigstore: a Sigstore client trust config to use")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="with --sigstore: where the trust root fetched by TUF is kept "
                        "(default: $SENTRY_CACHE_DIR, else ~/.cache/sentry)")


def _verifying_options(p: argparse.ArgumentParser) -> None:
    """Whom to trust (one verifier, built by :func:`_verifier_for`): shared by verify and image verify."""
    p.add_argument("--public-key", metavar="PUB.pem", help="for a key bundle: the signer's public key (PEM)")
    p.add_argument("--certificate-chain", action="append", default=[], metavar="CA.pem",
                   help="for a certificate bundle: trusted CA certificates (PEM); repeatable")
    p.add_argument("--identity", metavar="ID",
                   help="for a Sigstore bundle: the signer's identity (e-mail, or workflow URI in CI)")
    p.add_argument("--issuer", metavar="URL", help="for a Sigstore bundle: the identity's OIDC issuer")
    p.add_argument("--trust-config", metavar="FILE",
                   help="for a Sigstore bundle: a client trust config (default: the public instance's trusted "
                        "root shipped with sigstore-python; verification is offline either way)")
    p.add_argument("--staging", action="store_true", help="for a Sigstore bundle: trust Sigstore's staging instance")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentry", description="Merkle-hash ML models and datasets, sign them, verify them.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="print the version, the CPU hashing path and the "
                        "optional dependencies installed, then exit (`sentry doctor` also probes CUDA)")
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
                       description="Hash an artifact and write a Sigstore bundle (DSSE, in-toto statement) signing its "
                                   "manifest: with a private key, a key and its X.509 certificate, or Sigstore keyless.",
                       epilog=EXIT_CODES)
    _hashing_options(p, leaf_size=True)
    _signing_options(p)
    p.add_argument("--format", choices=("sentry", "oms"), default="sentry",
                   help="sentry (default: Merkle roots, per tensor too) or oms (model_signing's format, "
                        "SHA-256 per file, which `model_signing verify` accepts)")
    p.add_argument("--signature", metavar="SIG",
                   help="where to write the bundle (default: PATH.sig beside PATH; the items of a model too large "
                        "for it, some 150k+, go to SIG's name with .manifest.jsonl, beside it); "
                        f"{_never_over('an earlier bundle')}")
    p.add_argument("--training-data", action="append", default=[], metavar="DATASET.sig",
                   help="a model: record the dataset it was trained on (docs/spec.md §3.1), from that dataset's "
                        "signature, verified first with --dataset-public-key; repeatable")
    p.add_argument("--dataset-public-key", metavar="PUB.pem", help="with --training-data: the dataset owner's public key")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.add_argument("--dataset", action="store_true",
                   help="sign PATH as a dataset: its samples go to a sidecar that the signature covers")
    p.add_argument("--part-samples", type=int, default=0, metavar="N",
                   help="with --dataset: split the sidecar into parts of N records (a power of two), "
                        "SIDECAR.000000.jsonl, ... (docs/spec.md §6.5)")
    _dataset_options(p)

    p = sub.add_parser("verify", help="check a signature, then the artifact against it",
                       description="Check the bundle's signature, recompute the artifact's manifest and name every "
                                   "missing, extra or changed item.",
                       epilog=EXIT_CODES)
    _hashing_options(p, leaf_size=False)
    _verifying_options(p)
    p.add_argument("--signature", metavar="SIG", help="the bundle (default: PATH.sig beside PATH)")
    p.add_argument("--dataset", action="store_true", help="PATH is a dataset")
    _dataset_options(p)
    p.add_argument("--sample", action="append", metavar="NAME",
                   help="with --dataset: check only this sample (relative name), without rehashing the rest; repeatable")
    p.add_argument("--source", action="append", nargs=2, metavar=("PROVENANCE", "PUB.pem"),
                   help="with --dataset: also require each sample's signature by its source, from this provenance "
                        "file (see sign-samples) and the source's public key; repeatable, one per source")
    p.add_argument("--allow-uncovered", action="store_true",
                   help="against a signature of a model in memory (tensors only): accept the files on disk "
                        "that no signed tensor covers (config, code, pickles); they are listed, but by default "
                        "each fails the verification")
    p.add_argument("--json", action="store_true", help="print the verification report as JSON")

    p = sub.add_parser("sign-samples", help="sign every sample of a dataset source (per-sample provenance)",
                       description="Hash every file under DIR and sign each one's Merkle root with the source's "
                                   "key (batch ECDSA P-256, on the GPU when one is usable), into a provenance file. "
                                   "A loader or `sentry verify --dataset --source` then checks every sample of an "
                                   "assembled dataset against the source that contributed it.",
                       epilog=EXIT_CODES)
    p.add_argument("path", metavar="DIR", help="the source's directory of samples")
    p.add_argument("--key", required=True, metavar="KEY.pem", help="the source's ECDSA P-256 private key (PEM)")
    p.add_argument("--password-file", metavar="FILE",
                   help="password of an encrypted key (else SENTRY_KEY_PASSWORD, else a prompt on a terminal)")
    p.add_argument("--prefix", default="", metavar="DIR/",
                   help="put DIR/ before every sample name: where these samples sit in the assembled dataset")
    p.add_argument("-o", "--output", metavar="FILE",
                   help=f"the provenance file to write (default: DIR.provenance.jsonl beside DIR); "
                        f"{_never_over('an earlier provenance file')}")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    _ignore_options(p, defaults=False)
    p.add_argument("--allow-symlinks", action="store_true",
                   help="hash what symbolic links point to (only inside DIR); by default they are refused, "
                        "except in a Hugging Face cache snapshot (links into its repository's blobs/)")
    p.add_argument("--leaf-size", type=int, metavar="BYTES",
                   help="Merkle leaf size, a power of two (default 4096); must be the dataset's")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="for the hashing and the signatures (default: auto = CUDA when a GPU is usable, else CPU)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("audit", help="check every signature under a directory in one batch, then the artifacts",
                       description="Find every bundle (*.sig) under DIR, check all their signatures in one batch "
                                   "(on the GPU when one is usable), then verify each artifact X beside its X.sig "
                                   "as `verify` would (a model, a dataset with its sidecar, or an OMS bundle). "
                                   "Each bundle passes or fails on its own; the exit code is 1 if any failed.",
                       epilog=EXIT_CODES)
    p.add_argument("directory", metavar="DIR", help="directory holding signed models or datasets and their .sig files")
    p.add_argument("--public-key", required=True, metavar="PUB.pem", help="public key of the signer (PEM)")
    p.add_argument("--signatures-only", action="store_true", help="check the signatures, not the artifacts")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="for the signatures and the hashing (default: auto = CUDA when a GPU is usable, else CPU)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one record per bundle as JSON")
    _image_parser(sub)

    p = sub.add_parser("doctor", help="say which hashing paths this installation runs, and why",
                       description="Print the version, the CPU hashing path (the C accelerator, or why it is "
                                   "missing), where the CUDA kernels and cufile.json are, the optional dependencies "
                                   "and their versions, and what a cheap CUDA probe finds.", epilog=EXIT_CODES)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


class _Version(argparse.Action):
    """``--version``: the report of ``sentry doctor`` without the CUDA probe, so it stays instant."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from .doctor import collect, lines

        print("\n".join(lines(collect(gpu=False))))
        parser.exit()


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
                                 default_ignores=args.default_ignores, allow_symlinks=args.allow_symlinks,
                                 device=args.device, progress=bar)
    root = manifest.root().hex()
    if args.json:
        print(json.dumps({"root": root, **manifest.to_predicate()}, indent=2))
    else:
        for it in manifest.items:
            print(f"{it.root.hex()}  {it.size:>14}  {it.label}")
        print(f"manifest root {root} ({len(manifest.items)} items, leaf size {manifest.params.leaf_size})")
    return 0


def _signer_for(args):
    """The Signer the options ask for; every combination problem is a usage error."""
    from .signing import CertificateSigner, KeySigner, load_certificates, load_private_key

    sigstore_only = [o for o, v in (("--identity-token", args.identity_token), ("--staging", args.staging),
                                    ("--trust-config", args.trust_config), ("--cache-dir", args.cache_dir)) if v]
    if args.sigstore:
        if args.key or args.certificate:
            raise SentryError("--sigstore signs without a key of yours: leave out --key and --certificate")
        from .signing.sigstore import SigstoreSigner

        return SigstoreSigner(identity_token=args.identity_token, staging=args.staging,
                              trust_config=args.trust_config, cache_dir=args.cache_dir)
    if sigstore_only:
        raise SentryError(f"{sigstore_only[0]} is for keyless signing: add --sigstore")
    if args.key is None:
        raise SentryError("choose how to sign: --key KEY.pem (with --certificate CERT.pem for X.509) or --sigstore")
    if args.certificate_chain and not args.certificate:
        raise SentryError("--certificate-chain goes with --certificate")
    key = load_private_key(args.key, _password_for(args.key, args.password_file))
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


def cmd_sign(args) -> int:
    from .api import sign_dataset, sign_model

    if args.dataset and args.format == "oms":
        raise SentryError("the OMS format signs models: leave out --dataset or --format oms")
    if args.dataset and args.training_data:
        raise SentryError("--training-data links a model to its datasets: leave out --dataset")
    signer = _signer_for(args)
    options = {"format": args.format} if args.format != "sentry" else {}
    if not args.dataset:  # a dataset has no default ignores
        options["default_ignores"] = args.default_ignores
    if args.training_data:
        options.update(training_data=args.training_data, dataset_public_key=args.dataset_public_key)
    if args.part_samples:
        if not args.dataset:
            raise SentryError("--part-samples splits a dataset's sidecar: add --dataset")
        options["part_samples"] = args.part_samples
    sign = sign_dataset if args.dataset else sign_model
    with _progress(args) as bar:
        sig = sign(args.path, key=signer, signature=args.signature, ignore=args.ignore, allow_symlinks=args.allow_symlinks,
                   leaf_size=args.leaf_size, device=args.device, progress=bar, force=args.force,
                   key_files=_key_files(args), **options, **_dataset_args(args))
    if args.dataset:
        from .manifest.dataset import default_sidecar_path

        side = args.sidecar or default_sidecar_path(sig)
        where = f"parts beside {side}" if args.part_samples else side
        print(f"signed {args.path} -> {sig} (samples listed in {where})")
    else:
        print(f"signed {args.path} -> {sig}")
    return 0


def cmd_verify(args) -> int:
    from .api import verify_dataset, verify_model

    if args.dataset and args.allow_uncovered:
        raise SentryError("--allow-uncovered is for models (every file of a dataset is a sample): "
                          "leave it out or drop --dataset")
    verify = verify_dataset if args.dataset else verify_model
    model_options = {} if args.dataset else {"allow_uncovered": args.allow_uncovered}
    verifier = _verifier_for(args)
    try:
        with _progress(args) as bar:
            report = verify(args.path, public_key=verifier, signature=args.signature, ignore=args.ignore,
                            default_ignores=args.default_ignores, allow_symlinks=args.allow_symlinks,
                            device=args.device, progress=bar, **_dataset_args(args), **model_options)
    except VerificationError as exc:
        if args.json:  # scripts always get a JSON verdict, also when the signature itself is bad
            body = exc.report.to_json() if exc.report is not None else {"ok": False}
            print(json.dumps({**body, "error": error_message(exc)}, indent=2))
        elif exc.report is not None:
            print("\n".join(exc.report.lines()))
        raise
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:  # what passed without being compared (allowed, tied, uncovered) is said on success too
        print("\n".join([*report.lines(), f"OK: {report.summary()}"]))
    return 0


def cmd_audit(args) -> int:
    from .audit import audit

    with _progress(args) as bar:
        entries = audit(args.directory, args.public_key, signatures_only=args.signatures_only,
                        device=args.device, progress=bar)
    if not entries:
        raise SentryError(f"no signature bundles (*.sig) under {args.directory}")
    failed = [e for e in entries if not e.ok]
    if args.json:
        print(json.dumps({"ok": not failed, "bundles": [e.to_json() for e in entries]}, indent=2))
    else:
        for e in entries:
            print(f"OK    {e.signature}: {e.summary}" if e.ok else f"FAIL  {e.signature}: {e.error}")
        print(f"{len(entries) - len(failed)} of {len(entries)} bundles verified")
    return 1 if failed else 0


def cmd_sign_samples(args) -> int:
    from .api import sign_samples
    from .signing import load_private_key

    key = load_private_key(args.key, _password_for(args.key, args.password_file))
    with _progress(args) as bar:
        out = sign_samples(args.path, key, args.output, prefix=args.prefix, ignore=args.ignore,
                           allow_symlinks=args.allow_symlinks, leaf_size=args.leaf_size, device=args.device,
                           progress=bar, force=args.force, key_files=_key_files(args))
    print(f"signed the samples of {args.path} -> {out}")
    return 0


# -- sentry image: model disk images (EROFS + dm-verity), sentry/image ----------------------------------


def _image_parser(sub) -> None:
    image = sub.add_parser("image", help="build or verify a model disk image (EROFS + dm-verity)",
                           description="Model disk images: a reproducible EROFS image of a model directory with "
                                       "its dm-verity hash tree (docs/spec.md §10).", epilog=EXIT_CODES)
    isub = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    p = isub.add_parser("build", help="build the image and its verity tree (and sign them)", epilog=EXIT_CODES,
                        description="Build the image and its verity tree; with --key (and --certificate) or "
                                    "--sigstore, also sign a statement binding the verity root, the image's "
                                    "SHA-256 and the model's manifest root (docs/spec.md §10.5).")
    p.add_argument("path", metavar="DIR", help="model directory")
    p.add_argument("-o", "--output", required=True, metavar="OUT.img", help="the image to write (tree appended)")
    p.add_argument("--layout", choices=("plain", "modelwrap", "privatemode"), default="plain",
                   help="plain (default), modelwrap (Tinfoil .mpk + .info) or privatemode (Edgeless, repart.json)")
    p.add_argument("--model-id", metavar="ORG/NAME@REVISION", help="modelwrap: the model identity (salt and UUID)")
    p.add_argument("--salt", metavar="HEX", help="plain: the verity salt (default 00)")
    p.add_argument("--uuid", help="plain: the file system and verity UUID (default all zeros)")
    _ignore_options(p)
    p.add_argument("--allow-symlinks", action="store_true", help="copy what symbolic links point to (only inside DIR)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the verity tree is hashed")
    _signing_options(p)
    p.add_argument("--signature", metavar="SIG", help="when signing: where to write the bundle (default OUT.img.sig)")
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p = isub.add_parser("verify", help="check an image against a dm-verity root hash or its signature",
                        epilog=EXIT_CODES,
                        description="Check an image against a trusted root hash (--root-hash), or against its signed "
                                    "statement (a verifier option: --public-key, --certificate-chain, or --identity "
                                    "with --issuer), which gives the root, hash offset, salt and superblock flag and "
                                    "the image's SHA-256.")
    p.add_argument("image", metavar="IMAGE", help="the image with its tree")
    p.add_argument("--root-hash", metavar="HEX",
                   help="the trusted dm-verity root hash (with a signature: it must be the signed one)")
    _verifying_options(p)
    p.add_argument("--signature", metavar="SIG", help="the image's signature bundle (default: IMAGE.sig)")
    p.add_argument("--model-signature", metavar="MODEL.sig",
                   help="with a signature: a Sentry model signature (same verifier) that must sign the manifest "
                        "root the image's statement names, i.e. the same weights")
    p.add_argument("--hash-offset", type=int, metavar="BYTES",
                   help="where the tree (or its superblock) starts; default: the EROFS image's size")
    p.add_argument("--salt", metavar="HEX", help="the salt (default: the verity superblock's)")
    p.add_argument("--no-superblock", action="store_true", help="the tree starts at the hash offset (privatemode)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the tree is recomputed")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _root_hash_arg(text):
    try:
        root = bytes.fromhex(text)
    except ValueError:
        root = b""
    if len(root) != 32:
        raise SentryError("--root-hash must be 64 hex digits")
    return root


def _image_verify(args) -> dict:
    from . import image

    root = None if args.root_hash is None else _root_hash_arg(args.root_hash)
    signed = bool(args.signature or args.public_key or args.certificate_chain or args.identity or args.issuer)
    if signed:
        if args.hash_offset is not None or args.salt is not None or args.no_superblock:
            raise SentryError("the signed statement gives the hash offset, salt and superblock flag: leave out "
                              "--hash-offset, --salt and --no-superblock")
        return image.verify_signed_image(args.image, _verifier_for(args), args.signature, root_hash=root,
                                         model_signature=args.model_signature, device=args.device)
    if args.model_signature:
        raise SentryError("--model-signature is checked against the image's signature: add its verifier "
                          "(--public-key, --certificate-chain, or --identity with --issuer)")
    if root is None:
        raise SentryError("give the trusted --root-hash HEX, or the image signature's verifier (--public-key, "
                          "--certificate-chain, or --identity with --issuer)")
    salt = None if args.salt is None else image.layouts.parse_salt(args.salt)
    return image.verify_image(args.image, root, hash_offset=args.hash_offset, salt=salt,
                              superblock=not args.no_superblock, device=args.device)


def _signing_asked(args) -> bool:
    return any((args.key, args.certificate, args.certificate_chain, args.password_file, args.sigstore,
                args.identity_token, args.staging, args.trust_config, args.cache_dir))


def cmd_image(args) -> int:
    from . import image

    if args.image_command == "verify":
        try:
            out = _image_verify(args)
        except VerificationError as exc:
            if args.json:
                print(json.dumps({"ok": False, "error": error_message(exc)}, indent=2))
            raise
        print(json.dumps(out, indent=2) if args.json else f"OK: {args.image} matches root hash {out['root_hash']}"
              + (f" (signed by {out['signature']})" if "signature" in out else ""))
        return 0
    signer = _signer_for(args) if _signing_asked(args) else None
    with _progress(args) as bar:
        result = image.build_image(args.path, args.output, layout=args.layout, salt=args.salt, uuid=args.uuid,
                                   model_id=args.model_id, ignore=args.ignore, default_ignores=args.default_ignores,
                                   allow_symlinks=args.allow_symlinks, device=args.device, force=args.force,
                                   signer=signer, signature=args.signature, progress=bar, key_files=_key_files(args))
    j = result.to_json()
    if args.json:
        print(json.dumps(j, indent=2))
    else:
        print(f"wrote {', '.join(j['outputs'])}: root hash {j['root_hash']}, hash offset {j['hash_offset']}, "
              f"salt {j['salt'] or '-'}" + (f"; reference {j['reference']}" if "reference" in j else ""))
    return 0


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



def cmd_doctor(args) -> int:
    from .doctor import collect, lines

    info = collect()
    print(json.dumps(info, indent=2) if args.json else "\n".join(lines(info)))
    return 0


COMMANDS = {"doctor": cmd_doctor, "keygen": cmd_keygen, "hash": cmd_hash, "sign": cmd_sign, "verify": cmd_verify,
            "audit": cmd_audit, "sign-samples": cmd_sign_samples, "image": cmd_image}


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
        print(f"sentry: {error_message(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("sentry: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
