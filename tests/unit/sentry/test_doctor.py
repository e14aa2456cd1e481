"""`sentry --version` and `sentry doctor`: what they report matches what the engine actually does,
and neither imports torch, CuPy or DALI to find out."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

import sentry
from sentry import doctor
from sentry.cli import main
from sentry.hashing import cpu

ROOT = REPO


def version_lines(capsys) -> list[str]:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    return capsys.readouterr().out.splitlines()


def row(lines: list[str], label: str) -> str:
    (found,) = [line[16:] for line in lines if line[:16].rstrip() == label]
    return found


def test_version_names_the_release_the_cpu_path_and_the_dependencies(capsys):
    import numpy
    import torch

    lines = version_lines(capsys)
    assert lines[0] == f"sentry-artifacts {sentry.__version__} ({Path(sentry.__file__).parent})"
    assert row(lines, "cpu path").startswith("C accelerator" if cpu.ACCELERATED else "hashlib")
    assert row(lines, "NumPy") == numpy.__version__  # the modules' own word, against doctor's metadata
    assert row(lines, "PyTorch") == torch.__version__
    assert row(lines, "kernels") == str(ROOT / "kernels")  # a checkout reads them in place
    assert row(lines, "cufile.json") == str(ROOT / "cufile.json")
    assert not [line for line in lines if line.startswith("CUDA")]  # --version does not probe the GPU


def test_doctor_json_agrees_with_the_backends(capsys):
    from sentry.hashing import resolve_device

    assert main(["doctor", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["report"]
    assert info["version"] == sentry.__version__
    assert info["cpu"]["accelerated"] is cpu.ACCELERATED
    assert info["cuda"]["usable"] is (resolve_device("auto") == "cuda")
    if not info["cuda"]["usable"]:
        assert info["cuda"]["reason"]
    import cryptography

    assert info["cryptography"]["version"] == cryptography.__version__
    for module, dep in info["optional"].items():
        assert dep["installed"] is (module in sys.modules or doctor.installed(module))
        assert dep["extras"], module  # each names the extra that installs it


def test_a_missing_accelerator_is_reported_with_the_builds_reason(monkeypatch, tmp_path, capsys):
    note = tmp_path / "_cmerkle.skipped"
    note.write_text("no OpenSSL headers (openssl/sha.h: libssl-dev or openssl-devel) at build time\n")
    monkeypatch.setattr(cpu, "ACCELERATED", False)
    monkeypatch.setattr(doctor, "SKIPPED_NOTE", note)
    assert row(version_lines(capsys), "cpu path") == (
        "hashlib (pure Python reference; same roots, slower): the C accelerator was not built: "
        "no OpenSSL headers (openssl/sha.h: libssl-dev or openssl-devel) at build time")
    note.unlink()
    assert row(version_lines(capsys), "cpu path").endswith(
        "the C accelerator was not built (this copy was not built by setup.py's build_ext)")


def test_doctor_imports_no_optional_dependency_and_survives_a_blocked_one(tmp_path):
    """A broken optional install must not crash the report meant to diagnose it (only the CUDA probe
    imports CuPy)."""
    code = ("import sys\nsys.modules['numpy'] = None\nsys.modules['cryptography'] = None\n"
            "from sentry.cli import main\ncode = main(['doctor'])\n"
            "heavy = [m for m in ('torch', 'kvikio', 'nvidia.dali', 'PIL', 'sigstore') if m in sys.modules]\n"
            "print('imported:', heavy)\nsys.exit(code)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "imported: []"
    assert row(lines, "NumPy") == "not installed (extra: torch or gpu or dali)"
    assert row(lines, "cryptography").startswith("not installed (")


def fake_cupy(monkeypatch, runtime) -> None:
    import types

    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime)))


def test_cuda_probe_names_the_devices_and_the_driver(monkeypatch):
    """CuPy's runtime API as the probe uses it (the real one awaits a GPU session)."""
    import types

    props = [{"name": b"NVIDIA H200"}, {"name": "NVIDIA H100"}]
    fake_cupy(monkeypatch, types.SimpleNamespace(getDeviceCount=lambda: 2, getDeviceProperties=props.__getitem__,
                                                 driverGetVersion=lambda: 13020))
    assert doctor.cuda_probe() == {"usable": True, "reason": None, "devices": ["NVIDIA H200", "NVIDIA H100"],
                                   "driver": "13.2"}


def test_cuda_probe_never_raises(monkeypatch):
    import types

    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    fake_cupy(monkeypatch, types.SimpleNamespace(getDeviceCount=no_driver))
    assert doctor.cuda_probe() == {"usable": False, "reason": "no usable CUDA GPU (RuntimeError: "
                                   "cudaErrorInsufficientDriver: CUDA driver version is insufficient)"}
    fake_cupy(monkeypatch, types.SimpleNamespace(getDeviceCount=lambda: 0, getDeviceProperties=None,
                                                 driverGetVersion=lambda: 13000))
    assert doctor.cuda_probe()["reason"] == "no CUDA GPU is visible"
