"""The package as users get it: `python -m build` makes an sdist and, from it, a wheel; the wheel
installs into a fresh venv outside the checkout (pip --no-deps, plus cryptography) and works there,
with the CUDA kernels, cufile.json and py.typed inside the installed package.

One build serves the module (a few seconds: the wheel compiles the C accelerator). A test module
rather than a step of .ci/run: it runs wherever the suite runs, and asserts on the archives'
contents and on what the installed command prints, not only on exit codes.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from support import REPO

import sentry

ROOT = REPO
KERNELS = sorted(p.name for p in (ROOT / "kernels").iterdir() if p.is_file())
# What the build reads (setup.py, MANIFEST.in); anything else of the checkout stays out of the copy.
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "cufile.json", "kernels", "docs", "sentry")

slow = pytest.mark.slow


def checkout_copy(dest: Path) -> Path:
    """The sources the build reads, without build outputs (an in-place .so, egg-info, caches)."""
    dest.mkdir(parents=True)
    junk = shutil.ignore_patterns("__pycache__", "*.so", "*.skipped", "*.egg-info", "cufile.json", "kernels")
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=None if name != "sentry" else junk)
        else:
            shutil.copy2(src, dest / name)
    return dest


def run(*args, cwd=None, env=None, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    if check:
        assert r.returncode == 0, (args, r.stdout[-3000:], r.stderr[-3000:])
    return r


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict:
    """``{"sdist": path, "wheel": path}``, the wheel built from the sdist (as `python -m build` does)."""
    base = tmp_path_factory.mktemp("dist")
    src = checkout_copy(base / "src")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", base / "out", src)
    (sdist,), (wheel,) = (base / "out").glob("*.tar.gz"), (base / "out").glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> dict:
    """A fresh venv (no pip of its own: this pip installs into it) with the wheel and cryptography."""
    base = tmp_path_factory.mktemp("venv")
    venv = base / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    # Nothing of the checkout on the path: pip would take its egg-info for an installed copy.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    pip = [sys.executable, "-m", "pip", "--python", py, "install", "--quiet", "--disable-pip-version-check"]
    run(*pip, "--no-deps", dist["wheel"], env=env)
    run(*pip, "cryptography", env=env)  # the one required dependency (and its cffi): no torch, no numpy
    assert (venv / "bin" / "sentry").is_file(), "pip installed no sentry command: did it take another copy for this one?"
    work = base / "work"  # outside the checkout: nothing can be imported from it
    work.mkdir()
    return {"sentry": venv / "bin" / "sentry", "python": py, "env": env, "cwd": work}


@slow
def test_sdist_carries_the_kernels_cufile_json_docs_and_license(dist):
    with tarfile.open(dist["sdist"]) as tar:
        top = tar.getnames()[0].split("/")[0]
        names = {n.removeprefix(top + "/") for n in tar.getnames()}
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
        license_text = tar.extractfile(f"{top}/LICENSE").read().decode()
    assert {f"kernels/{k}" for k in KERNELS} <= names
    assert {"cufile.json", "LICENSE", "README.md", "docs/spec.md", "sentry/hashing/_cmerkle.c", "sentry/py.typed"} <= names
    assert not [n for n in names if n.endswith((".so", ".pyc"))]
    assert "Apache License\n                           Version 2.0, January 2004" in license_text
    assert "License-Expression: Apache-2.0" in pkg_info and "License-File: LICENSE" in pkg_info
    assert "Project-URL: Source, https://github.com/sentry-artifacts/sentry" in pkg_info
    assert "Classifier: Typing :: Typed" in pkg_info and "Keywords: " in pkg_info


@slow
def test_wheel_ships_kernels_cufile_json_and_py_typed_inside_the_package(dist):
    assert dist["wheel"].name.startswith(f"sentry_artifacts-{sentry.__version__}-")  # pyproject reads the version
    with zipfile.ZipFile(dist["wheel"]) as whl:
        names = set(whl.namelist())
        assert whl.read("sentry/io/cufile.json") == (ROOT / "cufile.json").read_bytes()
        assert whl.read("sentry/hashing/kernels/merkle.cu") == (ROOT / "kernels" / "merkle.cu").read_bytes()
    assert {f"sentry/hashing/kernels/{k}" for k in KERNELS} <= names
    assert "sentry/py.typed" in names
    assert any(n.startswith("sentry/hashing/_cmerkle.") and n.endswith(".so") for n in names) or \
        "sentry/hashing/_cmerkle.skipped" in names  # built, or the reason it was not


@slow
def test_installed_package_answers_version_and_finds_its_data(installed):
    r = run(installed["sentry"], "--version", cwd=installed["cwd"], env=installed["env"])
    assert r.stdout.splitlines()[0].startswith(f"sentry-artifacts {sentry.__version__} (")
    site = run(installed["python"], "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
               cwd=installed["cwd"], env=installed["env"]).stdout.strip()
    r = run(installed["sentry"], "doctor", "--json", cwd=installed["cwd"], env=installed["env"])
    info = json.loads(r.stdout)["report"]
    package = Path(site) / "sentry"
    assert info["package"] == str(package)  # the installed copy, not the checkout
    assert info["files"] == {"kernels": str(package / "hashing" / "kernels"), "cufile_json": str(package / "io" / "cufile.json")}
    assert info["cryptography"]["version"] is not None
    assert not info["optional"]["numpy"]["installed"] and not info["optional"]["torch"]["installed"]
    assert info["cuda"] == {"usable": False, "reason": "CuPy is not installed (pip install 'sentry-artifacts[gpu]')"}
    if os.environ.get("SENTRY_REQUIRE_ACCELERATOR"):  # CI has a compiler and OpenSSL headers
        assert info["cpu"]["accelerated"], info["cpu"]


@slow
def test_installed_package_hashes_signs_and_verifies_without_torch_or_numpy(installed):
    cwd, env, exe = installed["cwd"], installed["env"], installed["sentry"]
    (cwd / "model").mkdir()
    data = b"weights of a model, one leaf"
    (cwd / "model" / "w.bin").write_bytes(data)
    r = run(exe, "hash", "model", "-q", cwd=cwd, env=env)
    # RFC 9162: a one-leaf item's root is SHA-256(0x00 || bytes)
    assert r.stdout.splitlines()[0].split() == [hashlib.sha256(b"\0" + data).hexdigest(), str(len(data)), "file", "w.bin"]
    run(exe, "keygen", "k.pem", cwd=cwd, env=env)
    run(exe, "sign", "model", "--key", "k.pem", "-q", cwd=cwd, env=env)
    run(exe, "verify", "model", "--public-key", "k.pub.pem", "-q", cwd=cwd, env=env)
    (cwd / "model" / "w.bin").write_bytes(data[::-1])
    assert run(exe, "verify", "model", "--public-key", "k.pub.pem", "-q", cwd=cwd, env=env, check=False).returncode == 1
    r = run(exe, "hash", "model", "--device", "cuda", cwd=cwd, env=env, check=False)  # numpy really is absent here
    assert (r.returncode, r.stderr) == (2, "sentry: hashing on CUDA needs NumPy, which is not installed: "
                                            "pip install 'sentry-artifacts[gpu]'\n")


def build_ext_note(tmp_path: Path, env: dict) -> str | None:
    """Build the C accelerator in a copy of the sources with ``env``; the note doctor would read."""
    src = checkout_copy(tmp_path / "src")
    run(sys.executable, "setup.py", "-q", "build_ext", "--inplace", cwd=src, env={**os.environ, **env})
    note = src / "sentry" / "hashing" / "_cmerkle.skipped"
    return note.read_text().strip() if note.exists() else None


@slow
def test_a_skipped_accelerator_leaves_the_reason_and_doctor_prints_it(tmp_path):
    assert build_ext_note(tmp_path / "a", {"CC": str(tmp_path / "no-such-cc")}) == \
        f"no C compiler ({tmp_path / 'no-such-cc'}) at build time"
    assert build_ext_note(tmp_path / "b", {"CC": "false"}) == "the C compiler (false) does not work"
    src = tmp_path / "b" / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    r = run(sys.executable, "-m", "sentry", "--version", cwd=tmp_path, env=env)
    assert "cpu path        hashlib (pure Python reference; same roots, slower): the C accelerator was not built: " \
           "the C compiler (false) does not work" in r.stdout.splitlines()
    # a later build that works removes the stale note (and the accelerator is in use)
    run(sys.executable, "setup.py", "-q", "build_ext", "--inplace", cwd=src)
    assert not (src / "sentry" / "hashing" / "_cmerkle.skipped").exists()
    r = run(sys.executable, "-m", "sentry", "--version", cwd=tmp_path, env=env)
    assert "cpu path        C accelerator (OpenSSL SHA-256, GIL released)" in r.stdout.splitlines()


@slow
def test_missing_openssl_headers_are_named(tmp_path):
    """The case the issue measured (4.3x slower, silently): OpenSSL's headers hidden in a mount namespace."""
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if shutil.which("unshare") is None or probe.returncode != 0 or not Path("/usr/include/openssl/sha.h").exists():
        pytest.skip("needs unshare -m (root) and OpenSSL headers in /usr/include to hide")
    src = checkout_copy(tmp_path / "src")
    (tmp_path / "empty").mkdir()
    script = (f"mount --bind {tmp_path / 'empty'} /usr/include/openssl && "
              f"{sys.executable} setup.py -q build_ext --inplace")
    run("unshare", "-m", "sh", "-c", script, cwd=src)
    assert (src / "sentry" / "hashing" / "_cmerkle.skipped").read_text().strip() == \
        "no OpenSSL headers (openssl/sha.h: libssl-dev or openssl-devel) at build time"


def test_dir_of_the_lazy_module_lists_the_public_api():
    names = dir(sentry)
    assert set(sentry.__all__) <= set(names) and "data" in names and "__version__" in names
    assert {"sign_model", "verify_model", "sign_dataset", "verify_dataset", "protect", "configure",
            "MissingDependency"} <= set(sentry.__all__)
    assert not [n for n in names if n.startswith("_") and not n.startswith("__")]  # no private helpers
    for name in sentry.__all__:  # every name listed resolves
        assert getattr(sentry, name) is not None


def test_the_dockerfile_copies_everything_the_build_reads():
    """`pip install .` inside the image builds from what the Dockerfile copied: SOURCES less docs/
    (the wheel does not carry them), or the image build fails only in scripts/compose-ci.sh."""
    copied = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            copied.update(p.rstrip("/") for p in line.split()[1:-1])
    needed = set(SOURCES) - {"docs", "MANIFEST.in"}
    assert needed <= copied
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    assert "*" in lines and {n for n in needed if f"!{n}" not in lines and f"!{n}/" not in lines} == set()
