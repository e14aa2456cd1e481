"""Per-sample provenance: each source of a dataset signs the root of every sample it contributes.

A **provenance file** (docs/spec.md §7) is what one source writes: JSON Lines, a header naming
the format, the Merkle leaf size and the signing key (its hint), then one canonical record per
sample, sorted by name::

    {"key":"<64 hex>","leaf_size":4096,"type":"https://github.com/sentry-artifacts/sentry/sample-provenance/v1"}
    {"name":"cat/001.png","root":"<64 hex>","signature":"<128 hex: r || s>","size":1234}

Each signature is standard ECDSA P-256 / SHA-256 over :func:`sample_message` (a domain prefix,
the leaf size and the sample's root), made for a whole batch at once with
:func:`sentry.crypto.batch_sign`, and checked a loader batch at a time with
:func:`sentry.crypto.batch_verify`. A signature vouches for a sample's content, not for its name or
its place in a dataset: the dataset's own signature covers membership. Verification always uses
the root the verifier computed from the bytes; the record's root and size only say what the
source signed, so that a failure can say whether the content or the signature is at fault.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import BadSignature, InvalidBundle, Remedy, SentryError
from ..io.posix import FileSource
from ..manifest.sidecar import check_signable_name, read_lines, record_name
from .keys import load_public_key, public_key_hint

__all__ = [
    "BATCH",
    "DOMAIN",
    "PROVENANCE_TYPE",
    "SUFFIX",
    "Provenance",
    "Source",
    "Vouch",
    "default_path",
    "file_lines",
    "header_line",
    "parse",
    "record_line",
    "sample_digest",
    "sample_message",
    "sign_lines",
    "source_name",
]

PROVENANCE_TYPE = "https://github.com/sentry-artifacts/sentry/sample-provenance/v1"
SUFFIX = ".provenance.jsonl"
DOMAIN = b"sentry sample provenance v1\x00"
BATCH = 1 << 14  # samples per batch_sign / batch_verify call: bounds what is held at once

_HEADER = re.compile(rb'\{"key":"([0-9a-f]{64})","leaf_size":([1-9][0-9]{0,9}),"type":"' +
                     re.escape(PROVENANCE_TYPE.encode()) + rb'"\}')
_RECORD = re.compile(rb'\{"name":("(?:[^"\\]|\\.)*"),"root":"([0-9a-f]{64})","signature":"([0-9a-f]{128})",'
                     rb'"size":(0|[1-9][0-9]{0,18})\}')


def sample_message(leaf_size: int, root: bytes) -> bytes:
    """The bytes a source signs for a sample: domain ‖ leaf size (4 bytes, big-endian) ‖ root.

    The prefix keeps these signatures from meaning anything elsewhere (a DSSE envelope, another
    protocol) for a key used there too; the leaf size pins the tree the root was computed with."""
    return DOMAIN + leaf_size.to_bytes(4, "big") + root


def sample_digest(leaf_size: int, root: bytes) -> bytes:
    return hashlib.sha256(sample_message(leaf_size, root)).digest()


def default_path(directory) -> Path:
    """``lab-a/`` -> ``lab-a.provenance.jsonl``, beside the directory."""
    d = Path(directory).absolute()
    return d.with_name(d.name + SUFFIX)


def source_name(path) -> str:
    """A source's name in messages: its provenance file's name without the suffix."""
    name = Path(path).name
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) and len(name) > len(SUFFIX) else name


def header_line(key_hint: str, leaf_size: int) -> bytes:
    return json.dumps({"key": key_hint, "leaf_size": leaf_size, "type": PROVENANCE_TYPE},
                      sort_keys=True, separators=(",", ":")).encode() + b"\n"


def record_line(name: str, size: int, root: bytes, signature: bytes) -> bytes:
    return json.dumps({"name": name, "root": root.hex(), "signature": signature.hex(), "size": size},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


def file_lines(private_key, items, leaf_size: int, *, prefix: str = "", device: str = "auto"):
    """A provenance file's lines: its header (the signing key's hint), then :func:`sign_lines`."""
    yield header_line(public_key_hint(private_key.public_key()), leaf_size)
    yield from sign_lines(private_key, items, leaf_size, prefix=prefix, device=device)


def sign_lines(private_key, items, leaf_size: int, *, prefix: str = "", device: str = "auto"):
    """Record lines (with their newline) for sample items (sorted by name), signed ``BATCH``
    at a time, as the items come."""
    from ..crypto import batch_sign

    batch: list = []

    def flush():
        for it in batch:
            check_signable_name(prefix + it.name)
        sigs = batch_sign(private_key, [sample_digest(leaf_size, it.root) for it in batch], device=device)
        lines = [record_line(prefix + it.name, it.size, it.root, sig) for it, sig in zip(batch, sigs)]
        batch.clear()
        return lines

    for item in items:
        batch.append(item)
        if len(batch) == BATCH:
            yield from flush()
    if batch:
        yield from flush()


@dataclass(frozen=True, slots=True)
class Vouch:
    """What one source signed for one sample."""

    source: int  # index into Provenance.sources
    size: int
    root: bytes
    signature: bytes  # r || s


@dataclass(frozen=True)
class Source:
    name: str
    public_key: bytes  # SEC1, uncompressed: unlike a key object, it pickles (to loader worker processes)
    path: Path


def parse(lines, where: str) -> tuple[str, int, Iterator[tuple[str, int, bytes, bytes]]]:
    """(key hint, leaf size, records) of a provenance file's lines (without their newlines): the
    header is checked at once, the records — ``(name, size, root, signature)`` — as they are
    iterated; VerificationError naming ``where`` and the line on anything but what signing writes."""
    lines = iter(lines)
    head = _HEADER.fullmatch(next(lines, b""))
    if head is None:
        raise InvalidBundle(f"{where} is empty or does not start with a Sentry provenance header")

    def records():
        name = None
        for n, line in enumerate(lines, 2):
            m = _RECORD.fullmatch(line)
            name = record_name(m and m.group(1), name, f"{where} line {n}", "provenance record")
            yield name, int(m.group(4)), bytes.fromhex(m.group(2).decode()), bytes.fromhex(m.group(3).decode())

    return head.group(1).decode(), int(head.group(2)), records()


class Provenance:
    """The samples several sources vouch for, each with that source's trusted public key.

    ``check(items)`` verifies a batch of freshly hashed samples in one :func:`batch_verify`."""

    def __init__(self, sources: list[Source], leaf_size: int, vouches: dict[str, Vouch]):
        self.sources, self.leaf_size, self.vouches = sources, leaf_size, vouches

    @classmethod
    def load(cls, pairs) -> Provenance:
        """From ``(provenance file, public key)`` pairs; a key is a PEM path or a `cryptography`
        P-256 public key. A sample vouched for by two sources is refused: attribution must be one."""
        pairs = list(pairs)
        if not pairs:
            raise SentryError("per-sample provenance needs at least one source: a provenance file and its public key")
        sources: list = []
        vouches: dict = {}
        leaf_size: int | None = None
        for index, (path, key) in enumerate(pairs):
            public_key = key if isinstance(key, ec.EllipticCurvePublicKey) else load_public_key(key)
            if not isinstance(public_key.curve, ec.SECP256R1):
                raise SentryError(f"the key for {path} is not a P-256 key; sample signatures are ECDSA P-256")
            path, where = Path(path), f"provenance file {path}"
            try:
                src = FileSource(path, follow_symlinks=True)
            except SentryError as exc:
                raise SentryError(f"per-sample provenance: {exc}") from None
            sec1 = public_key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            source = Source(source_name(path), sec1, path)
            with src:  # read a block at a time: the file is never held beside its records
                hint, size, records = parse(read_lines(src, where), where)
                if hint != public_key_hint(public_key):
                    raise BadSignature(f"{path} was signed with another key than the one given for source {source.name}")
                if leaf_size is not None and size != leaf_size:
                    raise SentryError(f"{path} hashes samples with {size}-byte leaves, the other sources with {leaf_size}")
                leaf_size = size
                for name, sample_size, root, signature in records:
                    other = vouches.get(name)
                    if other is not None:
                        raise InvalidBundle(f"sample {name[:80]!r} is vouched for by two sources, "
                                                f"{sources[other.source].name} and {source.name}")
                    vouches[name] = Vouch(index, sample_size, root, signature)
            sources.append(source)
        assert leaf_size is not None  # there was at least one source
        return cls(sources, leaf_size, vouches)

    def source_of(self, name: str) -> str | None:
        vouch = self.vouches.get(name)
        return None if vouch is None else self.sources[vouch.source].name

    def require_leaf_size(self, leaf_size: int) -> None:
        if leaf_size != self.leaf_size:
            raise SentryError(f"the provenance files hash samples with {self.leaf_size}-byte leaves, the dataset "
                              f"with {leaf_size}", remedy=Remedy("leaf_size", str(leaf_size), "when re-signing the samples"))

    def check(self, items, device: str = "auto") -> list[str | None]:
        """Why each sample item (name, size, root as hashed here) fails its source's signature, or
        None when it passes; every signature of the batch in one ``batch_verify``."""
        from ..crypto import batch_verify

        reasons: list[str | None] = [None] * len(items)
        todo, digests, signatures, index = [], [], [], []
        for k, item in enumerate(items):
            vouch = self.vouches.get(item.name)
            if vouch is None:
                reasons[k] = "no trusted source signed it"
                continue
            todo.append((k, vouch))
            digests.append(sample_digest(self.leaf_size, item.root))
            signatures.append(vouch.signature)
            index.append(vouch.source)
        if todo:
            keys = [s.public_key for s in self.sources]
            for (k, vouch), ok in zip(todo, batch_verify(keys, digests, signatures, key_index=index, device=device)):
                if ok:
                    continue
                # The source is not named here: the report (and a loader's message) names it beside.
                item = items[k]
                if (vouch.root, vouch.size) != (item.root, item.size):
                    reasons[k] = "its content does not match its provenance signature"
                else:
                    reasons[k] = "its provenance signature does not verify"
        return reasons

    def checked(self, items, failures: dict, device: str = "auto"):
        """``items`` as they come, checked ``BATCH`` at a time: each failure's reason goes
        into ``failures`` by sample name (for :meth:`attribute`)."""
        batch: list = []

        def flush():
            for item, why in zip(batch, self.check(batch, device)):
                if why is not None:
                    failures[item.name] = why
            batch.clear()

        for item in items:
            batch.append(item)
            if len(batch) == BATCH:
                flush()
            yield item
        flush()

    def attribute(self, report, failures: dict) -> None:
        """Name each changed sample's source in ``report``, and add as changed the signed samples
        (those not reported extra) that only their source's signature fails."""
        from dataclasses import replace

        from ..manifest.compare import Change
        from ..manifest.item import SAMPLE

        label = f"{SAMPLE} {{}}"  # Item.label of a sample
        changed = {c.label: c for c in report.changed}
        extra = set(report.extra)
        for name, why in failures.items():
            if label.format(name) not in changed and label.format(name) not in extra:
                changed[label.format(name)] = Change(label.format(name), (why,))
        named = len(label.format(""))
        report.changed = [replace(c, source=self.source_of(c.label[named:])) for _, c in sorted(changed.items())]
