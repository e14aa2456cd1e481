"""``sentry --version`` and ``sentry doctor``: which paths this installation runs and why.

The CPU path (the C accelerator, or why it is missing), where the kernels and cufile.json were
found, and each optional dependency's version read from its metadata: nothing here imports
torch, CuPy, kvikio or DALI, so a broken one cannot crash the report. Only ``gpu=True`` probes
CUDA, as cheaply as the CUDA backend does (CuPy's device count, the first device's name).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import platform
from pathlib import Path
from typing import Any

from . import __version__
from ._optional import OPTIONAL, installed, version
from .errors import SentryError, reason

__all__ = ["SKIPPED_NOTE", "collect", "cpu_path", "cuda_probe", "lines"]

_PACKAGE = Path(__file__).resolve().parent
# Written by setup.py's build_ext when the accelerator could not be built (same name there).
SKIPPED_NOTE = _PACKAGE / "hashing" / "_cmerkle.skipped"


def cpu_path() -> dict:
    """``{"accelerated": bool, "path": str, "reason": str | None}``: the CPU engine's hashing path."""
    from .hashing import cpu

    if cpu.ACCELERATED:
        return {"accelerated": True, "path": "C accelerator (OpenSSL SHA-256, GIL released)", "reason": None}
    return {"accelerated": False, "path": "hashlib (pure Python reference; same roots, slower)",
            "reason": _why_not_accelerated()}


def _why_not_accelerated() -> str:
    if importlib.util.find_spec("sentry.hashing._cmerkle") is not None:
        try:
            importlib.import_module("sentry.hashing._cmerkle")
        except ImportError as exc:
            return f"the C accelerator is installed but does not load ({reason(exc)})"
    if SKIPPED_NOTE.is_file():
        return f"the C accelerator was not built: {SKIPPED_NOTE.read_text().strip()}"
    return "the C accelerator was not built (this copy was not built by setup.py's build_ext)"


def _data_files() -> dict:
    from . import _gpu as kernel_source
    from .io import kvikio

    try:
        kernels: str | None = str(kernel_source.kernel_dir())
    except SentryError:
        kernels = None
    return {"kernels": kernels, "cufile_json": str(kvikio.DEFAULT_CONFIG) if kvikio.DEFAULT_CONFIG.is_file() else None}


def _cryptography() -> dict:
    try:
        from cryptography.hazmat.backends.openssl.backend import backend
    except ImportError as exc:
        return {"version": None, "openssl": None, "error": reason(exc)}
    return {"version": importlib.metadata.version("cryptography"), "openssl": backend.openssl_version_text()}


def _optional() -> dict:
    return {module: {"name": dep.name, "installed": installed(module),
                     "version": version(module) if installed(module) else None, "extras": list(dep.extras)}
            for module, dep in OPTIONAL.items()}


def cuda_probe() -> dict:
    """``{"usable": bool, "reason", "devices", "driver"}``: what the CUDA backends would find."""
    if not installed("cupy"):
        return {"usable": False, "reason": "CuPy is not installed (pip install 'sentry-artifacts[gpu]')"}
    try:
        import cupy

        runtime = cupy.cuda.runtime
        count = runtime.getDeviceCount()
        names = [runtime.getDeviceProperties(i)["name"] for i in range(count)]
        devices = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        driver = runtime.driverGetVersion()
    except Exception as exc:  # no driver, a driver too old, CuPy's libraries missing, ...
        return {"usable": False, "reason": f"no usable CUDA GPU ({type(exc).__name__}: {reason(exc)})"}
    return {"usable": bool(count), "reason": None if count else "no CUDA GPU is visible", "devices": devices,
            "driver": f"{driver // 1000}.{driver % 1000 // 10}"}


def collect(gpu: bool = True) -> dict[str, Any]:
    """Everything ``sentry doctor --json`` prints; ``gpu=False`` skips the CUDA probe."""
    info: dict[str, Any] = {
        "version": __version__, "package": str(_PACKAGE),
        "python": f"{platform.python_version()} ({platform.python_implementation()}, {platform.system()} "
                  f"{platform.machine()})",
        "cpu": cpu_path(), "files": _data_files(), "cryptography": _cryptography(), "optional": _optional(),
    }
    if gpu:
        info["cuda"] = cuda_probe()
    return info


def lines(info: dict) -> list[str]:
    """``collect()``'s report as text, one fact per line."""
    cpu, files, crypto = info["cpu"], info["files"], info["cryptography"]
    rows = [("python", info["python"]),
            ("cpu path", cpu["path"] + (f": {cpu['reason']}" if cpu["reason"] else "")),
            ("kernels", files["kernels"] or "missing (the CUDA backends cannot compile)"),
            ("cufile.json", files["cufile_json"] or "missing (cuFile uses its defaults)"),
            ("cryptography", f"{crypto['version']} (with {crypto['openssl']})" if crypto["version"]
             else f"not installed ({crypto['error']})")]
    for dep in info["optional"].values():
        rows.append((dep["name"], (dep["version"] or "installed") if dep["installed"]
                     else f"not installed (extra: {' or '.join(dep['extras'])})"))
    if "cuda" in info:
        cuda = info["cuda"]
        rows.append(("CUDA", f"{', '.join(cuda['devices'])} (driver {cuda['driver']})" if cuda["usable"]
                     else cuda["reason"]))
    return [f"sentry-artifacts {info['version']} ({info['package']})", *(f"{k:<16}{v}" for k, v in rows)]
