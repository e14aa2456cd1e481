"""Where the tree goes and which parameters it takes, per layout.

plain        image, then the 4 KiB verity superblock at hash_offset, then the tree; salt 00 and
             the zero UUID unless --salt / --uuid say otherwise (the same file
             `veritysetup format --hash-offset` makes when data and hash device are one file).
modelwrap    Tinfoil's MWP (`.mpk`): the same bytes, with salt SHA-256("org/name@revision"), the
             UUID uuid5(NAMESPACE_URL, "org/name@revision-inner") for both the EROFS file system
             and the verity superblock, and a `.info` file holding the reference
             `<rootHash>_<hashOffset>_<uuid>` (github.com/tinfoilsh/modelwrap SPEC.md and pack.py).
privatemode  Edgeless Privatemode's model disk contents: salt 00, the zero UUID, no superblock (the
             hash partition systemd-repart writes holds the bare tree), and a repart.json-style
             `[{"roothash": ...}]` file (their docs read it with `jq -r '.[0].roothash'`).
             One file: the data partition is its first hash_offset bytes, the hash partition the rest.
"""
from __future__ import annotations

import hashlib
import json
import re
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import Remedy, SentryError
from ..hashing.verity import MAX_SALT

__all__ = ["LAYOUTS", "ZERO_UUID", "Layout", "layout_for", "parse_salt"]

LAYOUTS = ("plain", "modelwrap", "privatemode")
ZERO_UUID = uuidlib.UUID(int=0)
_MODEL_ID = re.compile(r"[\w.-]+/[\w.-]+@[\w.-]+")


@dataclass(frozen=True)
class Layout:
    name: str
    salt: bytes
    uuid: uuidlib.UUID  # the EROFS file system's and the verity superblock's
    superblock: bool
    model_id: str | None = None

    def side_paths(self, out: Path) -> list:
        """The files written beside the image."""
        suffix = {"modelwrap": ".info", "privatemode": ".repart.json"}.get(self.name)
        return [out.with_suffix(suffix)] if suffix else []

    def side_outputs(self, out: Path, root_hex: str, hash_offset: int) -> dict:
        """Path -> bytes of the files written beside the image."""
        if self.name == "modelwrap":
            data = self.reference(root_hex, hash_offset)
        elif self.name == "privatemode":
            data = json.dumps([{"roothash": root_hex, "hash_offset": hash_offset, "salt": self.salt.hex(),
                                "uuid": str(self.uuid), "superblock": False}], indent=2) + "\n"
        else:
            return {}
        return {self.side_paths(out)[0]: data.encode()}

    def reference(self, root_hex: str, hash_offset: int) -> str:
        """Modelwrap's compact reference string."""
        return f"{root_hex}_{hash_offset}_{self.uuid}"


def parse_salt(text: str) -> bytes:
    try:
        salt = bytes.fromhex(text)
    except ValueError:
        raise SentryError(f"the salt must be hex digits, not {text!r}") from None
    if len(salt) > MAX_SALT:
        raise SentryError(f"the salt is {len(salt)} bytes; dm-verity takes at most {MAX_SALT}")
    return salt


def layout_for(name: str, *, salt: str | None = None, uuid: str | None = None, model_id: str | None = None) -> Layout:
    """The layout ``name`` with its parameters; options a layout fixes are refused for it."""
    if name not in LAYOUTS:
        raise SentryError(f"unknown layout {name!r}: choose one of {', '.join(LAYOUTS)}")
    if name != "plain" and (salt is not None or uuid is not None):
        raise SentryError(f"the {name} layout fixes the salt and UUID: give neither")
    if name == "modelwrap" and model_id is None:
        raise SentryError("the modelwrap layout needs the model's identity",
                          remedy=Remedy("model_id", "'ORG/NAME@REVISION'"))
    if name != "modelwrap" and model_id is not None:
        raise SentryError("a model id is only used by the modelwrap layout")
    if name == "modelwrap" and model_id is not None:
        if not _MODEL_ID.fullmatch(model_id):
            raise SentryError(f"the model id must look like org/name@revision, not {model_id!r}")
        return Layout(name, hashlib.sha256(model_id.encode()).digest(),
                      uuidlib.uuid5(uuidlib.NAMESPACE_URL, model_id + "-inner"), True, model_id)
    if name == "privatemode":
        return Layout(name, b"\x00", ZERO_UUID, False)
    try:
        fs_uuid = ZERO_UUID if uuid is None else uuidlib.UUID(uuid)
    except ValueError:
        raise SentryError(f"the uuid must be a UUID, not {uuid!r}") from None
    return Layout(name, b"\x00" if salt is None else parse_salt(salt), fs_uuid, True)
