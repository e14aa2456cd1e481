"""What the GPU check runs on (scripts/gpu-check.sh records it in $OUT/env.txt): the GPU, the
versions, how Sentry reads files there, and one `python3 -m sentry` run on CUDA.

Exits 1 unless nvidia-smi answers, torch and Sentry's CUDA backend both see a GPU, and the CLI
hashes on it: a machine without a usable GPU fails the check instead of skipping it.
"""
from __future__ import annotations

import importlib
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd) -> bool:
    """Run ``cmd``, print what it printed; True when it exits 0."""
    print(f"$ {' '.join(map(str, cmd))}", flush=True)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  failed: {exc}")
        return False
    print((r.stdout + r.stderr).rstrip())
    return r.returncode == 0


def version(name: str) -> str:
    try:
        return getattr(importlib.import_module(name), "__version__", "(no __version__)")
    except Exception as exc:  # a broken install is worth recording too
        return f"missing ({type(exc).__name__}: {exc})"


def file_modes() -> None:
    """How the CUDA backend reads files: its reader, kvikio's default and each file's own mode."""
    from sentry.hashing import cuda
    from sentry.io import kvikio as kio

    print(f"file reader: {cuda.file_reader()}")
    if not kio.available():
        return
    print(f"kvikio default: {'GDS' if kio.gds_enabled() else 'compat mode'}; cuFile config {kio.configure_cufile()}")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.bin"
        probe.write_bytes(b"x" * 4096)
        for path in (ROOT / "README.md", probe):
            with kio.DeviceFileSource(path) as src:
                print(f"  {path}: {'GDS' if src.gds else 'compat mode'}")


def main() -> int:
    ok = run("nvidia-smi")
    ok &= run("nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem", "--format=csv")
    print(f"python {sys.version.split()[0]} on {platform.machine()}")
    for name in ("sentry", "torch", "cupy", "kvikio", "numpy", "cryptography", "safetensors"):
        print(f"{name}: {version(name)}")
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            print(f"torch sees {torch.cuda.device_count()} GPU(s): {p.name}, sm_{p.major}{p.minor}, "
                  f"{p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB")
        else:
            print("torch sees no CUDA GPU")
            ok = False
    except ImportError:
        print("torch is not installed")
        ok = False
    from sentry import _gpu

    reason = _gpu.unavailable_reason()
    print(f"Sentry's CUDA backend: {'available' if reason is None else reason}")
    if reason is not None:
        return 1
    file_modes()
    ok &= run(sys.executable, "-m", "sentry", "hash", ROOT / "kernels", "--device", "cuda", "--json", "-q")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
