"""GPU Merkle hashing throughput, with the GPU's own ceilings measured in the same run.

    python bench/gpu_merkle.py [--max-gib 16] [--repeats 5] [--tensors 10000] [--quick] [--out FILE]

Measures, on the current CUDA device:
  1. one buffer of 64 MiB .. --max-gib GiB, hashed in place (``cuda.digest_tensors``, end to end:
     planning, launches, results back on the host), aligned and as a bf16 view at an odd element
     (2 bytes past a 4-byte boundary: the kernel's unaligned load path);
  2. a model-shaped set: --tensors tensors of 4 KiB .. 64 MiB (log-uniform), views into one arena,
     hashed in one call;
  3. the SHA-256 compression rate (kernels/sha256_rate.cu, no memory traffic): the compute ceiling;
  4. device-to-device copy bandwidth (bytes read + written): the memory ceiling;
  5. ``sentry.verify_model`` of a 7B-shaped bf16 state_dict (~13.5 GB) already on the GPU, end to end.
Each figure is the median of --repeats timed runs after one warm-up, and is printed as one JSON
line as soon as it is measured. --quick (scripts/gpu-check.sh) is --max-gib 4 --repeats 3
--tensors 2000. Targets on an H100/H200: >= 500 GB/s for inputs >= 1 GiB, aligned and unaligned;
verify_model of ~14 GB under 40 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np
import torch

from sentry import _gpu
from sentry.hashing import cuda

MiB, GiB = 1 << 20, 1 << 30


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() (after a warm-up), the device synchronized around each run."""
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_bytes(n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n,), dtype=torch.uint8, device="cuda")


def measured(name: str, value):
    """Print a figure as soon as it exists: a run cut short by a timeout keeps what it measured."""
    print(json.dumps({name: value}), flush=True)
    return value


def single_buffers(max_gib: float, repeats: int) -> list:
    rows, size = [], 64 * MiB
    while size <= max_gib * GiB:
        buf = random_bytes(size + 2)
        for offset, t in ((0, buf[:size]), (2, buf[2:].view(torch.bfloat16))):
            s = timed(lambda: cuda.digest_tensors([t]), repeats)
            rows.append(measured("single", {"bytes": size, "offset": offset, "seconds": s, "GBps": size / s / 1e9}))
        del buf, t
        torch.cuda.empty_cache()
        size *= 4
    return rows


def model_shaped(repeats: int, count: int) -> dict:
    rng = np.random.default_rng(0)
    sizes = np.exp(rng.uniform(np.log(4096), np.log(64 * MiB), count)).astype(np.int64)
    arena_bytes = min(int(sizes.sum()), 16 * GiB)
    arena = random_bytes(arena_bytes)
    starts = rng.integers(0, arena_bytes - sizes + 1)
    tensors = [arena[s : s + n] for s, n in zip(starts.tolist(), sizes.tolist())]
    s = timed(lambda: cuda.digest_tensors(tensors), repeats)
    total = int(sizes.sum())
    return {"tensors": count, "bytes": total, "seconds": s, "GBps": total / s / 1e9}


def compression_rate(repeats: int) -> dict:
    import cupy

    kernel = _gpu.raw_module("sha256_rate.cu", cupy.cuda.Device().id).get_function("sha256_rate")
    sms = cupy.cuda.Device().attributes["MultiProcessorCount"]
    threads, blocks, rounds = 256, sms * 32, 256
    out = cupy.empty(threads * blocks * 8, cupy.uint32)
    s = timed(lambda: (kernel((blocks,), (threads,), (np.uint32(rounds), out)), cupy.cuda.Device().synchronize()), repeats)
    nbytes = threads * blocks * rounds * 64
    return {"blocks_per_s": nbytes / 64 / s, "GBps": nbytes / s / 1e9}


def copy_bandwidth(repeats: int) -> dict:
    src = random_bytes(4 * GiB)
    dst = torch.empty_like(src)
    s = timed(lambda: dst.copy_(src), repeats)
    return {"bytes_read_and_written": 2 * src.numel(), "GBps": 2 * src.numel() / s / 1e9}


