"""The EROFS image, made by mkfs.erofs (erofs-utils) so that the same files give the same bytes.

The model's files (listed as `sentry sign` lists them: same names, ignore rules and symlink policy)
are copied into a staging directory with fixed modes (0644 files, 0755 directories), then:

    mkfs.erofs -T0 -x-1 --all-root -U<uuid> OUT STAGING

-T0: every inode's and the superblock's timestamp is 0; -x-1: no extended attributes (no SELinux
labels or ACLs from the build host); --all-root: uid and gid 0; -U: a fixed file-system UUID.
erofs-utils 1.5 (Debian 12) already sorts directory entries by name whatever order readdir gives
(seen on tmpfs, whose readdir order is creation order; tests/unit/image/test_image_build.py builds from a
copy written in reverse order); it has no option for ordering, and none is needed. Uncompressed (no -z), so files are
stored block-aligned, which sentry.image.erofs reads and the one-pass trees rely on. A newer
erofs-utils may place bytes differently: the version is recorded with every build, and a root is
reproducible with the same version (as Modelwrap's SPEC.md says of its pinned packer image).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid as uuidlib
from pathlib import Path

from ..errors import SentryError

__all__ = ["FLAGS", "make_erofs", "stage"]

FLAGS = ("-T0", "-x-1", "--all-root")


def _mkfs() -> str:
    exe = shutil.which("mkfs.erofs")
    if exe is None:
        raise SentryError("mkfs.erofs is not installed: install erofs-utils (apt-get install erofs-utils)")
    return exe


def stage(files, staging: Path) -> None:
    """Copy (name, path) pairs into ``staging`` with fixed modes; the source is only read."""
    for name, real in files:
        dest = staging / name
        for parent in reversed(dest.relative_to(staging).parents[:-1]):
            d = staging / parent
            if not d.is_dir():
                d.mkdir(mode=0o755)
                d.chmod(0o755)  # whatever the umask
        shutil.copyfile(real, dest, follow_symlinks=True)
        dest.chmod(0o644)
    staging.chmod(0o755)


def make_erofs(files, out: Path, fs_uuid: uuidlib.UUID) -> str:
    """Write the EROFS image of ``files`` to ``out``; returns mkfs.erofs's version line."""
    exe = _mkfs()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".sentry-stage-") as tmp:
        staging = Path(tmp) / "root"
        staging.mkdir()
        stage(files, staging)
        proc = subprocess.run([exe, *FLAGS, f"-U{fs_uuid}", str(out), str(staging)],
                              capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise SentryError(f"mkfs.erofs failed: {detail[-1] if detail else 'exit status ' + str(proc.returncode)}")
    version = re.search(r"mkfs\.erofs\s+(\S+)", proc.stdout + proc.stderr)
    return f"mkfs.erofs {version.group(1) if version else 'unknown'}"
