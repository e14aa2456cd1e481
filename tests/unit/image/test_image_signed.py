"""Signed disk images (docs/spec.md §10.5): `sentry image build` signs with a key, a certificate or
Sigstore (the options of `sentry sign`), and `sentry image verify --public-key ...` checks the
bundle (cryptography, through the verifiers), the image's SHA-256 (hashlib) and its tree with the
signed parameters (veritysetup agrees with them), and optionally a model signature's root."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess

import pytest
import torch
from support import flip_bit, make_keys, make_pki, save_tensors

import sentry
from sentry.cli import main
from sentry.errors import BadSignature, ContentMismatch, InvalidBundle, SentryError, UnsupportedFormat
from sentry.image import IMAGE_PREDICATE_TYPE, build_image, verify_signed_image
from sentry.signing import KeySigner, load_private_key, make_statement, write_bundle

pytestmark = pytest.mark.skipif(not (shutil.which("mkfs.erofs") and shutil.which("veritysetup")),
                                reason="needs erofs-utils and cryptsetup-bin")
MODEL_ID = "org/tiny@abc123"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("signed")
    model = d / "model"
    model.mkdir()
    save_tensors(model / "model.safetensors", {"w": torch.randn(200, 16, generator=torch.Generator().manual_seed(5))})
    (model / "config.json").write_text('{"model_type": "tiny"}\n')
    priv, pub = make_keys(d)
    signer = KeySigner(load_private_key(priv))
    images = {lay: build_image(model, d / f"{lay}.img", layout=lay, model_id=MODEL_ID if lay == "modelwrap" else None,
                               signer=signer)
              for lay in ("plain", "modelwrap", "privatemode")}
    return {"dir": d, "model": model, "priv": priv, "pub": pub, "signer": signer, "images": images}


def copy(work, tmp_path, layout="plain"):
    """A copy of a signed image and its bundle, to tamper with."""
    src = work["images"][layout].path
    shutil.copy(src, tmp_path / src.name)
    shutil.copy(src.with_name(src.name + ".sig"), tmp_path / (src.name + ".sig"))
    return tmp_path / src.name


@pytest.mark.parametrize("layout", ["plain", "modelwrap", "privatemode"])
def test_the_signed_parameters_alone_verify_every_layout(work, layout):
    r = work["images"][layout]
    out = verify_signed_image(r.path, work["pub"])  # no root, offset, salt or superblock flag given
    assert out["ok"] and out["root_hash"] == r.root_hash.hex() and out["layout"] == layout
    assert out["salt"] == r.layout.salt.hex() and out["hash_offset"] == r.hash_offset
    assert out["image_sha256"] == hashlib.sha256(r.path.read_bytes()).hexdigest()
    # the same parameters, given to veritysetup, accept the image
    args = ["veritysetup", "verify", f"--hash-offset={out['hash_offset']}"]
    if layout == "privatemode":
        args += ["--no-superblock", f"--salt={out['salt']}", f"--data-blocks={out['data_blocks']}"]
    assert subprocess.run(args + [str(r.path), str(r.path), out["root_hash"]], capture_output=True).returncode == 0


def test_cli_verifies_with_the_signature_and_an_agreeing_root(work, capsys):
    r = work["images"]["plain"]
    assert main(["image", "verify", str(r.path), "--public-key", str(work["pub"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    j = out["report"]
    assert out["ok"] and j["manifest_root"] == r.manifest_root and j["signature"] == str(r.path) + ".sig"
    assert out["context"]["root"] == r.manifest_root and out["context"]["signature"] == j["signature"]
    assert main(["image", "verify", str(r.path), "--public-key", str(work["pub"]), "--root-hash", r.root_hash.hex()]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {r.path} matches root hash {r.root_hash.hex()} (signed by")
    assert main(["image", "verify", str(r.path), "--public-key", str(work["pub"]), "--root-hash", "ab" * 32]) == 1
    err = capsys.readouterr().err
    assert f"signs root hash {r.root_hash.hex()}, not the {'ab' * 32} given" in err and err.count("\n") == 1


def test_a_tampered_block_superblock_or_tail_fails(work, tmp_path, capsys):
    img = copy(work, tmp_path)
    r = work["images"]["plain"]
    flip_bit(img, 5)  # the EROFS area: named as a bad block
    with pytest.raises(ContentMismatch, match="data block 0"):
        verify_signed_image(img, work["pub"])
    img = copy(work, tmp_path)
    with open(img, "r+b") as f:  # the verity superblock's UUID: the tree still matches, the digest does not
        f.seek(r.hash_offset + 16)
        f.write(b"\x01")
    assert main(["image", "verify", str(img), "--public-key", str(work["pub"])]) == 1
    assert "its data and tree match, so its verity superblock differs" in capsys.readouterr().err
    img = copy(work, tmp_path)
    size = img.stat().st_size
    with open(img, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ContentMismatch, match=f"is {size + 1} bytes, not the signed image's {size}"):
        verify_signed_image(img, work["pub"])
    os.truncate(img, r.hash_offset - 4096)  # shorter than the signed data area: a failed verify, not bad input
    assert main(["image", "verify", str(img), "--public-key", str(work["pub"])]) == 1
    assert "(truncated, or bytes added)" in capsys.readouterr().err


def test_another_key_or_a_model_signature_is_refused(work, tmp_path):
    r = work["images"]["plain"]
    with pytest.raises(BadSignature):
        verify_signed_image(r.path, make_keys(tmp_path, "other")[1])
    model_sig = sentry.sign_model(work["model"], key=work["priv"], signature=tmp_path / "model.sig")
    with pytest.raises(UnsupportedFormat, match="does not sign a disk image"):
        verify_signed_image(r.path, work["pub"], model_sig)


def test_sentry_verify_points_a_disk_image_signature_to_image_verify(work, capsys):
    r = work["images"]["plain"]
    assert main(["verify", str(r.path), "--public-key", str(work["pub"])]) == 1
    err = capsys.readouterr().err
    assert err == (f"sentry: {r.path}.sig signs a disk image, not a model or dataset; verify it with sentry image "
                   "verify IMAGE --signature SIG\n")
    with pytest.raises(UnsupportedFormat, match="verify it with sentry.image.verify_signed_image"):
        sentry.verify_model(work["model"], public_key=work["pub"], signature=str(r.path) + ".sig")


def test_model_signature_must_sign_the_images_manifest_root(work, tmp_path, capsys):
    r = work["images"]["plain"]
    same = sentry.sign_model(work["model"], key=work["priv"], signature=tmp_path / "same.sig")
    assert main(["image", "verify", str(r.path), "--public-key", str(work["pub"]), "--model-signature", str(same),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["report"]["manifest_root_checked_against"] == "model signature"
    other_leaf = sentry.sign_model(work["model"], key=work["priv"], signature=tmp_path / "leaf.sig", leaf_size=8192)
    with pytest.raises(ContentMismatch, match=r"\(leaf sizes 8192 and 4096\): they do not refer to the same weights"):
        verify_signed_image(r.path, work["pub"], model_signature=other_leaf)
    other = tmp_path / "other"
    shutil.copytree(work["model"], other)
    (other / "config.json").write_text('{"model_type": "other"}\n')
    with pytest.raises(ContentMismatch, match="do not refer to the same weights"):
        verify_signed_image(r.path, work["pub"], model_signature=sentry.sign_model(other, key=work["priv"]))
    oms_sig = sentry.sign_model(work["model"], key=work["priv"], signature=tmp_path / "oms.sig", format="oms")
    with pytest.raises(UnsupportedFormat, match="model_signing signature"):
        verify_signed_image(r.path, work["pub"], model_signature=oms_sig)
    with pytest.raises(BadSignature):  # the model signature is checked with its own key when given
        verify_signed_image(r.path, work["pub"], model_signature=same,
                            model_public_key=make_keys(tmp_path, "x")[1])


def _resign(work, tmp_path, edit, digest=None):
    """A copy of the plain image with a statement whose predicate ``edit`` changed, signed by the key."""
    r = work["images"]["plain"]
    pred = json.loads(json.dumps(r.predicate(4096)))
    edit(pred)
    img = copy(work, tmp_path)
    write_bundle(str(img) + ".sig", work["signer"].sign(
        make_statement(img.name, digest or r.image_sha256, pred, predicate_type=IMAGE_PREDICATE_TYPE)))
    return img


@pytest.mark.parametrize("edit, kind, match", [
    (lambda p: p["verity"].update(hash_offset=12345), InvalidBundle, "hash offset 12345 and data block count"),
    (lambda p: p["verity"].update(salt="zz"), InvalidBundle, "signed salt"),
    (lambda p: p["verity"].update(root_hash="AB" * 32), InvalidBundle, "verity.root_hash is not 64 lowercase"),
    (lambda p: p["verity"].update(superblock="yes"), InvalidBundle, "no valid verity.superblock"),
    (lambda p: p["verity"].update(format=0), UnsupportedFormat, "other than format 1"),
    (lambda p: p.pop("manifest"), InvalidBundle, "no valid predicate.manifest"),
    (lambda p: p["verity"].update(salt="01"), ContentMismatch, "does not match root hash"),
])
def test_a_malformed_or_wrong_signed_predicate_fails(work, tmp_path, edit, kind, match):
    with pytest.raises(kind, match=match):
        verify_signed_image(_resign(work, tmp_path, edit), work["pub"])


def test_a_subject_digest_other_than_the_image_digest_is_invalid(work, tmp_path):
    img = _resign(work, tmp_path, lambda p: None, digest="00" * 32)
    with pytest.raises(InvalidBundle, match="does not match the statement's subject digest"):
        verify_signed_image(img, work["pub"])


def test_certificate_signed_image_verifies_against_its_ca(work, tmp_path, capsys):
    pki = make_pki(tmp_path)
    out = tmp_path / "cert.img"
    assert main(["image", "build", str(work["model"]), "-o", str(out), "-q", "--key", str(pki["key"]),
                 "--certificate", str(pki["leaf"]), "--certificate-chain", str(pki["intermediate"])]) == 0
    capsys.readouterr()
    assert main(["image", "verify", str(out), "--certificate-chain", str(pki["root"])]) == 0
    os.mkdir(tmp_path / "o")
    assert main(["image", "verify", str(out), "--certificate-chain", str(make_pki(tmp_path / "o")["root"])]) == 1
    assert "does not chain to a trusted CA certificate" in capsys.readouterr().err


@pytest.mark.parametrize("argv, match", [
    (["build", "M", "-o", "X", "--sigstore", "--key", "K"], "--sigstore signs without a key of yours"),
    (["build", "M", "-o", "X", "--identity-token", "t"], "--identity-token is for keyless signing: add --sigstore"),
    (["build", "M", "-o", "X", "--certificate", "C"], "choose how to sign: --key KEY.pem"),
    (["verify", "I", "--public-key", "P", "--hash-offset", "4096"], "leave out --hash-offset, --salt and --no-superblock"),
    (["verify", "I", "--model-signature", "S", "--root-hash", "00" * 32], "--model-signature is checked against"),
    (["verify", "I"], "give the trusted --root-hash HEX, or the image signature's verifier"),
    (["verify", "I", "--public-key", "P", "--identity", "me"], "choose one way to verify"),
])
def test_option_combinations_are_one_sentence_usage_errors(work, capsys, argv, match):
    paths = {"M": str(work["model"]), "X": str(work["dir"] / "never.img"), "K": str(work["priv"]),
             "P": str(work["pub"]), "I": str(work["images"]["plain"].path), "C": str(work["pub"]),
             "S": str(work["dir"] / "plain.img.sig")}
    assert main(["image", *[paths.get(a, a) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert not (work["dir"] / "never.img").exists()


def test_the_signature_never_lands_on_the_key_even_with_force(work, tmp_path, capsys):
    key = tmp_path / "k.pem"
    shutil.copy(work["priv"], key)
    before = key.read_bytes()
    assert main(["image", "build", str(work["model"]), "-o", str(tmp_path / "x.img"), "--key", str(key),
                 "--signature", str(key), "--force"]) == 2
    assert "is the signing key: it is never written over" in capsys.readouterr().err
    assert key.read_bytes() == before and not (tmp_path / "x.img").exists()


def test_help_lists_the_shared_signing_and_verifying_options(capsys):
    for action, options in (("build", ["--key", "--certificate", "--certificate-chain", "--sigstore",
                                       "--identity-token", "--password-file", "--signature"]),
                            ("verify", ["--public-key", "--certificate-chain", "--identity", "--issuer",
                                        "--signature", "--model-signature", "--root-hash"])):
        with pytest.raises(SystemExit):
            main(["image", action, "--help"])
        text = capsys.readouterr().out
        assert all(o in text for o in options), action


def test_a_missing_image_or_signature_is_a_usage_error(work, tmp_path):
    with pytest.raises(SentryError, match="does not exist"):
        verify_signed_image(tmp_path / "none.img", work["pub"])
    shutil.copy(work["images"]["plain"].path, tmp_path / "lone.img")
    with pytest.raises(SentryError, match="signature .*lone.img.sig does not exist"):
        verify_signed_image(tmp_path / "lone.img", work["pub"])


def test_sigstore_signs_through_the_signer_sentry_sign_builds(work, tmp_path, monkeypatch, capsys):
    """Sigstore needs the network: a stand-in for SigstoreSigner (signing with the test key) shows
    that `image build --sigstore` gets its signer, with its options, from the same construction."""
    import sentry.signing.sigstore as sigstore

    seen = {}

    class StandIn(KeySigner):
        def __init__(self, **options):
            seen.update(options)
            super().__init__(load_private_key(work["priv"]))

    monkeypatch.setattr(sigstore, "SigstoreSigner", StandIn)
    out = tmp_path / "s.img"
    assert main(["image", "build", str(work["model"]), "-o", str(out), "-q", "--sigstore", "--identity-token", "T",
                 "--staging"]) == 0
    assert seen == {"identity_token": "T", "staging": True, "trust_config": None, "cache_dir": None}
    assert verify_signed_image(out, work["pub"])["ok"]
