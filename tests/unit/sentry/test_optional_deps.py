"""A missing optional dependency is one sentence naming the extra that installs it: exit 2 and one
line on the command line, MissingDependency (a SentryError and an ImportError) from the API.

Each case runs in a child process whose ``sys.modules[name] = None`` makes ``import name`` fail
as it does where the package is not installed.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import REPO

from sentry.errors import MissingDependency, SentryError

ROOT = REPO
PIP = r"pip install 'sentry-artifacts\[{}\]'$"


def run_without(modules, code: str, cwd: Path) -> subprocess.CompletedProcess:
    prelude = f"import sys\nfor _m in {list(modules)!r}:\n    sys.modules[_m] = None\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


@pytest.fixture
def model_dir(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"weights")
    return tmp_path


@pytest.mark.parametrize("blocked, args, message", [
    (["numpy"], ["hash", "m", "--device", "cuda"], "hashing on CUDA needs NumPy, which is not installed: " + PIP.format("gpu")),
    (["cupy"], ["hash", "m", "--device", "cuda"], "hashing on CUDA needs CuPy, which is not installed: " + PIP.format("gpu")),
    (["sigstore"], ["sign", "m", "--sigstore", "--identity-token", "x"],
     "Sigstore signing or verification needs sigstore-python, which is not installed: " + PIP.format("sigstore")),
], ids=["numpy-cuda", "cupy-cuda", "sigstore"])
def test_cli_names_the_extra_in_one_line(model_dir, blocked, args, message):
    r = run_without(blocked, f"from sentry.cli import main\nsys.exit(main({args + ['-q']!r}))", model_dir)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("sentry: ")
    assert re.fullmatch(message, r.stderr[len("sentry: "):].rstrip("\n")), r.stderr


API_REPORT = """
import json
try:
    {call}
except Exception as exc:
    from sentry.errors import SentryError
    print(json.dumps({{"type": type(exc).__name__, "import_error": isinstance(exc, ImportError),
                      "sentry_error": isinstance(exc, SentryError), "name": getattr(exc, "name", None),
                      "message": str(exc)}}))
else:
    print(json.dumps(None))
"""


def api_error(blocked, call: str, cwd: Path) -> dict:
    r = run_without(blocked, API_REPORT.format(call=call), cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


@pytest.mark.parametrize("blocked, call, module, extra, needs", [
    # torch without numpy imports, but cannot give a tensor's bytes (torch's "Numpy is not available")
    (["numpy"], "import torch, sentry; sentry.hash_artifact(torch.nn.Linear(2, 2))", "numpy", "torch", "NumPy"),
    (["torch"], "import sentry; sentry.hash_artifact({})", "torch", "torch", "PyTorch"),
    (["torch"], "import sentry; sentry.protect(object())", "torch", "torch", "PyTorch"),
    (["torch"], "import sentry; sentry.data.VerifiedDataset('m')", "torch", "torch", "PyTorch"),
    (["nvidia"], "import sentry; sentry.data.get_image_dataloader('m', 2)", "nvidia.dali", "dali", "NVIDIA DALI"),
    (["cupy"], "import sentry.crypto as c; c.batch_sign([b'\\x01' * 32], [b'\\x00' * 32], device='cuda')",
     "cupy", "gpu", "CuPy"),
], ids=["numpy-tensor-bytes", "torch-state-dict", "torch-protect", "torch-loader", "dali-loader", "cupy-batch-ecdsa"])
def test_api_raises_missing_dependency_naming_the_extra(model_dir, blocked, call, module, extra, needs):
    err = api_error(blocked, call, model_dir)
    assert err is not None, "the call succeeded without its dependency"
    assert err["type"] == "MissingDependency" and err["import_error"] and err["sentry_error"], err
    assert err["name"] == module
    assert err["message"].endswith(f"needs {needs}, which is not installed: pip install 'sentry-artifacts[{extra}]'")
    assert "\n" not in err["message"]


def test_verified_dataset_of_images_needs_pillow_before_any_sample_is_loaded(tmp_path, keys):
    """Pillow decodes image samples, possibly in DataLoader workers: it is asked for up front."""
    import sentry

    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    (data / "cat" / "0.png").write_bytes(b"\x89PNG not decoded: Pillow is missing first")
    sentry.sign_dataset(data, key=keys[0])
    err = api_error(["PIL"], f"import sentry.data as d; d.VerifiedDataset('data', public_key={str(keys[1])!r})", tmp_path)
    assert err["type"] == "MissingDependency" and err["name"] == "PIL", err
    assert err["message"] == "decoding image samples needs Pillow, which is not installed: pip install 'sentry-artifacts[torch]'"


def test_an_installed_module_that_fails_to_import_is_named_with_its_reason(tmp_path, monkeypatch):
    """Not 'not installed' when the module is there but its own import breaks (a missing library)."""
    from sentry._optional import require

    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import _sentry_test_no_such_library\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependency) as exc:
        require("brokenpkg", "gpu", "testing")
    assert str(exc.value) == ("testing needs brokenpkg, which does not import (No module named "
                              "'_sentry_test_no_such_library'): reinstall it, e.g. pip install --force-reinstall "
                              "'sentry-artifacts[gpu]'")
    assert isinstance(exc.value, ImportError) and isinstance(exc.value, SentryError) and exc.value.exit_code == 2
    with pytest.raises(MissingDependency, match=r"^testing needs absentpkg\.sub, which is not installed: "):
        require("absentpkg.sub", "gpu", "testing")


@pytest.mark.parametrize("blocked, source, message", [
    (["sklearn"], "digits", "sentry_dataset: error: sklearn is not installed: pip install 'sentry-artifacts[agents]'"),
    (["pyarrow"], "t.parquet", "sentry_dataset: error: reading Parquet or Arrow files needs pyarrow, which is not "
                               "installed: pip install 'sentry-artifacts[agents]'"),
], ids=["sklearn", "pyarrow"])
def test_agents_name_the_agents_extra(tmp_path, keys, blocked, source, message):
    (tmp_path / "t.parquet").write_bytes(b"PAR1 never read")
    code = (f"import runpy\nsys.argv = ['agents.dataset', '--out', 'd', '--key', {str(keys[0])!r}, '--source', {source!r}]\n"
            "runpy.run_module('agents.dataset', run_name='__main__')")
    r = run_without(blocked, code, tmp_path)
    assert r.returncode == 2 and r.stderr == message + "\n", r.stderr
