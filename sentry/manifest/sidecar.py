"""The dataset sidecar: one canonical sample record per line (JSON Lines), sorted by name.

Its root is the manifest root of docs/spec.md §2 over those records, so a bundle signs a dataset of
any size with one digest. The sidecar itself is untrusted until its root matches the signed one;
:func:`records` refuses anything but the exact bytes signing writes (docs/spec.md §6).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from .._json import describe
from ..errors import InvalidBundle, SentryError, VerificationError
from ..hashing.merkle import StreamRoot, leaf_hash
from ..io.posix import FileSource
from .item import MAX_ITEMS, MAX_NAME, PLAIN_JSON_CHARS, SAMPLE, Item

__all__ = [
    "MAX_FILE_NAME",
    "READ_BLOCK",
    "Writer",
    "beside",
    "check_signable_name",
    "is_plain_name",
    "item_records",
    "json_string",
    "read_lines",
    "record_name",
    "records",
    "records_root",
    "signed_file",
    "signed_lines",
    "writes_inside",
]

# The one canonical spelling of a sample record (sorted keys, no spaces); the name is then checked
# to be spelt as json.dumps spells it. Matching this is ~5x faster than parsing and re-encoding,
# which matters at millions of lines.
_RECORD = re.compile(rb'\{"kind":"sample","name":("(?:[^"\\]|\\.)*"),"root":"([0-9a-f]{64})","size":(0|[1-9][0-9]{0,18})\}')

_PLAIN_TOKEN = re.compile(b'"' + PLAIN_JSON_CHARS.encode() + b'"')


def beside(signature, suffix: str) -> Path:
    """The default sidecar of a signature: ``model.sig`` -> ``model`` + ``suffix``, beside it."""
    sig = Path(signature)
    return sig.with_name(sig.name.removesuffix(".sig") + suffix)


def records_root(records) -> bytes:
    """RFC 9162 root over canonical records, one record per leaf (the manifest root rule)."""
    stream = StreamRoot()
    for r in records:
        stream.add(leaf_hash(r))
    return stream.root()


class Writer:
    """The sidecar's lines for items (sorted), as they come: written out as they are made, the
    records need not all be held (millions of samples). Once the lines are consumed, ``count``,
    ``size`` and ``root()`` describe what was written. What a verifier of the sidecar would refuse
    (too many items, a sample name that is not a plain relative path) is refused here."""

    def __init__(self):
        self._stream = StreamRoot()
        self.size = 0

    def lines(self, items):
        for it in items:
            if self._stream.count == MAX_ITEMS:
                raise SentryError(f"cannot sign more than {MAX_ITEMS} items: a verifier would refuse the list")
            if it.kind == SAMPLE:
                check_signable_name(it.name)
            record = it.record()
            self._stream.add(leaf_hash(record))
            self.size += len(record) + 1
            yield record + b"\n"

    @property
    def count(self) -> int:
        return self._stream.count

    def root(self) -> bytes:
        return self._stream.root()


def is_plain_name(name: str) -> bool:
    """A sample name is a relative POSIX path that stays inside the dataset directory."""
    return 0 < len(name) <= MAX_NAME and "\x00" not in name and not any(p in ("", ".", "..") for p in name.split("/"))


def check_signable_name(name: str) -> None:
    """SentryError unless a verifier would accept ``name`` as a sample's (:func:`is_plain_name`)."""
    if not is_plain_name(name):
        raise SentryError(f"cannot sign sample {describe(name)}: a verifier accepts only relative paths "
                          f"of 1 to {MAX_NAME} characters")


def json_string(token: bytes):
    """The string a JSON string token spells, if the token is exactly how json.dumps writes it."""
    if _PLAIN_TOKEN.fullmatch(token):  # nothing escaped: the token spells itself (the common case)
        return token[1:-1].decode("ascii")
    try:
        value = json.loads(token)
    except ValueError:
        return None
    return value if json.dumps(value).encode() == token else None


def _split_lines(data: bytes):
    """The lines of whole lines' bytes, without their newlines, one at a time rather than a list
    (data.split()) of every line of a block."""
    start = 0
    while start < len(data):
        end = data.index(b"\n", start)
        yield data[start:end]
        start = end + 1


READ_BLOCK = 4 << 20


