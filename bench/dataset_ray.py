"""Dataset signing throughput: Ray Data (sentry.data.ray.sign) against one process (sentry.sign_dataset).

    .venv/bin/python bench/dataset_ray.py [--dir /tmp/sentry-bench-ray] [--cpus 2] [--repeats 2] [--out FILE]

Both sign the same directory of small files (listing, hashing, sidecar, signature) and must write
the same sidecar (checked). One process: the CPU engine's threads hash across files. Ray: a local
Ray of --cpus CPUs (started once, its start-up time reported apart), files hashed in Ray tasks,
sidecar records and aligned block roots computed in Ray tasks, folded on the driver. Page cache
warm (one untimed pass each), best of --repeats; samples/s and GB/s of sample bytes.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
from cpu_hash import cpu_model, mem_total  # noqa: E402  (bench/ is on sys.path when run as a script)
from dataset import best, make_dataset  # noqa: E402
from report import publish  # noqa: E402

CASES = [(20000, 4 << 10), (2000, 256 << 10)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/sentry-bench-ray")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    os.environ["PYTHONPATH"] = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    from cryptography.hazmat.primitives.asymmetric import ec

    import sentry
    from sentry.data import ray as sray

    key = ec.generate_private_key(ec.SECP256R1())
    out_dir = os.path.join(args.dir, "out")
    os.makedirs(out_dir, exist_ok=True)
    t = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    start = time.perf_counter() - t
    lines = [f"# bench/dataset_ray.py  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}",
             f"command: .venv/bin/python bench/dataset_ray.py --cpus {args.cpus} --repeats {args.repeats}",
             f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {mem_total()}, {platform.platform()}",
             f"ray {ray.__version__} local, num_cpus={args.cpus}, started in {start:.1f} s (not in the figures); "
             f"no GPU; page cache warm, best of {args.repeats}",
             f"load average before (this machine is shared): {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
             "case                 one process s  samples/s   GB/s    Ray s  samples/s   GB/s   Ray/one"]
    for count, size in CASES:
        d = make_dataset(args.dir, count, size)
        one = os.path.join(out_dir, "one.sig")
        on_ray = os.path.join(out_dir, "ray.sig")
        sentry.sign_dataset(d, key, one, force=True)  # untimed: page cache warm
        t_one = best(lambda: sentry.sign_dataset(d, key, one, force=True), args.repeats)
        sray.sign(d, key, on_ray, force=True)  # untimed: Ray's workers warm
        t_ray = best(lambda: sray.sign(d, key, on_ray, force=True), args.repeats)
        with open(one[:-4] + ".samples.jsonl", "rb") as a, open(on_ray[:-4] + ".samples.jsonl", "rb") as b:
            assert a.read() == b.read(), "the Ray sidecar differs from the one-process sidecar"
        gb = count * size / 1e9
        lines.append(f"{count:7d} x {size >> 10:4d} KiB    {t_one:8.2f}  {count / t_one:9,.0f}  {gb / t_one:5.2f}"
                     f"  {t_ray:7.2f}  {count / t_ray:9,.0f}  {gb / t_ray:5.2f}   {t_ray / t_one:5.2f}x")
    lines.append(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    lines.append("sidecars identical (byte for byte) in every case")
    ray.shutdown()
    publish(lines, args.out)


if __name__ == "__main__":
    main()
