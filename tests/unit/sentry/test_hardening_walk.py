"""Issue 10, items 1, 4, 7 and 11: what a directory walk leaves out, files whose reads do not match
their size, directories of any depth, and Hugging Face cache snapshots."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import py_compile
from pathlib import Path

import pytest
from support import make_deep, remove_deep

import sentry
from sentry.cli import main
from sentry.errors import SentryError, VerificationError
from sentry.manifest.ignore import DEFAULT_IGNORES, IgnoreRules


def run(capsys, *args) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def sign(capsys, keys, path, *extra):
    code, _, err = run(capsys, "sign", path, "--key", keys[0], "-q", *extra)
    assert code == 0, err


def verify(capsys, keys, path, *extra):
    return run(capsys, "verify", path, "--public-key", keys[1], "-q", *extra)


@pytest.fixture
def model(tmp_path) -> Path:
    m = tmp_path / "m"
    m.mkdir()
    (m / "modeling.py").write_text("def forward(x):\n    return x\n")
    (m / "weights.bin").write_bytes(b"\x01" * 5000)
    return m


# -- 1. default ignores: top level only, never __pycache__, visible, switchable ---------------------
def test_planted_pyc_in_pycache_fails_the_verify(capsys, keys, model, tmp_path):
    sign(capsys, keys, model)
    evil = tmp_path / "evil.py"
    evil.write_text("import os\nPWNED = True\n")
    (model / "__pycache__").mkdir()
    py_compile.compile(str(evil), cfile=str(model / "__pycache__" / "modeling.cpython-311.pyc"),
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    code, out, err = verify(capsys, keys, model)
    assert code == 1 and "extra: file __pycache__/modeling.cpython-311.pyc" in out
    assert "1 extra" in err


def test_nested_vcs_directories_are_hashed_in_models_and_datasets(capsys, keys, model, tmp_path):
    (model / "code").mkdir()
    sign(capsys, keys, model)
    (model / "code" / ".github").mkdir()
    (model / "code" / ".github" / "hook.py").write_text("import os")
    code, out, _ = verify(capsys, keys, model)
    assert code == 1 and "extra: file code/.github/hook.py" in out

    d = tmp_path / "d"
    (d / "cat").mkdir(parents=True)
    (d / "cat" / "1.png").write_bytes(b"png")
    sign(capsys, keys, d, "--dataset")
    (d / ".git").mkdir()
    (d / ".git" / "x.png").write_bytes(b"an extra class")  # ImageFolder would load this
    code, out, _ = verify(capsys, keys, d, "--dataset")
    assert code == 1 and "extra: sample .git/x.png" in out  # datasets have no default ignores at all


def test_top_level_ignored_paths_are_listed_on_success(capsys, keys, model):
    sign(capsys, keys, model)
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref: refs/heads/main")
    (model / ".gitignore").write_text("*.log")
    code, out, _ = verify(capsys, keys, model)
    assert code == 0 and "ignored: .git/\n" in out and "ignored: .gitignore\n" in out
    code, out, _ = verify(capsys, keys, model, "--json")
    assert code == 0 and json.loads(out)["report"]["ignored"] == [".git/", ".gitignore"]
    # The verifier may refuse the signer's defaults: then they are extra files.
    code, out, _ = verify(capsys, keys, model, "--no-default-ignores")
    assert code == 1 and "extra: file .git/HEAD" in out


def test_no_default_ignores_is_recorded_and_reproduced(capsys, keys, model):
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref: refs/heads/main")
    sign(capsys, keys, model, "--no-default-ignores")
    code, out, _ = run(capsys, "hash", model, "--no-default-ignores", "--json")
    assert code == 0 and json.loads(out)["report"]["artifact"]["default_ignores"] == []
    assert any(it["name"] == ".git/HEAD" for it in json.loads(out)["report"]["items"])
    assert verify(capsys, keys, model)[0] == 0  # the signature says: nothing is ignored by default
    (model / ".git" / "HEAD").write_text("ref: refs/heads/evil")
    code, out, _ = verify(capsys, keys, model)
    assert code == 1 and "changed: file .git/HEAD" in out
    # The API keyword.
    sig = sentry.sign_model(model, key=keys[0], signature=model.parent / "api.sig", default_ignores=False)
    (model / ".git" / "HEAD").write_text("again")
    with pytest.raises(VerificationError, match="changed"):
        sentry.verify_model(model, public_key=keys[1], signature=sig)


def test_dataset_signatures_record_no_default_ignores_and_old_ones_are_shown(keys, tmp_path):
    from sentry.manifest.dataset import DatasetClaim

    d = tmp_path / "d"
    d.mkdir()
    (d / "a.png").write_bytes(b"a")
    sig = sentry.sign_dataset(d, key=keys[0])
    predicate = _statement(sig)["predicate"]
    assert predicate["artifact"]["default_ignores"] == []
    del predicate["artifact"]["default_ignores"]  # as signed before the field existed
    assert DatasetClaim.from_predicate(predicate).default_ignores == DEFAULT_IGNORES


def test_signatures_without_the_field_keep_top_level_defaults():
    from sentry.hashing.params import HashParams
    from sentry.manifest.manifest import Manifest

    predicate = Manifest(HashParams(), [], "model", "directory").to_predicate()
    assert predicate["artifact"]["default_ignores"] == list(DEFAULT_IGNORES)
    del predicate["artifact"]["default_ignores"]
    assert Manifest.from_predicate(predicate).default_ignores == DEFAULT_IGNORES
    assert "__pycache__" not in DEFAULT_IGNORES
    for bad in (["a/b"], [".."], "x", [1]):
        predicate["artifact"]["default_ignores"] = bad
        with pytest.raises(VerificationError, match="default_ignores"):
            Manifest.from_predicate(predicate)


def test_pattern_rules():
    def left_out(patterns, entries):
        rules = IgnoreRules(patterns, ())
        return [rel for rel, is_dir in entries if rules(rel, is_dir)]

    entries = [("runs", True), ("runs", False), ("sub/runs", True), ("a.log", False), ("x/y/b.log", False),
               ("notes.txt", False), ("sub/notes.txt", False), ("logs/a.txt", False), ("logs/d/a.txt", False)]
    assert left_out(["runs/"], entries) == ["runs"]  # the top-level directory only
    assert left_out(["runs"], entries) == ["runs", "runs", "sub/runs"]  # any component
    assert left_out(["*.log"], entries) == ["a.log", "x/y/b.log"]
    assert left_out(["/notes.txt"], entries) == ["notes.txt"]
    assert left_out(["logs/*.txt"], entries) == ["logs/a.txt"]  # '*' does not cross '/'
    assert left_out(["/"], entries) == []
    defaults = IgnoreRules((), DEFAULT_IGNORES)
    assert defaults(".git", True) and not defaults("sub/.git", True) and not defaults("__pycache__", True)
    assert defaults.found == [".git/"]


def test_ignore_with_trailing_slash_is_top_level_only(capsys, keys, model):
    (model / "runs").mkdir()
    (model / "runs" / "a.txt").write_text("log")
    sign(capsys, keys, model, "--ignore", "runs/")
    (model / "runs" / "b.txt").write_text("more")  # ignored: top-level runs/
    assert verify(capsys, keys, model)[0] == 0
    (model / "sub" / "runs").mkdir(parents=True)
    (model / "sub" / "runs" / "evil.py").write_text("import os")
    code, out, _ = verify(capsys, keys, model)
    assert code == 1 and "extra: file sub/runs/evil.py" in out


def _statement(sig: Path) -> dict:
    return json.loads(base64.b64decode(json.loads(sig.read_text())["dsseEnvelope"]["payload"]))


def test_oms_default_ignores_match_model_signing(capsys, keys, model):
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref")
    (model / "sub" / ".github").mkdir(parents=True)
    (model / "sub" / ".github" / "ci.yml").write_text("on: push")
    sig = sentry.sign_model(model, key=keys[0], format="oms", signature=model.parent / "m.sig")
    statement = _statement(sig)
    names = [r["name"] for r in statement["predicate"]["resources"]]
    assert "sub/.github/ci.yml" in names and ".git/HEAD" not in names
    assert _statement(sig)["predicate"]["serialization"]["ignore_paths"][0] == ".git"
    report = sentry.verify_model(model, public_key=keys[1], signature=sig)
    assert report.ignored == [".git/"]
    # Signed ignore_paths apply whatever the verifier says, as in model_signing.
    assert sentry.verify_model(model, public_key=keys[1], signature=sig, default_ignores=False).ok
    # model_signing's --no-ignore-git-paths: git paths hashed, not recorded as ignored.
    sig = sentry.sign_model(model, key=keys[0], format="oms", signature=model.parent / "m2.sig", default_ignores=False)
    statement = _statement(sig)
    assert ".git/HEAD" in [r["name"] for r in statement["predicate"]["resources"]]
    assert ".git" not in statement["predicate"]["serialization"].get("ignore_paths", [])
    with pytest.raises(VerificationError, match="missing"):  # a verifier that ignores git paths misses it
        sentry.verify_model(model, public_key=keys[1], signature=sig)
    assert sentry.verify_model(model, public_key=keys[1], signature=sig, default_ignores=False).ok


def test_sign_samples_has_no_default_ignores(capsys, keys, tmp_path):
    d = tmp_path / "src"
    (d / ".git").mkdir(parents=True)
    (d / ".git" / "x.png").write_bytes(b"x")
    (d / "a.png").write_bytes(b"a")
    out = tmp_path / "p.jsonl"
    code, _, err = run(capsys, "sign-samples", d, "--key", keys[0], "-o", out, "-q")
    assert code == 0, err
    assert '".git/x.png"' in out.read_text()  # a sample like any other, as for the dataset


# -- 4. files whose reads do not match their size ---------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
@pytest.mark.parametrize("args", [("hash",), ("sign", "--key", "KEY", "--signature", "SIG"),
                                  ("sign", "--key", "KEY", "--signature", "SIG", "--format", "oms")])
def test_proc_files_are_refused(capsys, keys, tmp_path, args):
    args = [keys[0] if a == "KEY" else tmp_path / "p.sig" if a == "SIG" else a for a in args]
    code, _, err = run(capsys, args[0], "/proc/self/status", *args[1:], "-q")
    assert code == 2 and "yields more data than the 0 bytes its size says" in err
    assert not (tmp_path / "p.sig").exists()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_proc_files_are_refused_on_every_cpu_read_path(monkeypatch):
    from sentry.hashing import cpu
    from sentry.hashing.params import HashParams

    with pytest.raises(SentryError, match="yields more data"):
        cpu.digest_ranges([cpu.FileRange("/proc/self/status")], HashParams())  # C whole-file path
    monkeypatch.setattr(cpu, "_cmerkle", None)
    with pytest.raises(SentryError, match="yields more data"):
        cpu.digest_ranges([cpu.FileRange("/proc/self/status")], HashParams())  # FileSource path
    from sentry.io.posix import FileSource

    with FileSource("/proc/self/status") as src:  # what every reader (block pipeline, kvikio, OMS) ends with
        with pytest.raises(SentryError, match="yields more data"):
            src.check_unchanged()


# -- 7. any depth --------------------------------------------------------------------------------------
@pytest.fixture
def deep(tmp_path):
    made = []

    def make(depth):
        base = tmp_path / f"deep{depth}"
        base.mkdir()
        make_deep(base, depth)
        made.append((base, depth))
        return base

    yield make
    for base, depth in made:
        remove_deep(base, depth)


def test_1200_levels_deep_sign_and_verify(capsys, keys, deep, tmp_path):
    m = deep(1200)  # a path of about 2.4k characters
    code, out, err = run(capsys, "hash", m, "-q")
    assert code == 0, err
    for sign_extra, verify_extra in (((), ()), (("--dataset",), ("--dataset",)), (("--format", "oms"), ())):
        sig = tmp_path / f"deep{len(sign_extra)}.sig"
        sign(capsys, keys, m, "--signature", sig, *sign_extra)
        code, out, err = verify(capsys, keys, m, "--signature", sig, *verify_extra)
        assert code == 0 and "OK: verified 1 items" in out, err


def test_paths_longer_than_path_max_fail_in_one_sentence(capsys, keys, deep, tmp_path):
    m = deep(2100)  # 4.2k characters: more than PATH_MAX
    for args in (("hash", m), ("sign", m, "--key", keys[0], "--dataset", "--signature", tmp_path / "x.sig"),
                 ("sign", m, "--key", keys[0], "--format", "oms", "--signature", tmp_path / "x.sig")):
        code, _, err = run(capsys, *args, "-q")
        assert code == 2 and "longer than this system accepts" in err and len(err) < 500
        assert err.count("\n") == 1


# -- 11. Hugging Face cache snapshots -------------------------------------------------------------------
def _hf_repo(root: Path, name="models--org--tiny", files=None) -> Path:
    """A cache repository as huggingface_hub lays it out: files in blobs/, the snapshot's names
    as relative symbolic links to them."""
    repo = root / name
    snap = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for rel, data in (files or {"config.json": b'{"a": 1}', "sub/model.bin": b"\x00" * 9000}).items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snap


def test_hf_snapshot_signs_and_verifies_with_logical_names(capsys, keys, tmp_path):
    snap = _hf_repo(tmp_path)
    sig = tmp_path / "snap.sig"
    sign(capsys, keys, snap, "--signature", sig)  # no --allow-symlinks needed
    code, out, _ = run(capsys, "hash", snap, "--json")
    assert sorted(it["name"] for it in json.loads(out)["report"]["items"] if it["kind"] == "file") == [
        "config.json", "sub/model.bin"]
    assert verify(capsys, keys, snap, "--signature", sig)[0] == 0
    blob = (snap / "config.json").resolve()
    blob.write_bytes(b'{"a": 2}')
    code, out, _ = verify(capsys, keys, snap, "--signature", sig)
    assert code == 1 and "changed: file config.json" in out
    # A dataset repository and a single snapshot file work the same way.
    dsnap = _hf_repo(tmp_path, "datasets--org--d", {"train/0.png": b"png"})
    sentry.sign_dataset(dsnap, key=keys[0], signature=tmp_path / "d.sig")
    assert sentry.verify_dataset(dsnap, public_key=keys[1], signature=tmp_path / "d.sig").checked == 1
    sentry.sign_model(snap / "sub" / "model.bin", key=keys[0], signature=tmp_path / "f.sig")
    assert sentry.verify_model(snap / "sub" / "model.bin", public_key=keys[1], signature=tmp_path / "f.sig").ok


def test_hf_snapshot_links_elsewhere_are_refused(capsys, keys, tmp_path):
    snap = _hf_repo(tmp_path)
    other = _hf_repo(tmp_path, "models--org--other", {"secret.bin": b"other repo"})
    (snap / "stolen.bin").symlink_to(os.path.relpath((other / "secret.bin").resolve(), snap))
    code, _, err = run(capsys, "sign", snap, "--key", keys[0], "--signature", tmp_path / "s.sig", "-q")
    assert code == 2 and "stolen.bin is a symbolic link" in err
    (snap / "stolen.bin").unlink()
    (snap / "out.bin").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").write_bytes(b"x")
    code, _, err = run(capsys, "sign", snap, "--key", keys[0], "--signature", tmp_path / "s.sig", "-q",
                       "--allow-symlinks")
    assert code == 2 and "points outside" in err
    # Not a snapshot: the parent must be snapshots/ of a models--/datasets-- repository with blobs/.
    fake = tmp_path / "notacache" / "snapshots" / "r"
    fake.mkdir(parents=True)
    (tmp_path / "notacache" / "blobs").mkdir()
    (tmp_path / "notacache" / "blobs" / "b").write_bytes(b"b")
    (fake / "f").symlink_to("../../blobs/b")
    code, _, err = run(capsys, "hash", fake, "-q")
    assert code == 2 and "symbolic link" in err
    # A repository whose blobs/ is itself a link could point the snapshot anywhere.
    repo = tmp_path / "x" / "models--o--n"
    (repo / "snapshots" / "r").mkdir(parents=True)
    (repo / "blobs").symlink_to(tmp_path / "notacache" / "blobs")
    (repo / "snapshots" / "r" / "f").symlink_to("../../blobs/b")
    code, _, err = run(capsys, "hash", repo / "snapshots" / "r", "-q")
    assert code == 2 and "symbolic link" in err


def test_model_signing_bundle_of_a_snapshot_verifies(capsys, keys, tmp_path):
    pytest.importorskip("model_signing")
    from model_signing import hashing, signing

    snap = _hf_repo(tmp_path)
    sig = tmp_path / "ms.sig"
    config = hashing.Config().set_allow_symlinks(True)
    signing.Config().set_hashing_config(config).use_elliptic_key_signer(private_key=keys[0]).sign(snap, sig)
    code, out, err = verify(capsys, keys, snap, "--signature", sig)
    assert code == 0 and "OK: verified 2 items" in out, err
    (snap / "config.json").resolve().write_bytes(b"{}")
    code, out, _ = verify(capsys, keys, snap, "--signature", sig)
    assert code == 1 and "changed: file config.json" in out


def test_audit_finds_signatures_at_any_depth(capsys, keys, deep):
    m = deep(1200)
    leaf = m / ("d/" * 1200).rstrip("/")
    sentry.sign_model(leaf / "w.bin", key=keys[0])  # writes w.bin.sig beside it, 1,200 levels down
    code, out, err = run(capsys, "audit", m, "--public-key", keys[1], "-q")
    assert code == 0 and "1 of 1 bundles verified" in out, err
