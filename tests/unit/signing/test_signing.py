"""The signing layer: key files, DSSE, statements, bundles, key signer and verifier.

Signatures are also checked independently of sentry.signing: with plain `cryptography` and a
PAE built here from the DSSE spec, with the `openssl` command line, and against a real bundle
made by sigstore/model-transparency (model_signing 1.0.1).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from support import shared_interop

from sentry.errors import SentryError, VerificationError
from sentry.signing import (
    BUNDLE_MEDIA_TYPE,
    MAX_BUNDLE_BYTES,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    KeySigner,
    KeyVerifier,
    Signer,
    Verifier,
    generate_private_key,
    load_private_key,
    load_public_key,
    make_bundle,
    make_statement,
    pae,
    parse_statement,
    public_key_hint,
    read_bundle,
    read_password,
    write_bundle,
    write_keypair,
)

ROOT = "ab" * 32


INTEROP = shared_interop()
needs_interop = pytest.mark.skipif(INTEROP is None, reason="shared interop data absent")


def _pem_private(key, password: bytes | None = None) -> bytes:
    enc = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _pem_public(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return generate_private_key()


@pytest.fixture(scope="module")
def statement() -> bytes:
    return make_statement("model", ROOT, {"leaf_size": 4096, "items": []})


@pytest.fixture
def signed(tmp_path, key, statement) -> Path:
    path = tmp_path / "model.sig"
    write_bundle(path, KeySigner(key).sign(statement))
    return path


def _rewrite(path: Path, edit) -> None:
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


# ------------------------------------------------------------------------------- keys


def test_keygen_writes_0600_private_and_public_pem(tmp_path):
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    key = write_keypair(priv, pub)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert priv.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert load_private_key(priv).private_numbers() == key.private_numbers()
    assert load_public_key(pub).public_numbers() == key.public_key().public_numbers()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem", "k.pub"]  # no temp files


def test_private_key_is_created_0600_not_chmodded_later(tmp_path, monkeypatch):
    calls = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        calls.append((str(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    write_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    created = [(p, f, m) for p, f, m in calls if f & os.O_CREAT and ".k.pem." in p]
    assert created, calls
    for _path, flags, mode in created:
        assert mode == 0o600
        assert flags & os.O_EXCL


def test_keygen_refuses_to_overwrite(tmp_path):
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    write_keypair(priv, pub)
    before = priv.read_bytes(), pub.read_bytes()
    with pytest.raises(SentryError, match="already exists"):
        write_keypair(priv, pub)
    pub.unlink()
    with pytest.raises(SentryError, match="already exists"):
        write_keypair(priv, pub)
    assert not pub.exists() and priv.read_bytes() == before[0]
    write_keypair(priv, pub, overwrite=True)
    assert priv.read_bytes() != before[0]
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600


def test_keygen_into_missing_directory_is_a_usage_error(tmp_path):
    with pytest.raises(SentryError, match="does not exist"):
        write_keypair(tmp_path / "no" / "k.pem", tmp_path / "no" / "k.pub")


def test_encrypted_private_key(tmp_path):
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    secret = b"correct horse battery staple"
    key = write_keypair(priv, pub, password=secret)
    assert b"ENCRYPTED PRIVATE KEY" in priv.read_bytes()
    assert load_private_key(priv, secret).private_numbers() == key.private_numbers()
    with pytest.raises(SentryError, match="is encrypted; pass password="):
        load_private_key(priv)
    with pytest.raises(SentryError, match="wrong password") as info:
        load_private_key(priv, b"hunter2")
    assert "hunter2" not in str(info.value)
    plain = tmp_path / "plain.pem"
    plain.write_bytes(_pem_private(generate_private_key()))
    with pytest.raises(SentryError, match="not encrypted, but a password was given"):
        load_private_key(plain, secret)


@pytest.mark.parametrize(
    "make",
    [lambda: ec.generate_private_key(ec.SECP384R1()), ed25519.Ed25519PrivateKey.generate],
    ids=["p384", "ed25519"],
)
def test_only_p256_private_keys_sign(tmp_path, make):
    other = make()
    path = tmp_path / "other.pem"
    path.write_bytes(_pem_private(other))
    with pytest.raises(SentryError, match="only ECDSA P-256 keys are supported"):
        load_private_key(path)
    with pytest.raises(SentryError, match="only ECDSA P-256 keys are supported"):
        KeySigner(other)
    with pytest.raises(SentryError, match="only ECDSA P-256 keys are supported"):
        write_keypair(tmp_path / "a", tmp_path / "b", private_key=other)


def test_public_keys_p256_and_model_signing_curves_only(tmp_path):
    path = tmp_path / "pub.pem"
    for curve in (ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()):
        path.write_bytes(_pem_public(ec.generate_private_key(curve).public_key()))
        assert load_public_key(path).curve.name == curve.name
    for other in (
        ec.generate_private_key(ec.SECP256K1()).public_key(),
        ed25519.Ed25519PrivateKey.generate().public_key(),
    ):
        path.write_bytes(_pem_public(other))
        with pytest.raises(SentryError, match="only ECDSA P-256 keys are supported"):
            load_public_key(path)
        with pytest.raises(SentryError, match="only ECDSA P-256 keys are supported"):
            KeyVerifier(other)


def test_key_file_errors(tmp_path, key):
    with pytest.raises(SentryError, match="does not exist"):
        load_private_key(tmp_path / "missing.pem")
    with pytest.raises(SentryError, match="does not exist"):
        load_public_key(tmp_path / "missing.pub")
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00\x01 not a key")
    with pytest.raises(SentryError, match="not a PEM file"):
        load_private_key(junk)
    with pytest.raises(SentryError, match="not a PEM file"):
        load_public_key(junk)
    broken = tmp_path / "broken.pem"
    broken.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SentryError, match="does not hold a readable PEM private key"):
        load_private_key(broken)
    pub, priv = tmp_path / "pub.pem", tmp_path / "priv.pem"
    pub.write_bytes(_pem_public(key.public_key()))
    priv.write_bytes(_pem_private(key))
    with pytest.raises(SentryError, match="not a private key"):
        load_private_key(pub)
    with pytest.raises(SentryError, match="holds a private key") as info:
        load_public_key(priv)
    assert "BEGIN" not in str(info.value)
    with pytest.raises(SentryError, match="is a directory"):
        load_public_key(tmp_path)


def test_public_key_hint_is_sha256_of_spki_pem(key):
    hint = public_key_hint(key.public_key())
    assert hint == hashlib.sha256(_pem_public(key.public_key())).hexdigest()
    assert len(hint) == 64


def test_read_password(tmp_path, monkeypatch):
    monkeypatch.delenv("SENTRY_KEY_PASSWORD", raising=False)
    f = tmp_path / "pw"
    f.write_bytes(b"s3cret\n")
    assert read_password(str(f), prompt=False) == b"s3cret"
    f.write_bytes(b"s3cret\r\n")
    assert read_password(str(f), prompt=False) == b"s3cret"
    f.write_bytes(b"\n")
    with pytest.raises(SentryError, match="is empty"):
        read_password(str(f), prompt=False)
    with pytest.raises(SentryError, match="does not exist"):
        read_password(str(tmp_path / "nope"), prompt=False)
    assert read_password(None, prompt=False) is None
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # not a TTY: never prompts
    assert read_password(None, prompt=True) is None
    monkeypatch.setenv("SENTRY_KEY_PASSWORD", "from-env")
    assert read_password(None, prompt=True) == b"from-env"
    f.write_bytes(b"file-wins")
    assert read_password(str(f), prompt=True) == b"file-wins"
    monkeypatch.setenv("SENTRY_KEY_PASSWORD", "")
    with pytest.raises(SentryError, match="set but empty"):
        read_password(None, prompt=False)


# ------------------------------------------------------------------------------- DSSE


def test_pae_matches_the_dsse_spec_example():
    # From the DSSE v1 protocol document.
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("", b"") == b"DSSEv1 0  0 "
    assert pae("t\u00e9", b"\x00\xff") == b"DSSEv1 3 t\xc3\xa9 2 \x00\xff"  # byte lengths


# ---------------------------------------------------------------------------- statement


def test_statement_round_trip_and_form(statement):
    doc = json.loads(statement)
    assert doc == {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": "model", "digest": {"sha256": ROOT}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"leaf_size": 4096, "items": []},
    }
    assert statement == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    parsed = parse_statement(statement)
    assert (parsed.subject_name, parsed.digest_hex) == ("model", ROOT)
    assert parsed.predicate_type == PREDICATE_TYPE
    assert parsed.predicate == {"leaf_size": 4096, "items": []}


def _stmt(**changes):
    doc = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": "m", "digest": {"sha256": ROOT}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {},
    }
    for k, v in changes.items():
        if v is ...:
            del doc[k]
        else:
            doc[k] = v
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "payload, phrase",
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "expected a JSON object, found a list"),
        (b'{"_type": 1, "_type": 2}', "appears twice"),
        (b'{"x": NaN}', "NaN is not valid JSON"),
        (b"[" * 100000 + b"]" * 100000, "can be read safely"),
        (_stmt(_type=...), "has no _type"),
        (_stmt(_type="https://in-toto.io/Statement/v0.1"), "_type is"),
        (_stmt(subject=[]), "exactly one subject, found 0"),
        (_stmt(subject=[{"name": "a", "digest": {"sha256": ROOT}}] * 2), "exactly one subject"),
        (_stmt(subject={"name": "a"}), "subject must be a list"),
        (_stmt(subject=["a"]), "subject must be an object"),
        (_stmt(subject=[{"digest": {"sha256": ROOT}}]), "name must be a string"),
        (_stmt(subject=[{"name": "a", "digest": ROOT}]), "digest must be an object"),
        (_stmt(subject=[{"name": "a", "digest": {"sha512": ROOT}}]), "no sha256 digest"),
        (_stmt(subject=[{"name": "a", "digest": {"sha256": ROOT[:-1]}}]), "64 lowercase hex"),
        (_stmt(subject=[{"name": "a", "digest": {"sha256": ROOT.upper()}}]), "64 lowercase hex"),
        (_stmt(subject=[{"name": "a", "digest": {"sha256": 5}}]), "must be a string"),
        (_stmt(predicateType=...), "predicateType must be a string"),
        (_stmt(predicate=[]), "predicate must be an object"),
        (_stmt(predicate=...), "predicate must be an object"),
    ],
)
def test_parse_statement_rejects_hostile_input(payload, phrase):
    with pytest.raises(VerificationError, match="not a valid in-toto Statement v1") as info:
        parse_statement(payload)
    assert phrase in str(info.value)


# ------------------------------------------------------------------- sign and verify


def test_sign_verify_round_trip(signed, key, statement):
    bundle = read_bundle(signed)
    assert bundle.media_type == BUNDLE_MEDIA_TYPE
    assert bundle.payload == statement and bundle.payload_type == PAYLOAD_TYPE
    assert bundle.verification_material == {
        "publicKey": {"hint": public_key_hint(key.public_key())},
        "tlogEntries": [],
    }
    assert KeyVerifier(key.public_key()).verify(bundle) == statement
    assert isinstance(KeySigner(key), Signer) and isinstance(KeyVerifier(key.public_key()), Verifier)
    assert [p.name for p in signed.parent.iterdir()] == ["model.sig"]  # no temp files


def _dsse_parts(path: Path) -> tuple[bytes, bytes]:
    """Payload and signature straight from the JSON, without sentry.signing."""
    raw = json.loads(path.read_text())
    env = raw["dsseEnvelope"]
    assert raw["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert env["payloadType"] == "application/vnd.in-toto+json"
    return base64.b64decode(env["payload"]), base64.b64decode(env["signatures"][0]["sig"])


def _spec_pae(payload_type: str, body: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 " + str(len(t)).encode() + b" " + t + b" " + str(len(body)).encode() + b" " + body


def test_signature_verifies_with_plain_cryptography(signed, key):
    payload, sig = _dsse_parts(signed)
    message = _spec_pae("application/vnd.in-toto+json", payload)
    key.public_key().verify(sig, message, ec.ECDSA(hashes.SHA256()))  # raises if wrong
    with pytest.raises(InvalidSignature):
        key.public_key().verify(sig, message + b" ", ec.ECDSA(hashes.SHA256()))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command absent")
def test_signature_verifies_with_openssl_cli(signed, key, tmp_path):
    payload, sig = _dsse_parts(signed)
    (tmp_path / "pub.pem").write_bytes(_pem_public(key.public_key()))
    (tmp_path / "sig.der").write_bytes(sig)
    (tmp_path / "pae.bin").write_bytes(_spec_pae("application/vnd.in-toto+json", payload))
    cmd = ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", "pae.bin"]
    ok = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0 and "Verified OK" in ok.stdout, ok.stdout + ok.stderr
    (tmp_path / "pae.bin").write_bytes(_spec_pae("application/vnd.in-toto+json", payload[:-1]))
    bad = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode != 0


def test_wrong_key_fails(signed):
    other = generate_private_key().public_key()
    with pytest.raises(VerificationError, match="does not match the public key") as info:
        KeyVerifier(other).verify(read_bundle(signed))
    assert "different key" in str(info.value)  # the hint names another key


def test_untrusted_hint_does_not_decide(signed, key):
    # A wrong hint with a good signature still verifies; a right hint never rescues a bad one.
    _rewrite(signed, lambda r: r["verificationMaterial"]["publicKey"].update(hint="00" * 32))
    assert KeyVerifier(key.public_key()).verify(read_bundle(signed))
    other = generate_private_key()
    _rewrite(
        signed,
        lambda r: r["verificationMaterial"]["publicKey"].update(
            hint=public_key_hint(other.public_key())
        ),
    )
    with pytest.raises(VerificationError, match="does not match the public key"):
        KeyVerifier(other.public_key()).verify(read_bundle(signed))


def test_tampered_payload_fails(signed, key):
    def flip(raw):
        env = raw["dsseEnvelope"]
        payload = bytearray(base64.b64decode(env["payload"]))
        payload[len(payload) // 2] ^= 0x01
        env["payload"] = base64.b64encode(bytes(payload)).decode()

    _rewrite(signed, flip)
    with pytest.raises(VerificationError, match="the signed statement was changed"):
        KeyVerifier(key.public_key()).verify(read_bundle(signed))


def test_tampered_signature_and_payload_type_fail(signed, key, tmp_path):
    verifier = KeyVerifier(key.public_key())
    original = signed.read_text()
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    cases = [
        (b"\x30\x03\x02\x01", "not a DER-encoded ECDSA signature"),
        (encode_dss_signature(0, 1), "out of range"),
        (encode_dss_signature(1, n), "out of range"),
        # Non-minimal DER (long-form length; padded integer): same r and s, other bytes.
        (b"\x30\x81\x06\x02\x01\x01\x02\x01\x01", "not a DER-encoded"),
        (b"\x30\x07\x02\x02\x00\x01\x02\x01\x01", "not a DER-encoded"),
        (encode_dss_signature(1, 1) + b"\x00", "not a DER-encoded"),
    ]
    for sig, phrase in cases:
        signed.write_text(original)
        _rewrite(
            signed,
            lambda r: r["dsseEnvelope"]["signatures"][0].update(
                sig=base64.b64encode(sig).decode()  # noqa: B023 (called at once)
            ),
        )
        with pytest.raises(VerificationError, match=phrase):
            verifier.verify(read_bundle(signed))
    signed.write_text(original)
    _rewrite(signed, lambda r: r["dsseEnvelope"].update(payloadType="text/plain"))
    with pytest.raises(VerificationError, match="payload type"):
        verifier.verify(read_bundle(signed))


def test_certificate_bundle_is_not_a_key_bundle(tmp_path, key, statement):
    path = tmp_path / "c.sig"
    sig = key.sign(pae(PAYLOAD_TYPE, statement), ec.ECDSA(hashes.SHA256()))
    write_bundle(path, make_bundle(statement, sig, {"certificate": {"rawBytes": "AAAA"}}))
    with pytest.raises(VerificationError, match="signed with an X.509 certificate, not a key"):
        KeyVerifier(key.public_key()).verify(read_bundle(path))
    write_bundle(path, make_bundle(statement, sig, {}))
    with pytest.raises(VerificationError, match="no public key"):
        KeyVerifier(key.public_key()).verify(read_bundle(path))


# ------------------------------------------------------------------------ hostile bundles


def _bundle_with(tmp_path, key, statement, edit) -> Path:
    raw = KeySigner(key).sign(statement).raw
    edit(raw)
    path = tmp_path / "b.sig"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize(
    "data, phrase",
    [
        (b"", "the file is empty"),
        (b"  \n", "the file is empty"),
        (os.urandom(256) + b"\xff", "not UTF-8"),
        (b"hello, world", "not valid JSON"),
        (b"[]", "expected a JSON object, found a list"),
        (b'"x"', "expected a JSON object, found a string"),
        (b"{}", "no mediaType"),
        (b'{"mediaType": "application/json"}', "mediaType is"),
        (b'{"mediaType": 3}', "mediaType is"),
        (b'{"a": 1, "a": 2}', "appears twice"),
    ],
)
def test_read_bundle_rejects_garbage(tmp_path, data, phrase):
    path = tmp_path / "b.sig"
    path.write_bytes(data)
    with pytest.raises(VerificationError, match="is not a valid signature bundle") as info:
        read_bundle(path)
    assert phrase in str(info.value)


def test_truncated_bundle(signed):
    data = signed.read_bytes()
    for cut in (1, len(data) // 3, len(data) // 2, len(data) - 2):
        signed.write_bytes(data[:cut])
        with pytest.raises(VerificationError, match="not valid JSON"):
            read_bundle(signed)


@pytest.mark.parametrize(
    "edit, phrase",
    [
        (lambda r: r["dsseEnvelope"].update(payload="not base64!"), "payload is not valid base64"),
        (lambda r: r["dsseEnvelope"].update(payload="QUJD="), "payload is not valid base64"),
        (lambda r: r["dsseEnvelope"].update(payload="QUI"), "payload is not valid base64"),
        (lambda r: r["dsseEnvelope"].update(payload="QUJ="), "canonical padded form"),
        (lambda r: r["dsseEnvelope"].update(payload="QUJD-_=="), "payload is not valid base64"),
        (lambda r: r["dsseEnvelope"].update(payload="\u00e9\u00e9\u00e9\u00e9"), "not valid base64"),
        (lambda r: r["dsseEnvelope"].update(payload=7), "must be a base64 string, found a number"),
        (lambda r: r["dsseEnvelope"]["signatures"][0].update(sig="@@@@"), "signature is not valid base64"),
        (lambda r: r["dsseEnvelope"]["signatures"][0].update(sig=""), "signature is empty"),
        (lambda r: r["dsseEnvelope"]["signatures"][0].update(keyid=5), "keyid must be a string"),
        (lambda r: r["dsseEnvelope"]["signatures"].append(r["dsseEnvelope"]["signatures"][0]),
         "exactly one DSSE signature, found 2"),
        (lambda r: r["dsseEnvelope"].update(signatures=[]), "exactly one DSSE signature, found 0"),
        (lambda r: r["dsseEnvelope"].update(signatures={}), "signatures must be a list"),
        (lambda r: r["dsseEnvelope"].update(signatures=["x"]), "signature must be an object"),
        (lambda r: r["dsseEnvelope"].pop("payloadType"), "payloadType must be a string"),
        (lambda r: r.pop("dsseEnvelope"), "no dsseEnvelope"),
        (lambda r: r.update(dsseEnvelope=[]), "dsseEnvelope must be an object"),
        (lambda r: r.pop("verificationMaterial"), "verificationMaterial must be an object"),
        (lambda r: (r.pop("dsseEnvelope"), r.update(messageSignature={})), "message signature"),
    ],
)
def test_read_bundle_rejects_bad_fields(tmp_path, key, statement, edit, phrase):
    path = _bundle_with(tmp_path, key, statement, edit)
    with pytest.raises(VerificationError, match="is not a valid signature bundle") as info:
        read_bundle(path)
    assert phrase in str(info.value)


def test_base64_is_accepted_exactly_in_its_canonical_form():
    """decode_b64 encodes back only the last group; the answer is that of encoding back it all."""
    import binascii
    import itertools
    import random

    from sentry.signing.bundle import decode_b64

    def canonical(value):
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        return decoded if base64.b64encode(decoded).decode("ascii") == value else None

    def bad(reason):
        return VerificationError(reason)

    # Characters that differ in the low bits a short last group drops, padding, and one more: every
    # text of up to 6 of them, and a sample of longer ones (two groups or more).
    rng = random.Random(64)
    values = ["".join(c) for n in range(7) for c in itertools.product("AQg/=B", repeat=n)]
    values += ["".join(rng.choices("AQg/=B", k=rng.randrange(7, 13))) for _ in range(20000)]
    for value in values:
        try:
            got = decode_b64(value, "x", bad)
        except VerificationError:
            got = None
        assert got == canonical(value), value


def test_oversized_bundle_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.sig"
    with open(path, "wb") as f:
        f.truncate(MAX_BUNDLE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(VerificationError, match="too large to be a signature bundle"):
        read_bundle(path)


def test_missing_or_unreadable_bundle_is_a_usage_error(tmp_path):
    with pytest.raises(SentryError, match="does not exist") as info:
        read_bundle(tmp_path / "missing.sig")
    assert not isinstance(info.value, VerificationError)
    with pytest.raises(SentryError, match="is a directory") as info:
        read_bundle(tmp_path)
    assert not isinstance(info.value, VerificationError)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SentryError, match="not a regular file"):
        read_bundle(fifo)  # must not block


def test_older_bundle_media_types_are_read(tmp_path, key, statement):
    for media in (
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
    ):
        path = _bundle_with(tmp_path, key, statement, lambda r: r.update(mediaType=media))  # noqa: B023 (called at once)
        assert KeyVerifier(key.public_key()).verify(read_bundle(path)) == statement


def test_write_bundle_is_all_or_nothing(tmp_path, key, statement, monkeypatch):
    path = tmp_path / "model.sig"
    write_bundle(path, KeySigner(key).sign(statement))
    before = path.read_bytes()

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(SentryError, match="No space left"):
        write_bundle(path, KeySigner(key).sign(b"{}"))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.sig"]


# ------------------------------------------------------------------- model_signing interop


@needs_interop
def test_model_signing_key_bundle_verifies():
    pub = load_public_key(INTEROP / "keys" / "signing-key-pub.pem")
    assert pub.curve.name == "secp384r1"  # model_signing signs P-384 keys with SHA-384
    bundle = read_bundle(INTEROP / "v1.0.1-elliptic-key" / "model.sig")
    payload = KeyVerifier(pub).verify(bundle)
    statement = parse_statement(payload)
    assert statement.predicate_type == "https://model_signing/signature/v1.0"
    assert statement.subject_name == "v1.0.1-elliptic-key"
    assert statement.digest_hex == (
        "92745110b1ab4368471cbe31664e10174e954b113a3df333db860317b2c6dec4"
    )


@needs_interop
def test_model_signing_key_bundle_changed_or_wrong_key_fails(tmp_path):
    pub = load_public_key(INTEROP / "keys" / "signing-key-pub.pem")
    path = tmp_path / "model.sig"
    shutil.copyfile(INTEROP / "v1.0.1-elliptic-key" / "model.sig", path)
    with pytest.raises(VerificationError, match="different key"):
        # rawBytes in the bundle names the signer's key, which is not this one.
        KeyVerifier(generate_private_key().public_key()).verify(read_bundle(path))

    def change(raw):
        env = raw["dsseEnvelope"]
        env["payload"] = base64.b64encode(
            base64.b64decode(env["payload"]).replace(b"signme-1", b"signme-X")
        ).decode()

    _rewrite(path, change)
    with pytest.raises(VerificationError, match="does not match the public key"):
        KeyVerifier(pub).verify(read_bundle(path))


@needs_interop
def test_model_signing_certificate_bundles_are_read_but_not_key_verified():
    pub = load_public_key(INTEROP / "keys" / "signing-key-pub.pem")
    for name in ("v1.0.1-certificate", "v1.0.1-sigstore"):
        bundle = read_bundle(INTEROP / name / "model.sig")
        with pytest.raises(VerificationError, match="not a key; verify it with"):
            KeyVerifier(pub).verify(bundle)


def test_signing_is_deterministic_where_openssl_supports_it(key, statement):
    from cryptography.hazmat.backends.openssl import backend

    if not getattr(backend, "ecdsa_deterministic_supported", lambda: False)():
        pytest.skip("this OpenSSL has no RFC 6979 signing")
    assert KeySigner(key).sign(statement) == KeySigner(key).sign(statement)