def read_lines(src, where: str):
    """The lines of an open sidecar (a :class:`~sentry.io.posix.FileSource`), read a block at a
    time, so that a verifier never holds the whole file."""
    rest, offset = b"", 0
    while offset < src.size:
        block = src.read(offset, min(READ_BLOCK, src.size - offset))
        offset += len(block)
        data = rest + block
        cut = data.rfind(b"\n") + 1
        yield from _split_lines(data[:cut])
        rest = data[cut:]
    if rest:
        raise InvalidBundle(f"{where} does not end with a newline; it is truncated")
    src.check_unchanged()


MAX_FILE_NAME = 255  # what file systems hold: a signer cannot have written a longer one


def signed_file(desc, bad) -> tuple[str, int]:
    """(name, size) of a signed sidecar description ``{"name": ..., "size": ...}``, checked: the
    name is a plain file name (the file lies beside the signature), the size a byte count."""
    name, size = (desc.get("name"), desc.get("size")) if isinstance(desc, dict) else (None, None)
    if (not isinstance(name, str) or not 0 < len(name) <= MAX_FILE_NAME or "/" in name or name in (".", "..")
            or "\x00" in name):
        raise bad("the sidecar's name is not a plain file name")
    if type(size) is not int or size < 0:
        raise bad("the sidecar's size is not a valid number")
    return name, size


@contextlib.contextmanager
def signed_lines(path, size: int, what: str):
    """(lines, where) of the sidecar at ``path``, read a block at a time once its size is the
    signed ``size``; errors name the sidecar (of a ``what``: dataset, manifest)."""
    where = f"sidecar {path}"
    try:
        src = FileSource(path, follow_symlinks=True)
    except SentryError as exc:
        raise SentryError(f"cannot read the {what}'s sidecar: {exc}") from None
    with src:
        if src.size != size:
            raise InvalidBundle(f"{where} is {src.size} bytes but the signature covers one of {size}")
        yield read_lines(src, where), where


def item_records(lines, where: str):
    """File and tensor items from the lines of a model's sidecar (docs/spec.md §2.2). Each line must
    be exactly the canonical record of a valid item (so the parser need not be strict: anything
    else encodes back differently), in strictly increasing identity order, at most MAX_ITEMS."""
    previous = None
    for n, line in enumerate(lines, 1):
        at = f"{where} line {n}"
        if n > MAX_ITEMS:
            raise InvalidBundle(f"{where} lists more than {MAX_ITEMS} items")
        try:
            item = Item.from_json(json.loads(line))
        except (ValueError, RecursionError):  # not JSON, numbers too long, nesting too deep
            raise InvalidBundle(f"{at} is not a canonical item record") from None
        except VerificationError as exc:
            raise InvalidBundle(f"{at}: {exc}") from None
        if item.record() != line:
            raise InvalidBundle(f"{at} is not a canonical item record")
        if previous is not None and item.key <= previous:
            raise InvalidBundle(f"{at} {'repeats' if item.key == previous else 'is out of order after'} "
                                    f"the line before it")
        previous = item.key
        yield item


def records(lines, where: str, stream: StreamRoot):
    """Sample items from sidecar lines, each checked, its leaf added to ``stream``;
    VerificationError naming ``where`` and the line on anything but what signing writes."""
    previous = None
    for n, line in enumerate(lines, 1):
        m = _RECORD.fullmatch(line)
        previous = record_name(m and m.group(1), previous, f"{where} line {n}", "sample record")
        assert m is not None  # record_name refused anything else
        stream.add(leaf_hash(line))
        yield Item(SAMPLE, previous, int(m.group(3)), bytes.fromhex(m.group(2).decode()))


def record_name(token: bytes | None, previous: str | None, where: str, what: str) -> str:
    """The sample name that a canonical record's name token spells, checked: the record matched
    its one canonical spelling (``token`` is None otherwise: no duplicate keys, extra fields,
    spaces or alternative spellings that another parser could read differently), the name stays
    inside the dataset, and it comes strictly after ``previous``."""
    name = json_string(token) if token is not None else None
    if name is None:
        raise InvalidBundle(f"{where} is not a canonical {what}")
    if not is_plain_name(name):
        raise InvalidBundle(f"{where} names a sample outside the dataset ({name[:80]!r})")
    if previous is not None and name <= previous:
        order = "lists the sample twice" if name == previous else "is out of name order"
        raise InvalidBundle(f"{where} {order} ({name[:80]!r})")
    return name



def writes_inside(root, *paths) -> bool:
    """Whether any of ``paths`` (files about to be written) lies under the directory ``root``:
    their temporary files would then show up in a lazy walk of it."""
    real_root = Path(os.path.realpath(root))
    return any(Path(os.path.realpath(Path(p).parent)).is_relative_to(real_root) for p in paths)
