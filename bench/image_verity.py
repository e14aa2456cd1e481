"""dm-verity tree build throughput: Sentry's engine vs `veritysetup format`, same image, same run.

    .venv/bin/python bench/image_verity.py [--mib 512] [--repeats 3] [--out FILE]

The image is --mib MiB of deterministic pseudo-random bytes in a file (page cache warmed by one
untimed pass of each side). Sentry side: ``sentry.image.verity.build_tree`` over the mmap'd file
(C level function, threads over 16 MiB slices, GIL released), salt 00 (two-lane SHA-NI leaves: the
same digests as RFC 9162 leaves) and a 32-byte salt (OpenSSL per block). veritysetup side:
`veritysetup format --no-superblock --salt=S IMAGE HASHFILE` (a new process; it also writes the
tree to a file). Both roots are compared. CPU only: the CUDA kernel's GPU figure awaits a GPU.
"""
from __future__ import annotations

import argparse
import datetime
import mmap
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cpu_hash import cpu_model, mem_total
from report import publish

MiB = 1 << 20


def make_image(path: str, mib: int) -> None:
    import hashlib

    seed = hashlib.sha256(b"sentry image bench").digest()
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(hashlib.shake_256(seed + i.to_bytes(8, "little")).digest(MiB))


def sentry_tree(path: str, salt: bytes) -> tuple:
    from sentry.image import verity

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        t0 = time.perf_counter()
        root = verity.build_tree(m, salt).root
        return time.perf_counter() - t0, root.hex()


def veritysetup_tree(path: str, salt: bytes, hash_path: str) -> tuple:
    t0 = time.perf_counter()
    out = subprocess.run(["veritysetup", "format", "--no-superblock", f"--salt={salt.hex() or '-'}", path, hash_path],
                         capture_output=True, text=True, check=True).stdout
    return time.perf_counter() - t0, re.search(r"Root hash:\s+(\w+)", out).group(1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    from sentry.hashing import _cmerkle

    version = subprocess.run(["veritysetup", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [f"# bench/image_verity.py  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%S}Z",
             f"command: .venv/bin/python bench/image_verity.py --mib {args.mib} --repeats {args.repeats}",
             f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {mem_total()}, {platform.platform()}",
             f"device: CPU only; sentry C extension with SHA-NI two-lane leaves: {_cmerkle.set_sha_ni(True)}; {version}",
             f"compared: sentry.image.verity.build_tree (mmap'd image) vs `veritysetup format --no-superblock` "
             f"on the same {args.mib} MiB image; best of {args.repeats}, alternating, page cache warm", "",
             f"{'salt':<10} {'sentry s':>9} {'GB/s':>6} {'veritysetup s':>14} {'GB/s':>6} {'speedup':>8}  roots equal"]
    with tempfile.TemporaryDirectory() as d:
        path, hash_path = os.path.join(d, "image"), os.path.join(d, "hash")
        make_image(path, args.mib)
        size = os.path.getsize(path)
        for label, salt in (("00", b"\x00"), ("32 bytes", bytes(range(32)))):
            sentry_tree(path, salt), veritysetup_tree(path, salt, hash_path)  # warm
            ours, theirs = [], []
            for _ in range(args.repeats):
                ours.append(sentry_tree(path, salt))
                theirs.append(veritysetup_tree(path, salt, hash_path))
            (a, ra), (b, rb) = min(ours), min(theirs)
            lines.append(f"{label:<10} {a:9.3f} {size / a / 1e9:6.2f} {b:14.3f} {size / b / 1e9:6.2f} {b / a:7.2f}x  {ra == rb}")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
