"""Issue 10, item 5: no file is ever clobbered by sign, sign-samples or keygen.

Each attack of the issue is reproduced and must be refused (exit 2, one sentence naming the path
and why) with every file left byte for byte as it was; re-signing over an earlier output still
works without --force, and --force replaces an unrelated file but never a key or the artifact.
The CLI runs in-process (``main``) to keep these tests fast.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from support import make_pki

import sentry
from sentry.cli import main
from sentry.errors import SentryError
from sentry.signing import load_private_key, write_keypair


@pytest.fixture
def work(tmp_path, monkeypatch):
    """tmp_path as the working directory, holding a key pair k.pem / k.pub.pem, a model m/,
    a one-file model single.bin and a dataset d/ (cat/1.png, cat/3.png)."""
    monkeypatch.chdir(tmp_path)
    write_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "weights.bin").write_bytes(b"weights" * 100)
    (tmp_path / "m" / "config.json").write_text('{"hidden": 8}')
    (tmp_path / "single.bin").write_bytes(b"single" * 100)
    (tmp_path / "d" / "cat").mkdir(parents=True)
    (tmp_path / "d" / "cat" / "1.png").write_bytes(b"png one")
    (tmp_path / "d" / "cat" / "3.png").write_bytes(b"png three")
    return tmp_path


def snapshot(root: Path) -> dict:
    """Every file's bytes (and every symbolic link's target) under ``root``."""
    return {p.relative_to(root).as_posix(): (os.readlink(p) if p.is_symlink() else p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_symlink() or p.is_file()}


@pytest.fixture
def sentry_cli(capsys):
    def run(*args) -> tuple[int, str]:
        code = main([str(a) for a in args])
        err = capsys.readouterr().err
        return code, err

    return run


def refused(sentry_cli, root, *args, gist: str) -> str:
    """Run the command; it must exit 2 with one ``sentry:`` line holding ``gist``, and change no file."""
    before = snapshot(root)
    code, err = sentry_cli(*args)
    assert code == 2, err
    assert err.startswith("sentry: refusing to write") and err.count("\n") == 1 and gist in err, err
    assert snapshot(root) == before
    return err


def signs(sentry_cli, *args) -> None:
    code, err = sentry_cli(*args, "-q")
    assert code == 0, err


# ---------------------------------------------------------------------------- the key files


@pytest.mark.parametrize("force", [[], ["--force"]])
@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_the_signature_never_replaces_the_private_key(work, sentry_cli, how, force):
    sig = {"same path": "k.pem", "symlink": "link.sig", "hard link": "hard.sig"}[how]
    if how == "symlink":
        os.symlink("k.pem", work / sig)
    elif how == "hard link":
        os.link(work / "k.pem", work / sig)
    err = refused(sentry_cli, work, "sign", "m", "--key", "k.pem", "--signature", sig, *force,
                  gist="it is the signing key")
    assert f"to {sig}:" in err


def test_certificate_chain_and_password_files_are_never_replaced(work, sentry_cli):
    pki = make_pki(work)
    base = ["sign", "m", "--key", pki["key"], "--certificate", pki["leaf"], "--certificate-chain",
            pki["intermediate"], "--force"]
    refused(sentry_cli, work, *base, "--signature", pki["leaf"], gist="it is the signing certificate")
    refused(sentry_cli, work, *base, "--signature", pki["intermediate"], gist="it is a certificate chain file")
    write_keypair(work / "enc.pem", work / "enc.pub.pem", b"secret")
    (work / "pw").write_text("secret\n")
    refused(sentry_cli, work, "sign", "m", "--key", "enc.pem", "--password-file", "pw", "--signature", "pw",
            "--force", gist="it is the password file")


# ---------------------------------------------------------------------------- the artifact


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_the_signature_never_replaces_a_model_file(work, sentry_cli, force):
    refused(sentry_cli, work, "sign", "m", "--key", "k.pem", "--signature", "m/weights.bin", *force,
            gist="it is a file inside the artifact being signed")
    os.symlink("m", work / "alias")  # the same file through a linked directory
    refused(sentry_cli, work, "sign", "m", "--key", "k.pem", "--signature", "alias/weights.bin", *force,
            gist="inside the artifact")


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_signing_a_file_or_directory_over_itself_is_refused(work, sentry_cli, force):
    refused(sentry_cli, work, "sign", "single.bin", "--key", "k.pem", "--signature", "single.bin", *force,
            gist="it is the artifact being signed")
    refused(sentry_cli, work, "sign", "m", "--key", "k.pem", "--signature", "m", *force,
            gist="it is the artifact being signed")
    refused(sentry_cli, work, "sign", "m", "--key", "k.pem", "--signature", ".", *force, gist="it is a directory")


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_the_sample_list_never_replaces_a_sample(work, sentry_cli, force):
    refused(sentry_cli, work, "sign", "d", "--dataset", "--key", "k.pem", "--sidecar", "d/cat/1.png", *force,
            gist="it is a file inside the artifact being signed, not a Sentry sample list")


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_the_provenance_file_never_replaces_a_sample(work, sentry_cli, force):
    refused(sentry_cli, work, "sign-samples", "d", "--key", "k.pem", "-o", "d/cat/3.png", *force,
            gist="it is a file inside the artifact being signed, not a Sentry provenance file")


def test_an_empty_sample_is_not_taken_for_an_empty_sample_list(work, sentry_cli):
    (work / "d" / "empty.txt").write_bytes(b"")
    refused(sentry_cli, work, "sign", "d", "--dataset", "--key", "k.pem", "--sidecar", "d/empty.txt",
            gist="inside the artifact")


# ---------------------------------------------------------------------------- outputs among themselves


@pytest.mark.parametrize("earlier", [False, True])
def test_the_sample_list_never_replaces_its_own_signature(work, sentry_cli, earlier):
    if earlier:  # d.sig is a bundle that the signature itself may replace: still not the sidecar's
        signs(sentry_cli, "sign", "d", "--dataset", "--key", "k.pem")
    refused(sentry_cli, work, "sign", "d", "--dataset", "--key", "k.pem", "--sidecar", "d.sig", "--force",
            gist="the signature goes there")
    os.symlink("d.sig", work / "side.jsonl")
    refused(sentry_cli, work, "sign", "d", "--dataset", "--key", "k.pem", "--sidecar", "side.jsonl", "--force",
            gist="the signature goes there")


def test_an_earlier_output_of_another_kind_needs_force(work, sentry_cli):
    signs(sentry_cli, "sign", "d", "--dataset", "--key", "k.pem")
    refused(sentry_cli, work, "sign", "m", "--key", "k.pem", "--signature", "d.samples.jsonl",
            gist="it exists and is not a Sentry or model_signing signature bundle; pass --force")
    refused(sentry_cli, work, "sign-samples", "d", "--key", "k.pem", "-o", "d.sig",
            gist="is not a Sentry provenance file; pass --force")


# ---------------------------------------------------------------------------- --force and re-signing


def test_an_unrelated_file_is_replaced_only_with_force(work, sentry_cli):
    (work / "notes.txt").write_text("keep me")
    refused(sentry_cli, work, "sign", "m", "--key", "k.pem", "--signature", "notes.txt",
            gist="refusing to write the signature to notes.txt: it exists and is not a Sentry or model_signing "
                 "signature bundle; pass --force to replace it")
    refused(sentry_cli, work, "sign-samples", "d", "--key", "k.pem", "-o", "notes.txt", gist="pass --force")
    signs(sentry_cli, "sign", "m", "--key", "k.pem", "--signature", "notes.txt", "--force")
    assert sentry.verify_model("m", public_key="k.pub.pem", signature="notes.txt").ok


def test_a_symlink_at_the_output_is_judged_by_its_target_and_replaced_not_followed(work, sentry_cli):
    (work / "notes.txt").write_text("keep me")
    os.symlink("notes.txt", work / "m.sig")
    os.symlink("nowhere", work / "dangling.sig")
    refused(sentry_cli, work, "sign", "m", "--key", "k.pem", gist="pass --force")
    refused(sentry_cli, work, "sign", "m", "--key", "k.pem", "--signature", "dangling.sig", gist="pass --force")
    os.symlink("m/weights.bin", work / "w.sig")
    refused(sentry_cli, work, "sign", "m", "--key", "k.pem", "--signature", "w.sig", "--force",
            gist="inside the artifact")
    signs(sentry_cli, "sign", "m", "--key", "k.pem", "--force")
    assert not (work / "m.sig").is_symlink() and (work / "notes.txt").read_text() == "keep me"


def test_anything_but_a_regular_file_is_refused_even_with_force(work, sentry_cli):
    os.mkfifo(work / "fifo")
    refused(sentry_cli, work, "sign", "m", "--key", "k.pem", "--signature", "fifo", "--force",
            gist="it is not a regular file")


def test_re_signing_over_earlier_outputs_needs_no_force(work, sentry_cli):
    for _ in range(2):
        signs(sentry_cli, "sign", "m", "--key", "k.pem")
        signs(sentry_cli, "sign", "m", "--key", "k.pem", "--signature", "m/model.sig")  # inside: left out
        signs(sentry_cli, "sign", "m", "--key", "k.pem", "--format", "oms", "--signature", "oms.sig")
        signs(sentry_cli, "sign", "d", "--dataset", "--key", "k.pem")
        signs(sentry_cli, "sign", "d", "--dataset", "--key", "k.pem", "--signature", "d/in.sig",
              "--sidecar", "d/in.samples.jsonl")
        signs(sentry_cli, "sign-samples", "d", "--key", "k.pem")
    assert sentry.verify_model("m", public_key="k.pub.pem", signature="m/model.sig").ok
    assert sentry.verify_dataset("d", public_key="k.pub.pem", signature="d/in.sig",
                                 sidecar="d/in.samples.jsonl").ok
    (work / "e").mkdir()  # an empty dataset's sample list is an empty file
    signs(sentry_cli, "sign", "e", "--dataset", "--key", "k.pem")
    signs(sentry_cli, "sign", "e", "--dataset", "--key", "k.pem")


# ---------------------------------------------------------------------------- the API


def test_the_api_applies_the_same_rules_before_hashing(work, monkeypatch):
    import sentry.api
    import sentry.manifest.dataset

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed before refusing")

    monkeypatch.setattr(sentry.api, "hash_artifact", no_hashing)
    monkeypatch.setattr(sentry.manifest.dataset, "iter_samples", no_hashing)
    before = snapshot(work)
    attacks = [
        (sentry.sign_model, ("m",), {"key": "k.pem", "signature": "k.pem"}, "it is the signing key"),
        (sentry.sign_model, ("m",), {"key": "k.pem", "signature": "m/weights.bin", "force": True}, "inside"),
        (sentry.sign_model, ("single.bin",), {"key": "k.pem", "signature": "single.bin", "force": True},
         "it is the artifact"),
        (sentry.sign_model, ({"w": torch.zeros(2)},), {"key": "k.pem", "signature": "k.pem"},
         "it is the signing key"),
        (sentry.sign_model, ("m",), {"key": load_private_key("k.pem"), "signature": "k.pub.pem",
                                     "key_files": ["k.pub.pem"], "force": True}, "a key file given to sign with"),
        (sentry.sign_model, ("m",), {"key": "k.pem", "signature": "k.pub.pem"}, "pass force=True to replace it"),
        (sentry.sign_model, ("m",), {"key": "k.pem", "signature": "no/such/dir/m.sig"},
         "its directory does not exist"),
        (sentry.sign_dataset, ("d",), {"key": "k.pem", "sidecar": "d.sig"}, "the signature goes there"),
        (sentry.sign_dataset, ("d",), {"key": "k.pem", "sidecar": "d/cat/1.png", "force": True}, "inside"),
        (sentry.sign_samples, ("d",), {"key": "k.pem", "output": "d/cat/3.png", "force": True}, "inside"),
        (sentry.sign_samples, ("d",), {"key": "k.pem", "output": "k.pem", "force": True}, "the signing key"),
    ]
    for sign, args, kwargs, gist in attacks:
        with pytest.raises(SentryError, match="refusing to write") as exc:
            sign(*args, **kwargs)
        assert gist in str(exc.value), (kwargs, str(exc.value))
    assert snapshot(work) == before


def test_the_api_replaces_an_unrelated_file_with_force(work):
    (work / "notes.txt").write_text("keep me")
    sentry.sign_samples("d", key="k.pem", output="notes.txt", force=True)
    assert sentry.verify_dataset("d", public_key="k.pub.pem", signature=sentry.sign_dataset("d", key="k.pem"),
                                 provenance={"notes.txt": "k.pub.pem"}).ok


# ---------------------------------------------------------------------------- keygen


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_keygen_never_writes_both_keys_to_one_file(work, sentry_cli, force):
    os.symlink("k.pem", work / "pub-link.pem")
    for public in ("k.pem", "pub-link.pem"):
        before = snapshot(work)
        code, err = sentry_cli("keygen", "k.pem", "--public-key", public, *force)
        assert code == 2 and "the private and public key paths must differ" in err
        assert snapshot(work) == before


def test_keygen_replaces_an_existing_file_only_with_force(work, sentry_cli):
    before = snapshot(work)
    code, err = sentry_cli("keygen", "new.pem", "--public-key", "m/weights.bin")
    assert code == 2 and "m/weights.bin already exists; refusing to overwrite it" in err
    assert snapshot(work) == before


def test_a_file_reached_through_a_linked_directory_of_the_artifact_is_inside_it(work, sentry_cli):
    (work / "elsewhere").mkdir()
    (work / "elsewhere" / "data.bin").write_bytes(b"data")
    os.symlink("../elsewhere", work / "m" / "linked")  # hashed as m/linked/data.bin with --allow-symlinks
    refused(sentry_cli, work, "sign", "m", "--key", "k.pem", "--allow-symlinks", "--signature",
            "m/linked/data.bin", "--force", gist="inside the artifact")


@pytest.mark.parametrize("target", ["directory", "fifo"])
def test_keygen_force_never_loses_the_old_key_to_a_public_key_it_cannot_write(work, sentry_cli, target):
    # The private key used to be renamed into place first, then removed when the public key's
    # rename failed: `keygen k.pem --public-key m --force` left no key at all.
    if target == "fifo":
        os.mkfifo(work / "pub")
    public = {"directory": "m", "fifo": "pub"}[target]
    refused(sentry_cli, work, "keygen", "k.pem", "--public-key", public, "--force",
            gist=f"refusing to write the public key to {public}: it is")


# ---------------------------------------------------------------------------- a model's item list

def test_the_item_list_of_a_large_manifest_replaces_only_an_earlier_one(work, sentry_cli, monkeypatch):
    """A manifest too large for its bundle lists its items in m.manifest.jsonl (docs/spec.md §2.2):
    that output follows the same rules as the others."""
    from sentry.manifest import manifest as manifests

    monkeypatch.setattr(manifests, "MAX_INLINE_BYTES", 100)
    items = work / "m.manifest.jsonl"
    items.write_text("notes of mine\n")
    refused(sentry_cli, work, "sign", "m", "--key", "k.pem", "-q", gist="not a Sentry item list; pass --force")
    assert not (work / "m.sig").exists()
    signs(sentry_cli, "sign", "m", "--key", "k.pem", "--force")
    signs(sentry_cli, "sign", "m", "--key", "k.pem")  # re-signing replaces the earlier item list
    assert sentry.verify_model(work / "m", work / "k.pub.pem").ok
    (work / "s.manifest.jsonl").write_bytes((work / "k.pem").read_bytes())  # s.sig's item list is the key
    refused(sentry_cli, work, "sign", "m", "--key", "s.manifest.jsonl", "--signature", "s.sig", "-q", "--force",
            gist="it is the signing key")
