"""Batch ECDSA P-256 throughput: the GPU kernels vs OpenSSL on one CPU core, same run.

    .venv/bin/python bench/ecdsa.py [--max-log2 22] [--repeats 5] [--quick] [--out FILE] [--cpu-only]

GPU: kernels/ecdsa.cu through sentry.crypto.cuda, inputs already on the device, timed with CUDA
events around the launch (median of --repeats, after a warm-up); batches of 1, 4, 16, ... up to
2^max-log2 items, 1024 distinct keys picked at random per item. Also the whole
`sentry.crypto.batch_verify` call (packing, copies, kernel) for batches up to 2^16.
CPU: `cryptography` (OpenSSL) sign and verify of prehashed SHA-256 digests in one thread, for
about --cpu-seconds each. The ratio column is GPU rate / one-core OpenSSL rate.
--quick (scripts/gpu-check.sh) is --max-log2 20 --repeats 3 --cpu-seconds 1.
Targets on an H100/H200: >= 20 M signs/s and >= 5 M verifies/s.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cpu_hash import cpu_model
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

KEYS = 1024


def openssl_one_core(seconds: float) -> dict:
    """Signs/s and verifies/s of OpenSSL in this thread (RFC 6979 where supported, as the GPU)."""
    from sentry.crypto.cpu import ecdsa_algorithm

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    sign_alg = ecdsa_algorithm(Prehashed(hashes.SHA256()), deterministic=True)
    verify_alg = ec.ECDSA(Prehashed(hashes.SHA256()))
    digests = [os.urandom(32) for _ in range(4096)]

    def rate(op) -> float:
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for d in digests[:256]:
                op(d)
            done += 256
        return done / (time.perf_counter() - start)

    sigs = {d: key.sign(d, sign_alg) for d in digests[:256]}
    return {"sign": rate(lambda d: key.sign(d, sign_alg)),
            "verify": rate(lambda d: public.verify(sigs[d], d, verify_alg))}


def gpu_rates(max_log2: int, repeats: int) -> list[dict]:
    import cupy as cp
    import numpy as np
    from cryptography.hazmat.primitives import serialization

    from sentry.crypto import batch_verify, cuda
    from sentry.crypto.der import N

    module, table = cuda._module()
    sign_kernel = module.get_function("p256_sign_batch")
    verify_kernel = module.get_function("p256_verify_batch")
    rng = np.random.default_rng(1)
    private = [int.from_bytes(os.urandom(32), "big") % (N - 1) + 1 for _ in range(KEYS)]
    pubs = b"".join(
        ec.derive_private_key(d, ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        for d in private)
    d_keys = cp.asarray(np.frombuffer(b"".join(d.to_bytes(32, "big") for d in private), dtype=np.uint8))
    d_pubs = cp.asarray(np.frombuffer(pubs, dtype=np.uint8))

    def timed(kernel, count, args) -> float:
        grid = ((count + cuda.THREADS - 1) // cuda.THREADS,)
        kernel(grid, (cuda.THREADS,), args)  # warm-up
        times = []
        for _ in range(repeats):
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            kernel(grid, (cuda.THREADS,), args)
            stop.record()
            stop.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
        return statistics.median(times)

    rows = []
    for log2 in list(range(0, max_log2 + 1, 2)) + ([max_log2] if max_log2 % 2 else []):
        count = 1 << log2
        index = cp.asarray(rng.integers(0, KEYS, count, dtype=np.uint32))
        digests = cp.asarray(rng.integers(0, 256, 32 * count, dtype=np.uint8))
        sigs = cp.empty(64 * count, dtype=cp.uint8)
        ok = cp.empty(count, dtype=cp.uint8)
        n = np.uint32(count)
        sign_s = timed(sign_kernel, count, (d_keys, index, digests, table, sigs, n))
        verify_s = timed(verify_kernel, count, (d_pubs, index, digests, sigs, table, ok, n))
        if not bool(ok.all()):
            raise SystemExit(f"GPU signatures failed GPU verification at batch {count}")
        row = {"batch": count, "sign_per_s": count / sign_s, "verify_per_s": count / verify_s,
               "sign_latency_ms": sign_s * 1e3, "verify_latency_ms": verify_s * 1e3}
        if log2 <= 16:  # the whole API call, from Python bytes to Python bools
            host_digests = digests.get().tobytes()
            dig_list = [host_digests[32 * i: 32 * i + 32] for i in range(count)]
            sig_bytes = sigs.get().tobytes()
            sig_list = [sig_bytes[64 * i: 64 * i + 64] for i in range(count)]
            keys_list = [pubs[65 * k: 65 * k + 65] for k in range(KEYS)]
            idx = index.get().tolist()
            start = time.perf_counter()
            batch_verify(keys_list, dig_list, sig_list, key_index=idx, device="cuda")
            row["api_verify_per_s"] = count / (time.perf_counter() - start)
        rows.append(row)
    d_keys.fill(0)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-log2", type=int, default=22)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cpu-seconds", type=float, default=3.0)
    ap.add_argument("--cpu-only", action="store_true", help="only the OpenSSL one-core figures")
    ap.add_argument("--quick", action="store_true", help="--max-log2 20 --repeats 3 --cpu-seconds 1")
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()
    if args.quick:
        args.max_log2, args.repeats, args.cpu_seconds = 20, 3, 1.0

    from cryptography.hazmat.backends.openssl import backend

    cpu = openssl_one_core(args.cpu_seconds)
    result = {"date": datetime.date.today().isoformat(), "cpu": cpu_model(),
              "openssl": backend.openssl_version_text(), "openssl_one_core": cpu, "gpu": None}
    print(f"# {result['date']}  CPU: {result['cpu']}  {result['openssl']}")
    print(f"OpenSSL, one core: {cpu['sign']:,.0f} signs/s, {cpu['verify']:,.0f} verifies/s")
    if not args.cpu_only:
        import cupy as cp

        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        result["gpu"] = props["name"].decode()
        result["rows"] = gpu_rates(args.max_log2, args.repeats)
        print(f"GPU: {result['gpu']} (kernel time, inputs on the device; api = whole batch_verify call)")
        print(f"{'batch':>9} {'signs/s':>14} {'x 1 core':>9} {'verifies/s':>14} {'x 1 core':>9}"
              f" {'sign ms':>9} {'verify ms':>9} {'api verifies/s':>15}")
        for r in result["rows"]:
            api = f"{r['api_verify_per_s']:>15,.0f}" if "api_verify_per_s" in r else f"{'':>15}"
            print(f"{r['batch']:>9} {r['sign_per_s']:>14,.0f} {r['sign_per_s'] / cpu['sign']:>9.1f}"
                  f" {r['verify_per_s']:>14,.0f} {r['verify_per_s'] / cpu['verify']:>9.1f}"
                  f" {r['sign_latency_ms']:>9.3f} {r['verify_latency_ms']:>9.3f} {api}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
