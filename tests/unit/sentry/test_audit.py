"""`sentry audit`: every bundle under a directory, its signatures in one batch, then artifacts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import make_keys

import sentry
import sentry.crypto
from sentry.audit import audit
from sentry.cli import main


def _model(path: Path, content: bytes) -> Path:
    path.mkdir(parents=True)
    (path / "weights.bin").write_bytes(content)
    (path / "config.json").write_text("{}")
    return path


@pytest.fixture
def hub(tmp_path):
    """good/, org/nested/, tampered/ (changed after signing), other-key/ (signed by someone
    else) and garbage.sig (not a bundle)."""
    key, public = make_keys(tmp_path)
    other_key, _ = make_keys(tmp_path, "other")
    root = tmp_path / "hub"
    for name in ("good", "org/nested", "tampered"):
        sentry.sign_model(_model(root / name, name.encode() * 100), key=key)
    sentry.sign_model(_model(root / "other-key", b"x" * 10), key=other_key)
    (root / "tampered" / "weights.bin").write_bytes(b"changed")
    (root / "garbage.sig").write_text("not json")
    return root, public


def _by_name(entries) -> dict[str, object]:
    return {e.signature.name: e for e in entries}


def test_audit_checks_all_signatures_in_one_batch(hub, monkeypatch):
    root, public = hub
    calls = []
    real = sentry.crypto.batch_verify

    def counting(keys, digests, signatures, **options):
        calls.append(len(digests))
        return real(keys, digests, signatures, **options)

    monkeypatch.setattr(sentry.crypto, "batch_verify", counting)
    entries = _by_name(audit(root, public, device="cpu"))
    assert calls == [4]  # every readable bundle, one call; garbage.sig never got that far
    assert entries["good.sig"].ok and entries["nested.sig"].ok
    assert entries["nested.sig"].artifact == root / "org" / "nested"
    assert "changed" in entries["tampered.sig"].error
    assert "different key" in entries["other-key.sig"].error
    assert not entries["garbage.sig"].ok


def test_signatures_only_skips_the_artifacts(hub):
    root, public = hub
    entries = _by_name(audit(root, public, signatures_only=True, device="cpu"))
    assert entries["tampered.sig"].ok  # its signature is fine; its bytes are not looked at
    assert not entries["other-key.sig"].ok


def test_cli_audit(hub, capsys):
    root, public = hub
    assert main(["audit", str(root), "--public-key", str(public), "--device", "cpu", "-q"]) == 1
    out = capsys.readouterr().out
    assert "2 of 5 bundles verified" in out and "FAIL" in out
    assert main(["audit", str(root / "org"), "--public-key", str(public), "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and [b["ok"] for b in report["report"]["bundles"]] == [True]


def test_cli_audit_of_a_directory_without_bundles(tmp_path, capsys):
    _, public = make_keys(tmp_path)
    (tmp_path / "empty").mkdir()
    assert main(["audit", str(tmp_path / "empty"), "--public-key", str(public)]) == 2
    assert "no signature bundles" in capsys.readouterr().err
