"""Issue 10, items 2, 8 and 10: nothing unsigned passes a verify, an audit checks every kind of
bundle and one bad entry fails only itself, and the messages of common mistakes say what to do."""
from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
from support import make_deep, make_keys, remove_deep, save_tensors

import sentry
from sentry import SentryError, VerificationError
from sentry.audit import audit
from sentry.cli import main
from sentry.manifest.compare import Report

torch = pytest.importorskip("torch")
nn = torch.nn


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------- item 2: uncovered files


@pytest.fixture
def planted(tmp_path, keys):
    """A signature of a model in memory, and the checkpoint saved from it with code, a pickle and
    a config.json that loads the code added: what an attacker plants beside honest weights."""
    net = _net()
    sig = sentry.sign_model(net, key=keys[0], signature=tmp_path / "model.sig")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_tensors(ckpt / "model.safetensors", net.state_dict())
    (ckpt / "evil.py").write_text("import os\nos.system('echo pwned')\n")
    torch.save(net.state_dict(), ckpt / "pytorch_model.bin")
    (ckpt / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "evil.Model"}}))
    return net, ckpt, sig


PLANTED = ["file config.json", "file evil.py", "file pytorch_model.bin"]


def test_files_a_memory_signature_does_not_cover_fail_the_verify(planted, keys, capsys):
    _, ckpt, sig = planted
    args = ["verify", ckpt, "--signature", sig, "--public-key", keys[1], "-q"]
    code, out, err = _cli(capsys, *args)
    assert code == 1 and "not covered by the signature" in err and "\n" not in err.strip()
    assert out.splitlines() == [f"not covered by the signature: {f}" for f in PLANTED]  # each named
    code, out, _ = _cli(capsys, *args, "--json")
    report = json.loads(out)["report"]
    assert code == 1 and not report["ok"] and not report["uncovered_allowed"]
    assert [(u["kind"], u["label"]) for u in report["uncovered"]] == [("file", p) for p in PLANTED]
    with pytest.raises(VerificationError) as exc:
        sentry.verify_model(ckpt, public_key=keys[1], signature=sig)
    assert exc.value.report.uncovered == PLANTED


def test_allow_uncovered_accepts_them_and_still_lists_them(planted, keys, capsys):
    _, ckpt, sig = planted
    code, out, _ = _cli(capsys, "verify", ckpt, "--signature", sig, "--public-key", keys[1], "-q", "--allow-uncovered")
    assert code == 0
    assert out.splitlines() == [f"not covered by the signature (allowed): {f}" for f in PLANTED] + ["OK: verified 4 items"]
    report = sentry.verify_model(ckpt, public_key=keys[1], signature=sig, allow_uncovered=True)
    assert report.ok and report.uncovered == PLANTED and report.to_json()["uncovered_allowed"]


