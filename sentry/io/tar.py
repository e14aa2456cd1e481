"""The members of a tar shard (WebDataset) as byte ranges of the file, parsed as hostile input.

Nothing is extracted: a member is a name and the (offset, size) of its bytes inside the tar, so
the engine hashes it in place like any file range. Only what a WebDataset shard holds is
accepted: regular files (ustar/GNU/PAX headers, POSIX or GNU long names), directory entries
(no bytes, skipped) and global PAX headers (ignored: they carry no member). Links, devices,
FIFOs, sparse and multi-volume members, a bad header checksum, a name that is not a relative
path inside the shard, a member named twice and bytes past the end of the file are each an
error naming the shard. Python's ``tarfile`` is not used: its header parsing has had denial of
service bugs, and it accepts far more than a shard needs.
"""
from __future__ import annotations

from typing import NamedTuple

from ..errors import SentryError
from .posix import FileSource

__all__ = ["BLOCK", "MAX_EXTENDED", "MAX_MEMBERS", "Member", "members"]

BLOCK = 512
MAX_EXTENDED = 1 << 20  # bytes of one PAX or GNU long-name header: ample for a 4096-character name
MAX_MEMBERS = 10_000_000
_REGULAR, _DIRECTORY = (b"0", b"\0", b"7"), b"5"
_PAX, _GLOBAL_PAX, _GNU_LONGNAME = b"x", b"g", b"L"


class Member(NamedTuple):
    name: str  # the member's path inside the shard
    offset: int  # of its first byte in the tar file
    size: int


def members(path, max_name: int = 4096) -> list[Member]:
    """The regular members of the uncompressed tar at ``path``, in file order; SentryError (one
    sentence naming the shard) on anything else."""
    with FileSource(path) as src:
        return list(_walk(src, path, max_name))


def _walk(src: FileSource, path, max_name: int):
    seen: set[str] = set()
    offset, pending_name = 0, None
    while offset + BLOCK <= src.size:
        header = src.read(offset, BLOCK)
        if header == bytes(BLOCK):  # end of archive (one zero block is enough; the second may be cut)
            return
        kind, size, name = _header(header, path, offset)
        data = offset + BLOCK
        if data + size > src.size:
            raise SentryError(f"tar {path}: the member at byte {offset} runs past the end of the file")
        offset = data + -(-size // BLOCK) * BLOCK
        if kind in (_PAX, _GNU_LONGNAME):
            if size > MAX_EXTENDED:
                raise SentryError(f"tar {path}: an extended header at byte {data - BLOCK} is over {MAX_EXTENDED} bytes")
            body = src.read(data, size)
            pending_name = _pax_path(body, path) if kind == _PAX else body.split(b"\0", 1)[0]
            continue
        if kind == _GLOBAL_PAX:
            continue
        if pending_name is not None:
            name, pending_name = pending_name, None
        if kind == _DIRECTORY:
            continue
        if kind not in _REGULAR:
            what = {b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device", b"4": "a block device",
                    b"6": "a FIFO", b"S": "a sparse file", b"M": "a multi-volume part"}.get(kind, f"of type {kind!r}")
            raise SentryError(f"tar {path}: member {_shown(name)} is {what}; a shard holds regular files only")
        text = _member_name(name, path, max_name)
        if text in seen:
            raise SentryError(f"tar {path}: member {text[:80]!r} appears twice")
        if len(seen) == MAX_MEMBERS:
            raise SentryError(f"tar {path} holds more than {MAX_MEMBERS} members")
        seen.add(text)
        yield Member(text, data, size)
    if offset < src.size:
        raise SentryError(f"tar {path} ends inside a header at byte {offset}")


def _header(h: bytes, path, offset: int) -> tuple[bytes, int, bytes]:
    """(type flag, data size, name) of a 512-byte header whose checksum matches."""
    stored = _octal(h[148:156], path, offset, "checksum")
    if stored not in (sum(h[:148]) + 256 + sum(h[156:]), sum(_signed(h[:148])) + 256 + sum(_signed(h[156:]))):
        raise SentryError(f"tar {path}: the header at byte {offset} has a bad checksum (not a tar, or damaged)")
    name = h[0:100].split(b"\0", 1)[0]
    if h[257:263] == b"ustar\0":  # POSIX ustar: a prefix directory before the name
        prefix = h[345:500].split(b"\0", 1)[0]
        name = prefix + b"/" + name if prefix else name
    return h[156:157], _size(h[124:136], path, offset), name


def _size(field: bytes, path, offset: int) -> int:
    if field[0] == 0x80:  # GNU base-256, for members of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    if field[0] & 0x80:
        raise SentryError(f"tar {path}: the header at byte {offset} has a negative size")
    return _octal(field, path, offset, "size")


def _octal(field: bytes, path, offset: int, what: str) -> int:
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits:
        return 0
    if not all(0x30 <= c <= 0x37 for c in digits):
        raise SentryError(f"tar {path}: the header at byte {offset} has an invalid {what}")
    return int(digits, 8)


def _signed(b: bytes):
    return (c - 256 if c > 127 else c for c in b)


def _pax_path(body: bytes, path) -> bytes | None:
    """The ``path`` record of a PAX header ("LEN key=value\\n" records), or None."""
    name, at = None, 0
    while at < len(body):
        space = body.find(b" ", at, at + 20)
        length = int(body[at:space]) if space > at and body[at:space].isdigit() else 0
        if length <= space - at or at + length > len(body) or body[at + length - 1:at + length] != b"\n":
            raise SentryError(f"tar {path}: a PAX header is malformed")
        key, _, value = body[space + 1:at + length - 1].partition(b"=")
        if key == b"path":
            name = value
        elif key == b"size":
            raise SentryError(f"tar {path}: a PAX header overrides a member's size, which a shard does not need")
        at += length
    return name


def _member_name(raw: bytes, path, max_name: int) -> str:
    """The member's name as text: UTF-8, a relative path inside the shard (no '', '.', '..')."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SentryError(f"tar {path}: member name {_shown(raw)} is not UTF-8") from None
    if not 0 < len(text) <= max_name or "\0" in text or any(p in ("", ".", "..") for p in text.split("/")):
        raise SentryError(f"tar {path}: member name {_shown(raw)} is not a relative path inside the shard")
    return text


def _shown(raw) -> str:
    return repr(raw[:80])
