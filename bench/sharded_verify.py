"""Verify of a sharded model (DTensor Shard(0), 2 ranks, gloo, CPU) vs the same model unsharded.

Run: PYTHONPATH=. python -m torch.distributed.run --standalone --nproc-per-node 2 bench/sharded_verify.py --out FILE
Compared, on this machine's CPUs: rank 0 hashing the whole state_dict in one process (what
verify_model does unsharded) vs both ranks hashing their halves and exchanging pieces
(verify_model on the sharded model: local hashing + one exchange + fold), and the bytes that
exchange moves vs the bytes a gather of the weights (full_tensor) would move. Best of --repeat.
"""
import argparse
import datetime
import os
import platform
import subprocess
import time

import torch
import torch.distributed as dist
from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh

import sentry
from sentry.hashing.params import HashParams
from sentry.hashing.sharded import digest_sharded


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mib", type=int, default=256, help="model size in MiB (f32)")
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    g = torch.Generator().manual_seed(0)
    rows = args.mib * (1 << 20) // 4 // 4096 // 8
    full = {f"layer{i}.weight": torch.randn(rows + 7 * i, 4096 - 3 * i, generator=g) for i in range(8)}  # unaligned shards too
    sharded = {k: distribute_tensor(t, mesh, [Shard(0)]) for k, t in full.items()}
    params = HashParams()

    def timed(fn):
        best = float("inf")
        for _ in range(args.repeat):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best

    one = timed(lambda: sentry.hash_artifact(full, device="cpu") if rank == 0 else None)  # barriers on all ranks
    stats = {}
    both = timed(lambda: digest_sharded(list(sharded.items()), params, device="cpu", stats=stats))
    same = [d.root for d in digest_sharded(list(sharded.items()), params, device="cpu")] == \
        [it.root for it in sentry.hash_artifact(full, device="cpu").items]
    sent = torch.tensor([stats["bytes_sent"]], dtype=torch.int64)
    dist.all_reduce(sent)
    total = sum(t.numel() * t.element_size() for t in full.values())
    if rank == 0:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        text = "\n".join([
            f"# measured at commit {commit}",
            f"# bench/sharded_verify.py  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}",
            f"command: PYTHONPATH=. python -m torch.distributed.run --standalone --nproc-per-node {world} bench/sharded_verify.py --mib {args.mib} --out {args.out}",
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs (shared with other work), torch {torch.__version__}, gloo, CPU only (no GPU)",
            f"model: 8 f32 tensors, {total / 2**20:.1f} MiB, Shard(0) over {world} ranks (uneven rows: shards not leaf-aligned)",
            f"compared: sentry.hash_artifact(state_dict) unsharded on rank 0  vs  digest_sharded on {world} ranks "
            f"(each its shard, one exchange, every rank folds); best of {args.repeat}",
            "",
            f"unsharded, 1 process : {one:8.3f} s  {total / one / 1e9:6.2f} GB/s",
            f"sharded, {world} ranks     : {both:8.3f} s  {total / both / 1e9:6.2f} GB/s   ratio {one / both:.2f}x",
            f"roots equal           : {same}",
            f"bytes exchanged       : {int(sent.item())} B in all ({int(sent.item()) / len(full) / world:.0f} B per tensor per rank)"
            f"  vs {total * (world - 1)} B a gather of the weights to every rank would move",
            "",
        ])
        print(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