def llama7b_like() -> dict:
    """291 bf16 tensors shaped like a 7B decoder (6.7e9 parameters, ~13.5 GB)."""
    g = torch.Generator(device="cuda").manual_seed(0)

    def w(*shape):
        return torch.empty(shape, dtype=torch.bfloat16, device="cuda").normal_(generator=g)

    d, ff, vocab = 4096, 11008, 32000
    state = {"embed_tokens.weight": w(vocab, d), "norm.weight": w(d), "lm_head.weight": w(vocab, d)}
    for i in range(32):
        p = f"layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            state[p + f"self_attn.{name}.weight"] = w(d, d)
        for name, shape in (("gate_proj", (ff, d)), ("up_proj", (ff, d)), ("down_proj", (d, ff))):
            state[p + f"mlp.{name}.weight"] = w(*shape)
        state[p + "input_layernorm.weight"] = w(d)
        state[p + "post_attention_layernorm.weight"] = w(d)
    return state


def verify_model_time(repeats: int) -> dict:
    import sentry

    state = llama7b_like()
    nbytes = sum(t.numel() * t.element_size() for t in state.values())
    with tempfile.TemporaryDirectory() as tmp:
        from sentry.signing import write_keypair

        key, pub = os.path.join(tmp, "k.pem"), os.path.join(tmp, "k.pub.pem")
        write_keypair(key, pub)
        sig = os.path.join(tmp, "m.sig")
        sentry.sign_model(state, key=key, signature=sig, device="cuda")
        s = timed(lambda: sentry.verify_model(state, public_key=pub, signature=sig, device="cuda"), repeats)
    return {"tensors": len(state), "bytes": nbytes, "seconds": s, "GBps": nbytes / s / 1e9}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-gib", type=float, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tensors", type=int, default=10_000, help="tensors in the model-shaped set")
    ap.add_argument("--quick", action="store_true", help="--max-gib 4 --repeats 3 --tensors 2000")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.max_gib, args.repeats, args.tensors = 4, 3, 2000
    if not _gpu.available():
        print(f"no GPU backend: {_gpu.unavailable_reason()}", file=sys.stderr)
        return 2
    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name}, {props.multi_processor_count} SMs, {props.total_memory / GiB:.0f} GiB; torch {torch.__version__}")

    res = {"device": props.name, "date": time.strftime("%Y-%m-%d")}
    res["compression"] = measured("compression", compression_rate(args.repeats))
    res["copy"] = measured("copy", copy_bandwidth(args.repeats))
    torch.cuda.empty_cache()
    res["single"] = single_buffers(args.max_gib, args.repeats)
    res["model_shaped"] = measured("model_shaped", model_shaped(args.repeats, args.tensors))
    torch.cuda.empty_cache()
    res["verify_model"] = measured("verify_model", verify_model_time(args.repeats))

    ceiling, copy = res["compression"]["GBps"], res["copy"]["GBps"]
    print(f"\nSHA-256 compression ceiling: {ceiling:8.1f} GB/s of message blocks")
    print(f"device-to-device copy:       {copy:8.1f} GB/s (bytes read + written)")
    print(f"\n{'input':>34} {'ms':>9} {'GB/s':>8} {'of SHA ceiling':>15} {'of copy':>8}")
    rows = [(f"one buffer {r['bytes'] / MiB:,.0f} MiB{' +2 B bf16' if r['offset'] else ''}", r) for r in res["single"]]
    m = res["model_shaped"]
    rows.append((f"{m['tensors']:,} tensors, {m['bytes'] / GiB:.1f} GiB", m))
    v = res["verify_model"]
    rows.append((f"verify_model {v['tensors']} bf16, {v['bytes'] / 1e9:.1f} GB", v))
    for label, r in rows:
        print(f"{label:>34} {r['seconds'] * 1e3:9.2f} {r['GBps']:8.1f} {r['GBps'] / ceiling:15.2f} {r['GBps'] / copy:8.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