def test_a_checkpoint_of_the_signed_tensors_alone_is_covered(planted, keys, capsys):
    _, ckpt, sig = planted
    for name in ("evil.py", "pytorch_model.bin", "config.json"):
        (ckpt / name).unlink()
    code, out, _ = _cli(capsys, "verify", ckpt, "--signature", sig, "--public-key", keys[1], "-q")
    assert code == 0 and out == "OK: verified 4 items\n"
    # A second checkpoint: its tensors are unsigned, so it is extra, with or without --allow-uncovered.
    save_tensors(ckpt / "extra.safetensors", {"head.weight": torch.ones(2)})
    code, out, _ = _cli(capsys, "verify", ckpt, "--signature", sig, "--public-key", keys[1], "-q", "--allow-uncovered")
    assert code == 1 and "extra: tensor head.weight (in extra.safetensors)" in out
    # A file named .safetensors that holds no tensor covers nothing.
    (ckpt / "extra.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    code, out, _ = _cli(capsys, "verify", ckpt, "--signature", sig, "--public-key", keys[1], "-q")
    assert code == 1 and out.splitlines() == ["not covered by the signature: file extra.safetensors"]


def test_a_directory_signature_against_a_model_in_memory(tmp_path, keys):
    """The other direction: tensors only in memory, which no file signed, fail; so does a model
    whose signed directory held its weights only as a pickle (no tensor was signed)."""
    net = _net()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_tensors(ckpt / "model.safetensors", net.state_dict())
    (ckpt / "config.json").write_text("{}")
    sig = sentry.sign_model(ckpt, key=keys[0])
    assert sentry.verify_model(net, public_key=keys[1], signature=sig).ok
    net.register_buffer("planted", torch.ones(3))
    with pytest.raises(VerificationError) as exc:
        sentry.verify_model(net, public_key=keys[1], signature=sig)
    assert exc.value.report.extra == ["tensor planted"]
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(_net().state_dict(), pickled / "pytorch_model.bin")
    sig = sentry.sign_model(pickled, key=keys[0])
    with pytest.raises(VerificationError) as exc:
        sentry.verify_model(_net(), public_key=keys[1], signature=sig)
    assert len(exc.value.report.extra) == 4 and not exc.value.report.ok


def test_dataset_and_oms_paths_refuse_an_added_file(tmp_path, keys, capsys):
    data = tmp_path / "train"
    (data / "cat").mkdir(parents=True)
    (data / "cat" / "1.png").write_bytes(b"one")
    sentry.sign_dataset(data, key=keys[0])
    (data / "cat" / "evil.png").write_bytes(b"planted")
    code, out, _ = _cli(capsys, "verify", data, "--dataset", "--public-key", keys[1], "-q")
    assert code == 1 and "extra: sample cat/evil.png" in out
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights")
    sentry.sign_model(model, key=keys[0], format="oms")
    (model / "evil.py").write_text("planted")
    code, out, _ = _cli(capsys, "verify", model, "--public-key", keys[1], "-q")
    assert code == 1 and "extra: file evil.py" in out


def test_report_lines_list_failures_first_and_everything_else_too():
    report = Report(checked=2, allowed_absent=["lm_head.bias"], tied=[("head.weight", "embed.weight")],
                    uncovered=["file config.json"])
    assert not report.ok and report.summary() == "1 files not covered by the signature"
    assert report.lines() == ["not covered by the signature: file config.json", "absent (allowed): lm_head.bias",
                              "tied: head.weight shares memory with embed.weight"]
    report.uncovered_allowed = True
    assert report.ok and report.lines()[0] == "not covered by the signature (allowed): file config.json"


# ---------------------------------------------------------------------------- item 8: audit


@pytest.fixture
def hub(tmp_path, keys):
    """good-model/, good-data/ (a dataset with its sidecar), good-oms/ (model_signing format),
    tampered/, garbage.sig, hostile/ (a .safetensors header that once escaped as a TypeError) and
    a garbage bundle 1,200 directories deep."""
    root = tmp_path / "hub"
    for name in ("good-model", "good-oms", "tampered", "hostile"):
        (root / name).mkdir(parents=True)
        (root / name / "weights.bin").write_bytes(name.encode() * 100)
    sentry.sign_model(root / "good-model", key=keys[0])
    sentry.sign_model(root / "good-oms", key=keys[0], format="oms")
    sentry.sign_model(root / "tampered", key=keys[0])
    (root / "tampered" / "weights.bin").write_bytes(b"changed")
    (root / "good-data" / "cat").mkdir(parents=True)
    (root / "good-data" / "cat" / "1.png").write_bytes(b"a cat")
    sentry.sign_dataset(root / "good-data", key=keys[0])
    sentry.sign_model(root / "hostile", key=keys[0])
    header = json.dumps({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}).encode()
    (root / "hostile" / "w.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    (root / "garbage.sig").write_text("not json")
    make_deep(root, 1200, "deep.sig", b"not json either")
    yield root
    remove_deep(root, 1200)


def test_audit_checks_every_kind_and_fails_only_the_bad_entries(hub, keys, capsys):
    code, out, _ = _cli(capsys, "audit", hub, "--public-key", keys[1], "--device", "cpu", "-q", "--json")
    assert code == 1
    verdicts = {Path(b["signature"]).name: b for b in json.loads(out)["report"]["bundles"]}
    assert sorted(verdicts) == ["deep.sig", "garbage.sig", "good-data.sig", "good-model.sig", "good-oms.sig",
                                "hostile.sig", "tampered.sig"]
    for good in ("good-model.sig", "good-data.sig", "good-oms.sig"):
        assert verdicts[good]["ok"], verdicts[good]
    assert verdicts["good-data.sig"]["summary"] == "verified 1 items"
    assert "changed" in verdicts["tampered.sig"]["error"]
    assert not verdicts["garbage.sig"]["ok"] and not verdicts["deep.sig"]["ok"]
    assert not verdicts["hostile.sig"]["ok"]
    code, out, _ = _cli(capsys, "audit", hub, "--public-key", keys[1], "--device", "cpu", "-q")
    assert code == 1 and "3 of 7 bundles verified" in out and "Traceback" not in out


def test_audit_signatures_only_counts_each_kind(hub, keys):
    entries = {e.signature.name: e for e in audit(hub, keys[1], signatures_only=True, device="cpu")}
    assert entries["good-data.sig"].summary == "signature valid (1 items signed)"
    assert entries["good-oms.sig"].summary == "signature valid (1 items signed)"
    assert entries["tampered.sig"].ok  # its bytes are not looked at


def test_an_unreadable_directory_fails_its_own_entry(hub, keys, monkeypatch):
    """Run as root, permissions do not stop a read: the refusal is simulated."""
    real_scandir = os.scandir
    locked = str(hub / "good-model")

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    entries = {e.signature.name: e for e in audit(hub, keys[1], device="cpu")}
    assert "cannot read directory" in entries["good-model"].error
    assert entries["good-oms.sig"].ok and entries["good-data.sig"].ok


def test_an_unexpected_error_fails_its_entry_not_the_audit(hub, keys, monkeypatch):
    import sentry.audit

    real = sentry.audit.check_signed

    def check(artifact, *args, **kw):
        if artifact.name == "good-model":
            raise RecursionError("maximum recursion depth exceeded")
        return real(artifact, *args, **kw)

    monkeypatch.setattr(sentry.audit, "check_signed", check)
    entries = {e.signature.name: e for e in audit(hub, keys[1], device="cpu")}
    assert entries["good-model.sig"].error == "cannot be checked (RecursionError): maximum recursion depth exceeded"
    assert entries["good-oms.sig"].ok


# ---------------------------------------------------------------------------- item 10: messages


def test_a_dataset_signature_without_dataset_says_add_it(tmp_path, keys, capsys):
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    (data / "1.png").write_bytes(b"x")
    sentry.sign_dataset(data, key=keys[0])
    code, _, err = _cli(capsys, "verify", data, "--public-key", keys[1], "-q")
    assert code == 2 and "signs a dataset, not a model; add --dataset" in err
    assert _cli(capsys, "verify", data, "--dataset", "--public-key", keys[1], "-q")[0] == 0


def test_dataset_on_a_model_signature_says_drop_it(tmp_path, keys, capsys):
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights")
    sentry.sign_model(model, key=keys[0])
    code, _, err = _cli(capsys, "verify", model, "--dataset", "--public-key", keys[1], "-q")
    assert code == 2 and "signs a model, not a dataset; drop --dataset" in err
    sentry.sign_model(model, key=keys[0], format="oms")
    code, _, err = _cli(capsys, "verify", model, "--dataset", "--public-key", keys[1], "-q")
    assert code == 2 and "drop --dataset" in err
    code, _, err = _cli(capsys, "verify", model, "--dataset", "--allow-uncovered", "--public-key", keys[1], "-q")
    assert code == 2 and "drop --dataset" in err


@pytest.mark.parametrize("dataset", [[], ["--dataset"]])
def test_a_missing_artifact_is_named_before_its_signature(tmp_path, keys, capsys, dataset):
    code, _, err = _cli(capsys, "verify", tmp_path / "nope", *dataset, "--public-key", keys[1], "-q")
    assert code == 2 and err == f"sentry: {tmp_path / 'nope'} does not exist\n"


def test_an_encrypted_key_without_password_names_the_ways_to_give_it(tmp_path, capsys, monkeypatch):
    from sentry.signing import write_keypair

    write_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem", b"secret")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"weights")
    monkeypatch.delenv("SENTRY_KEY_PASSWORD", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: nobody to ask
    code, _, err = _cli(capsys, "sign", tmp_path / "m", "--key", tmp_path / "k.pem", "-q")
    assert code == 2 and "encrypted" in err and "--password-file" in err and "SENTRY_KEY_PASSWORD" in err
    assert not (tmp_path / "m.sig").exists()


def test_a_sample_not_in_the_dataset_is_an_input_error(tmp_path, keys, capsys):
    data = tmp_path / "train"
    data.mkdir()
    (data / "1.png").write_bytes(b"x")
    sentry.sign_dataset(data, key=keys[0])
    code, out, err = _cli(capsys, "verify", data, "--dataset", "--sample", "2.png", "--public-key", keys[1], "-q")
    assert code == 2 and out == "" and err == "sentry: sample '2.png' is neither in the signed dataset nor in the directory\n"
    with pytest.raises(SentryError) as exc:
        sentry.verify_dataset(data, public_key=keys[1], samples=["2.png"])
    assert not isinstance(exc.value, VerificationError)


def test_a_provenance_failure_names_the_source_once(tmp_path, keys, capsys):
    lab = tmp_path / "lab-a"
    (lab / "cat").mkdir(parents=True)
    (lab / "cat" / "1.png").write_bytes(b"a cat")
    lab_key, lab_public = make_keys(tmp_path, "lab-a")
    provenance = sentry.sign_samples(lab, key=lab_key)
    (lab / "cat" / "1.png").write_bytes(b"a swapped cat")
    sentry.sign_dataset(lab, key=keys[0])  # the owner signs the swap; only the source refuses it
    code, out, _ = _cli(capsys, "verify", lab, "--dataset", "--public-key", keys[1], "-q",
                        "--source", provenance, lab_public)
    assert code == 1
    assert out == "changed: sample cat/1.png: its content does not match its provenance signature (from source lab-a)\n"
