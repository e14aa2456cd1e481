"""scripts/gpu-check.sh on a machine without a GPU: its dry run (wheels and environment for real,
the other steps listed), with nvidia-smi stubbed to fail as it does where there is no driver, and
python3 standing for this interpreter; the strict mode that turns skipped gpu tests into failures;
scripts/trim_wheel.py."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from support import REPO

ROOT = REPO
SCRIPT = ROOT / "scripts" / "gpu-check.sh"
STEPS = ["wheels", "env", "ecdsa-ptx", "merkle-nvrtc", "streams", "kvikio", "gpu-rest", "bench-merkle", "bench-ecdsa"]


def make_wheel(path: Path, files: dict) -> Path:
    """A pure-Python wheel of ``files`` (name -> text) with a RECORD of them, as pip expects."""
    dist = "probe_pkg-1.0.dist-info"
    meta = {f"{dist}/METADATA": "Metadata-Version: 2.1\nName: probe-pkg\nVersion: 1.0\n",
            f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    entries = {**files, **meta}
    record = "".join(f"{name},,\n" for name in [*entries, f"{dist}/RECORD"])
    path.mkdir(parents=True, exist_ok=True)
    wheel = path / "probe_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, text in {**entries, f"{dist}/RECORD": record}.items():
            z.writestr(name, text)
    return wheel


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True).stdout


def run_check(tmp: Path, **env) -> subprocess.CompletedProcess:
    """The script from the repository root, nvidia-smi failing, python3 = this interpreter
    (each call logged in tmp/python3.calls), HOME in tmp."""
    stubs = tmp / "bin"
    stubs.mkdir(exist_ok=True)
    (stubs / "nvidia-smi").write_text(
        "#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\" >&2\nexit 9\n")
    (stubs / "python3").write_text(f'#!/bin/sh\necho "$*" >> {tmp}/python3.calls\nexec {sys.executable} "$@"\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    (tmp / "home").mkdir(exist_ok=True)
    full = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "HOME": str(tmp / "home"), "OUT": str(tmp / "out"),
            "SENTRY_GPU_CHECK_WHEELS": str(tmp / "whl"), "SENTRY_GPU_CHECK_SITE": str(tmp / "site"), **env}
    full.pop("PYTHONPATH", None)
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-check")
    assert str(tmp).startswith("/tmp/"), "the check installs under /tmp only: run the tests with a basetemp there"
    make_wheel(tmp / "whl", {"probe_pkg/__init__.py": "X = 1\n"})
    before = git_status()
    r = run_check(tmp, SENTRY_GPU_CHECK_DRY="1")
    return tmp, r, before


def summary_rows(tmp: Path) -> dict:
    lines = (tmp / "out" / "summary.txt").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("step "))
    rows = {}
    for line in lines[start + 1:]:
        if line.startswith("result:"):
            break
        name, status, seconds, limit, command = line.split(None, 4)
        rows[name] = (status, int(seconds), int(limit), command)
    return rows


def test_the_scripts_parse():
    for script in ("gpu-check.sh", "gpu-wheels.sh"):
        r = subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_the_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    r = subprocess.run(["shellcheck", "scripts/gpu-check.sh", "scripts/gpu-wheels.sh"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_without_a_gpu_the_check_fails_and_says_so(dry_run):
    tmp, r, _ = dry_run
    assert r.returncode == 1, r.stdout + r.stderr
    summary = (tmp / "out" / "summary.txt").read_text()
    assert "GPU: none" in summary
    assert re.search(r"^result: FAIL \(1 of 9 steps\)$", summary, re.M)
    started = re.search(r"started (\S+Z)", summary).group(1)
    assert started[:10] == datetime.now(timezone.utc).strftime("%Y-%m-%d")
    rows = summary_rows(tmp)
    assert rows["wheels"][0] == "ok"
    assert rows["env"][0] in ("FAIL(1)", "TIMEOUT")  # TIMEOUT only on a machine loaded past 40 s
    assert all(rows[name][0] == "dry" for name in STEPS[2:])
    assert "NVIDIA-SMI has failed" in (tmp / "out" / "env.txt").read_text()


def test_it_installs_only_under_tmp_and_writes_what_the_device_tool_brings_back(dry_run):
    tmp, _, before = dry_run
    pip = [c for c in (tmp / "python3.calls").read_text().splitlines() if c.startswith("-m pip ")]
    assert len(pip) == 1
    args = pip[0].split()
    assert {"--no-index", "--no-deps", "--no-cache-dir"} <= set(args)
    assert args[args.index("--target") + 1] == str(tmp / "site")
    assert (tmp / "site" / "probe_pkg" / "__init__.py").read_text() == "X = 1\n"
    assert not (tmp / "home" / ".cache").exists()  # no pip cache in HOME
    assert git_status() == before  # nothing written in the checkout
    out = sorted(p.name for p in (tmp / "out").iterdir())
    assert out == ["env.txt", "steps.log", "summary.txt"]  # a real run adds the two JSON files: 5 of 8
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in out)


def test_a_site_outside_tmp_is_refused(tmp_path):
    outside = "/var/lib/sentry-gpu-check-site"  # not ROOT / "site": a checkout may itself lie under /tmp
    r = run_check(tmp_path, SENTRY_GPU_CHECK_SITE=outside, SENTRY_GPU_CHECK_DRY="1")
    assert r.returncode == 2 and "must be under /tmp" in r.stderr
    assert not Path(outside).exists() and not (tmp_path / "out").exists()


def test_the_steps_cover_every_gpu_test_file_emulator_gaps_first_in_the_budget(dry_run):
    tmp, _, _ = dry_run
    rows = summary_rows(tmp)
    assert list(rows) == STEPS
    assert sum(limit for _, _, limit, _ in rows.values()) <= 480  # 8 minutes
    named = set()
    for _, _, _, command in rows.values():
        for file in re.findall(r"(?:tests|bench|scripts)/[\w./-]+\.py", command):
            assert (ROOT / file).is_file(), file
            named.add(file)
    not_run = re.search(r"^not run: (.*)$", (tmp / "out" / "summary.txt").read_text(), re.M).group(1)
    marked = re.compile(r"^(@pytest\.mark\.gpu\b|pytestmark = \[?pytest\.mark\.gpu\b|.*marks=pytest\.mark\.gpu\b)", re.M)
    gpu_files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py") if marked.search(p.read_text())}
    assert {"tests/gpu/test_cuda.py", "tests/unit/crypto/test_crypto.py", "tests/unit/data/test_loaders.py"} <= gpu_files  # the three forms
    for file in gpu_files:
        assert file in named or file in not_run, f"{file} has gpu tests the check neither runs nor lists as not run"


def test_a_skipped_gpu_test_fails_under_sentry_require_gpu():
    from sentry.crypto import cuda_available

    if cuda_available():
        pytest.skip("a GPU is usable here: the gpu tests run rather than skip")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu and not slow", "tests/gpu/test_ecdsa_gpu.py"]
    env = {k: v for k, v in os.environ.items() if k != "SENTRY_REQUIRE_GPU"}
    lax = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    strict = subprocess.run(cmd, cwd=ROOT, env={**env, "SENTRY_REQUIRE_GPU": "1"}, capture_output=True, text=True, timeout=120)
    assert lax.returncode == 0 and " skipped" in lax.stdout, lax.stdout
    assert strict.returncode == 1 and "gpu test skipped under SENTRY_REQUIRE_GPU=1" in strict.stdout, strict.stdout


def test_trim_wheel_keeps_the_prefixes_and_a_record_pip_installs(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from trim_wheel import trim
    finally:
        sys.path.pop(0)
    wheel = make_wheel(tmp_path / "whl", {"probe_pkg/__init__.py": "X = 1\n", "probe_pkg/data/keep/a.txt": "a",
                                          "probe_pkg/data/drop/b.txt": "b" * 10_000})
    kept = trim(str(wheel), ["probe_pkg/__init__.py", "probe_pkg/data/keep/"])
    assert [k for k in kept if not k.startswith("probe_pkg-1.0.dist-info/")] == ["probe_pkg/__init__.py", "probe_pkg/data/keep/a.txt"]
    with zipfile.ZipFile(wheel) as z:
        record = z.read("probe_pkg-1.0.dist-info/RECORD").decode()
    assert "drop/b.txt" not in record and "keep/a.txt" in record
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-cache-dir",
                        "--target", str(tmp_path / "site"), str(wheel)], capture_output=True, text=True,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "site" / "probe_pkg" / "data" / "keep" / "a.txt").read_text() == "a"
    assert not (tmp_path / "site" / "probe_pkg" / "data" / "drop").exists()
    with pytest.raises(SystemExit, match="nothing under"):
        trim(str(wheel), ["absent/"])
