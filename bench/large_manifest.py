"""Bundle size, time and peak memory of signing and verifying very large manifests (CPU).

    .venv/bin/python bench/large_manifest.py tensors 100000 [--tensor-bytes 16] [--leaf-size 4096]
    .venv/bin/python bench/large_manifest.py files 500000 [--file-bytes 0]

``tensors N``: one .safetensors file of N tensors (MoE-style names, F32, ``--tensor-bytes`` each);
``files N``: a directory of N files in subdirectories of 1000. Each run signs with a fresh key and
verifies, in a child process per step (peak RSS is per process), and prints the bundle size per
item, and any sidecar's.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def make_tensors(path: str, count: int, tensor_bytes: int) -> str:
    header, offset = {}, 0
    for i in range(count):
        layer, expert, proj = i // 3000, (i // 3) % 1000, ("gate_proj", "up_proj", "down_proj")[i % 3]
        header[f"model.layers.{layer}.mlp.experts.{expert}.{proj}.weight"] = {
            "dtype": "F32", "shape": [tensor_bytes // 4], "data_offsets": [offset, offset + tensor_bytes]}
        offset += tensor_bytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return path


def make_files(root: str, count: int, file_bytes: int) -> str:
    for i in range(count):
        sub = os.path.join(root, f"{i // 1000:04d}")
        if i % 1000 == 0:
            os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"{i:07d}.bin"), "wb") as f:
            f.write(i.to_bytes(8, "little")[:file_bytes] + b"\0" * max(0, file_bytes - 8))
    return root


# The child reports its own peak RSS (ru_maxrss of RUSAGE_CHILDREN would be the largest of all children).
_CHILD = ("import resource, sys\nfrom sentry.cli import main\ntry:\n    rc = main(sys.argv[1:])\nfinally:\n"
          "    print('peak-rss-kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)")


def run(*args) -> tuple[float, int, subprocess.CompletedProcess]:
    """Seconds, peak RSS (MiB) and result of `sentry ARGS` in a child process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True,
                          cwd=os.path.join(HERE, ".."))
    seconds = time.perf_counter() - start
    err, _, peak = done.stderr.rpartition("peak-rss-kib ")
    done.stderr = err
    return seconds, int(peak) // 1024, done


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("tensors", "files"))
    ap.add_argument("count", type=int)
    ap.add_argument("--tensor-bytes", type=int, default=16)
    ap.add_argument("--file-bytes", type=int, default=0)
    ap.add_argument("--leaf-size", type=int, default=4096)
    ap.add_argument("--dir", default="/tmp/sentry-bench-large")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    key, pub = os.path.join(args.dir, "k.pem"), os.path.join(args.dir, "k.pub.pem")
    if not os.path.exists(key):
        subprocess.run([sys.executable, "-m", "sentry", "keygen", key], check=True, cwd=os.path.join(HERE, ".."),
                       capture_output=True)
    if args.kind == "tensors":
        artifact = make_tensors(os.path.join(args.dir, f"moe-{args.count}.safetensors"), args.count, args.tensor_bytes)
    else:
        artifact = os.path.join(args.dir, f"files-{args.count}")
        if not os.path.isdir(artifact):
            make_files(artifact, args.count, args.file_bytes)
    sig = artifact.rstrip("/") + ".sig"
    for path in (sig, sig.removesuffix(".sig") + ".manifest.jsonl"):
        if os.path.exists(path):
            os.remove(path)
    t, rss, done = run("sign", artifact, "--key", key, "--signature", sig, "--leaf-size", str(args.leaf_size), "-q")
    print(f"sign   {args.kind} {args.count}: {t:.1f} s, peak RSS {rss} MiB, exit {done.returncode} "
          f"{done.stderr.strip()[-300:]}")
    if done.returncode:
        return 1
    items = args.count + (1 if args.kind == "tensors" else 0)
    size = os.path.getsize(sig)
    print(f"bundle {size} bytes = {size / items:.0f} bytes per item")
    side = sig.removesuffix(".sig") + ".manifest.jsonl"
    if os.path.exists(side):
        print(f"sidecar {os.path.getsize(side)} bytes = {os.path.getsize(side) / items:.0f} bytes per item")
    t, rss, done = run("verify", artifact, "--public-key", pub, "--signature", sig, "-q")
    print(f"verify {args.kind} {args.count}: {t:.1f} s, peak RSS {rss} MiB, exit {done.returncode} "
          f"{(done.stdout + done.stderr).strip()[-300:]}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
