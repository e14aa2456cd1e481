"""Dataset signing/verifying throughput (CPU), and the GPU loader and kvikio figures (GPU machine).

    .venv/bin/python bench/dataset.py [--dir /tmp/sentry-bench-ds] [--repeats 2] [--provenance] [--out FILE]
    .venv/bin/python bench/dataset.py --gpu [--out FILE]     # on a machine with a GPU, DALI, kvikio

CPU: ``sentry.sign_dataset`` and ``sentry.verify_dataset`` over directories of small files
(listing, hashing, sidecar written/parsed, signature), page cache warm (one untimed pass), best of
--repeats; samples/s and GB/s of sample bytes.

GPU (--gpu): (1) the DALI image loader (device="gpu", nvJPEG decode) iterating a dataset of JPEG
samples with per-batch verification, against the same DALI pipeline iterated without it (target:
under 5% slower); (2) ``DeviceFileReader`` streaming a large file into two rotating device buffers,
and the CUDA engine hashing it (``cuda.digest_ranges``, kvikio reads), each against kvikio's raw
read bandwidth of the same file into one buffer (target for the hashing: at least 90%).
Caches are dropped between runs only where the process may (root); otherwise both sides read from
the page cache, and the report says which.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from cpu_hash import cpu_model, mem_total
from report import publish

CASES = [(100_000, 4096), (10_000, 100 * 1024)]


def make_dataset(root: str, count: int, size: int) -> str:
    d = os.path.join(root, f"{count}x{size}")
    if os.path.isdir(d) and len(os.listdir(d)) == -(-count // 1000):
        return d
    shutil.rmtree(d, ignore_errors=True)
    block = os.urandom(size + 4096)
    for i in range(count):
        sub = os.path.join(d, f"{i // 1000:04d}")
        if i % 1000 == 0:
            os.makedirs(sub)
        with open(os.path.join(sub, f"{i:07d}.bin"), "wb") as f:
            f.write(i.to_bytes(8, "little") + block[i % 4096 : i % 4096 + size - 8])
    return d


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def keypair(root: str):
    from sentry.signing import write_keypair

    key, pub = os.path.join(root, "k.pem"), os.path.join(root, "k.pub.pem")
    if not os.path.exists(key):
        write_keypair(key, pub)
    return key, pub


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def run_cpu(args, out):
    import sentry

    key, pub = keypair(args.dir)
    out(f"{'case':<16} {'sign s':>8} {'samples/s':>10} {'GB/s':>6}   {'verify s':>8} {'samples/s':>10} {'GB/s':>6}   sidecar")
    for count, size in CASES:
        d = make_dataset(args.dir, count, size)
        sentry.sign_dataset(d, key=key)  # warm the page cache
        sign = best(lambda: sentry.sign_dataset(d, key=key), args.repeats)
        verify = best(lambda: sentry.verify_dataset(d, public_key=pub), args.repeats)
        side = os.path.getsize(d + ".samples.jsonl")
        gb = count * size / 1e9
        out(f"{count:>7} x {size // 1024:>3} KiB {sign:8.2f} {count / sign:10,.0f} {gb / sign:6.2f}   "
            f"{verify:8.2f} {count / verify:10,.0f} {gb / verify:6.2f}   {side / 1e6:.1f} MB")
    if args.provenance:
        run_provenance(args, out, key, pub)


def run_provenance(args, out, key, pub):
    """Per-sample provenance on the CPU: one source signs every sample (sentry.sign_samples), and
    verify_dataset with that source against verify_dataset without it (the same samples)."""
    import sentry

    count, size = CASES[0]
    d = make_dataset(args.dir, count, size)
    sentry.sign_dataset(d, key=key)
    sign = best(lambda: sentry.sign_samples(d, key=key), args.repeats)
    sources = {d + ".provenance.jsonl": pub}
    plain = best(lambda: sentry.verify_dataset(d, public_key=pub), args.repeats)
    checked = best(lambda: sentry.verify_dataset(d, public_key=pub, provenance=sources), args.repeats)
    out()
    out(f"per-sample provenance, {count} x {size // 1024} KiB, CPU backend (cryptography, threads):")
    out(f"  sign_samples {sign:.2f} s ({count / sign:,.0f} samples/s, hashing included)")
    out(f"  verify_dataset {plain:.2f} s without, {checked:.2f} s with the source's signatures "
        f"({count / (checked - plain):,.0f} signature checks/s added; ratio {checked / plain:.2f}x)")


def run_gpu(args, out):
    import numpy as np
    import torch
    from nvidia.dali import fn, pipeline_def, types
    from PIL import Image

    import sentry
    from sentry.data import get_image_dataloader
    from sentry.hashing import FileRange, cuda
    from sentry.io.kvikio import DeviceFileReader, DeviceFileSource, configure_cufile

    key, pub = keypair(args.dir)
    d = os.path.join(args.dir, "jpeg")
    if not os.path.isdir(d):
        rng = np.random.default_rng(0)
        for i in range(args.images):
            sub = os.path.join(d, f"{i % 10}")
            os.makedirs(sub, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(os.path.join(sub, f"{i:06d}.jpg"), quality=90)
    sentry.sign_dataset(d, key=key)
    files = sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)

    @pipeline_def(batch_size=args.batch, num_threads=8, device_id=0)
    def plain():
        raw, label = fn.readers.file(file_root=d, files=files, pad_last_batch=True, name="reader")
        return raw, fn.decoders.image(raw, device="mixed", output_type=types.RGB), label

    pipe = plain()
    pipe.build()
    steps = -(-len(files) // args.batch)

    def unverified():
        for _ in range(steps):
            _, images, _ = pipe.run()
            [torch.from_dlpack(images[i]).clone() for i in range(len(images))]
        torch.cuda.synchronize()

    loader, _ = get_image_dataloader(d, args.batch, device="gpu", public_key=pub)

    def verified():
        for _ in loader:
            pass
        torch.cuda.synchronize()

    unverified(), verified()  # warm up: page cache, nvJPEG, allocators
    a, b = best(unverified, args.repeats), best(verified, args.repeats)
    out(f"DALI GPU loader, {len(files)} JPEG 224x224, batch {args.batch}: without verification {a:.3f} s "
        f"({len(files) / a:,.0f} img/s), with {b:.3f} s ({len(files) / b:,.0f} img/s): {100 * (b / a - 1):+.1f}%")

    big = os.path.join(args.dir, "big.bin")
    if not os.path.exists(big):
        with open(big, "wb") as f:
            for _ in range(args.file_gib * 1024):
                f.write(os.urandom(1 << 20))
    size = os.path.getsize(big)
    import cupy
    import kvikio

    whole = cupy.empty(size, dtype=cupy.uint8)

    def raw_read():
        with kvikio.CuFile(big, "r") as f:
            f.read(whole)

    def streamed():
        with DeviceFileReader(big, block_bytes=16 << 20, depth=2) as reader:
            for _ in reader.blocks():
                pass  # the read pipeline alone
        cupy.cuda.runtime.deviceSynchronize()

    def hashed():
        cuda.digest_ranges([FileRange(big)])

    raw_read(), streamed(), hashed()
    with DeviceFileSource(big) as src:
        mode = "GDS" if src.gds else "compat mode"  # this file's, not only kvikio's default
    a, b, c = best(raw_read, args.repeats), best(streamed, args.repeats), best(hashed, args.repeats)
    out(f"kvikio ({mode}, config {configure_cufile()}), {size / 2**30:.0f} GiB file, "
        f"page cache warm: raw read {size / a / 1e9:.2f} GB/s, 2 x 16 MiB streamed {size / b / 1e9:.2f} GB/s ({100 * a / b:.0f}%), "
        f"hashed by the CUDA engine (reader {cuda.file_reader()}) {size / c / 1e9:.2f} GB/s ({100 * a / c:.0f}%)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default="/tmp/sentry-bench-ds")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out")
    p.add_argument("--gpu", action="store_true", help="the GPU figures (DALI loader, kvikio) instead of CPU")
    p.add_argument("--provenance", action="store_true", help="also per-sample provenance signing and checking (CPU)")
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--file-gib", type=int, default=4)
    args = p.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    lines = []

    def out(line=""):
        print(line, flush=True)
        lines.append(line)

    from sentry.hashing import cpu

    out(f"# bench/dataset.py  {datetime.datetime.now().isoformat(timespec='seconds')}")
    out(f"command: {' '.join([os.path.relpath(sys.executable)] + sys.argv)}")
    out(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {mem_total()}, {platform.platform()}")
    out(f"python {platform.python_version()}, sentry C extension: {cpu.ACCELERATED}, page cache warm, best of {args.repeats}")
    out(f"load average before (this machine is shared): {load()}")
    (run_gpu if args.gpu else run_cpu)(args, out)
    out(f"load average after: {load()}")
    publish(lines, args.out, echo=False)  # out() printed each line as it came


if __name__ == "__main__":
    main()
