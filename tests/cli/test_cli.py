"""The `sentry` command line, driven as a user would: child processes, files in temporary dirs.

Every error must be one line on stderr that starts with "sentry:" (never a traceback), with the
documented exit code: 0 success, 1 verification failed, 2 usage or input error.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import sys

import pytest
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support import REPO, flip_bit, make_keys, run_cli, save_tensors, shared_interop, tensor_offset

import sentry

ROOT = REPO  # the checkout under test
HEX64 = re.compile(r"[0-9a-f]{64}")
PASSWORD = "correct horse battery staple"


# ---------------------------------------------------------------------------- helpers


def _env(**extra) -> dict:
    """The caller's environment without a key password that could leak into a test, plus ``extra``;
    the child imports sentry from this checkout whatever its working directory."""
    env = {k: v for k, v in os.environ.items() if k != "SENTRY_KEY_PASSWORD"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def cli(*args, cwd, **env):
    return run_cli(*args, cwd=cwd, env=_env(**env))


def cli_no_tty(*args, cwd, **env):
    """Like ``cli`` but with stdin on /dev/null, so the CLI can never prompt for a password."""
    return subprocess.run(
        [sys.executable, "-m", "sentry.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=_env(**env), stdin=subprocess.DEVNULL, timeout=300,
    )


def ok(r) -> subprocess.CompletedProcess:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return r


def error(r, code: int) -> str:
    """Assert a clean failure with ``code``; return the one stderr line."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("sentry: ") and len(lines[0]) > len("sentry: ") + 10, lines[0]
    return lines[0]


def mth(data: bytes, leaf: int = 4096) -> bytes:
    """RFC 9162 Merkle Tree Hash of ``data`` cut into ``leaf``-byte leaves (independent of sentry)."""
    leaves = [data[i : i + leaf] for i in range(0, len(data), leaf)]

    def tree(xs):
        if not xs:
            return hashlib.sha256(b"").digest()
        if len(xs) == 1:
            return hashlib.sha256(b"\x00" + xs[0]).digest()
        k = 1 << ((len(xs) - 1).bit_length() - 1)
        return hashlib.sha256(b"\x01" + tree(xs[:k]) + tree(xs[k:])).digest()

    return tree(leaves)


def files_under(d) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------- fixtures

TENSORS = {"w": ((32, 64), "F32"), "b": ((5,), "I64"), "mask": ((3, 3), "BOOL")}


@pytest.fixture
def model(tmp_path):
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"hidden": 8}')
    (d / "sub" / "data.bin").write_bytes(bytes(range(250)) * 40)  # 10000 B: three leaves
    g = torch.Generator().manual_seed(1)
    save_tensors(d / "weights.safetensors", {
        "w": torch.randn(32, 64, generator=g),  # 8192 B: two leaves
        "b": torch.arange(5, dtype=torch.int64),
        "mask": torch.eye(3, dtype=torch.bool),
    })
    return d


@pytest.fixture
def signed(model, keys):
    ok(cli("sign", "model", "--key", keys[0], cwd=model.parent))
    return model.parent / "model.sig"


# ---------------------------------------------------------------------------- keygen


def test_keygen_writes_private_key_0600_and_public_key(tmp_path):
    r = ok(cli("keygen", "k.pem", cwd=tmp_path))
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert "k.pem" in r.stdout and "k.pub.pem" in r.stdout and r.stderr == ""
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    pub = serialization.load_pem_public_key(public.read_bytes())
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert pub.public_numbers() == key.public_key().public_numbers()
    assert b"PRIVATE" not in public.read_bytes()


def test_keygen_refuses_to_overwrite_without_force(tmp_path):
    ok(cli("keygen", "k.pem", cwd=tmp_path))
    before = files_under(tmp_path)
    line = error(cli("keygen", "k.pem", cwd=tmp_path), 2)
    assert "k.pem" in line and "exist" in line
    assert files_under(tmp_path) == before  # nothing was touched
    (tmp_path / "k.pem").unlink()
    error(cli("keygen", "k.pem", cwd=tmp_path), 2)  # the public key alone blocks it too
    assert not (tmp_path / "k.pem").exists()

    ok(cli("keygen", "k.pem", "--force", cwd=tmp_path))
    after = files_under(tmp_path)
    assert after["k.pub.pem"] != before["k.pub.pem"]  # a new pair
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600


def test_keygen_encrypted_key(tmp_path):
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    ok(cli("keygen", "k.pem", "--encrypt", "--password-file", "pw", cwd=tmp_path))
    pem = (tmp_path / "k.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in pem
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, None)
    key = serialization.load_pem_private_key(pem, PASSWORD.encode())  # one trailing newline is not the password
    pub = serialization.load_pem_public_key((tmp_path / "k.pub.pem").read_bytes())
    assert pub.public_numbers() == key.public_key().public_numbers()


def test_keygen_encrypt_without_password_writes_nothing(tmp_path):
    line = error(cli_no_tty("keygen", "k.pem", "--encrypt", cwd=tmp_path), 2)
    assert "password" in line
    assert list(tmp_path.iterdir()) == []


def test_keygen_password_file_without_encrypt_is_refused(tmp_path):
    (tmp_path / "pw").write_text(PASSWORD)
    line = error(cli("keygen", "k.pem", "--password-file", "pw", cwd=tmp_path), 2)
    assert "--encrypt" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pw"]  # no unencrypted key written


@pytest.fixture
def encrypted_key(tmp_path):
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    ok(cli("keygen", "enc.pem", "--encrypt", "--password-file", "pw", cwd=tmp_path))
    return tmp_path / "enc.pem", tmp_path / "enc.pub.pem"


@pytest.mark.parametrize("how", ["password-file", "env"])
def test_sign_with_encrypted_key(model, encrypted_key, how):
    cwd = model.parent
    if how == "password-file":
        r = cli_no_tty("sign", "model", "--key", encrypted_key[0], "--password-file", "pw", cwd=cwd)
    else:
        r = cli_no_tty("sign", "model", "--key", encrypted_key[0], cwd=cwd, SENTRY_KEY_PASSWORD=PASSWORD)
    ok(r)
    ok(cli("verify", "model", "--public-key", encrypted_key[1], cwd=cwd))


def test_sign_with_encrypted_key_needs_its_password(model, encrypted_key):
    cwd = model.parent
    line = error(cli_no_tty("sign", "model", "--key", encrypted_key[0], cwd=cwd), 2)
    assert "encrypted" in line and "password" in line
    (cwd / "wrong").write_text("not the password\n")
    line = error(cli_no_tty("sign", "model", "--key", encrypted_key[0], "--password-file", "wrong", cwd=cwd), 2)
    assert "wrong password" in line
    error(cli_no_tty("sign", "model", "--key", encrypted_key[0], cwd=cwd, SENTRY_KEY_PASSWORD="nope"), 2)
    assert not (cwd / "model.sig").exists()
    assert PASSWORD not in line


# ---------------------------------------------------------------------------- hash


def test_hash_text_lists_every_item_and_the_root(model):
    r = ok(cli("hash", "model", cwd=model.parent))
    lines = r.stdout.splitlines()
    root = sentry.hash_artifact(model).root().hex()
    assert lines[-1].startswith(f"manifest root {root} (6 items, leaf size 4096)")
    rows = {line.split(None, 2)[2]: line.split()[:2] for line in lines[:-1]}
    assert set(rows) == {
        "file config.json", "file sub/data.bin", "file weights.safetensors",
        "tensor b (in weights.safetensors)", "tensor mask (in weights.safetensors)",
        "tensor w (in weights.safetensors)",
    }
    assert rows["file sub/data.bin"] == [mth((model / "sub" / "data.bin").read_bytes()).hex(), "10000"]


def test_hash_json(model):
    r = ok(cli("hash", "model", "--json", cwd=model.parent))
    data = json.loads(r.stdout)["report"]
    assert data["root"] == sentry.hash_artifact(model).root().hex()
    assert data["hashing"]["leaf_size"] == 4096
    items = data["items"]
    for it in items:
        assert HEX64.fullmatch(it["root"]) and type(it["size"]) is int and it["name"]
    files = {it["name"]: it for it in items if it["kind"] == "file"}
    assert set(files) == {"config.json", "sub/data.bin", "weights.safetensors"}
    for name, it in files.items():
        raw = (model / name).read_bytes()
        assert it["size"] == len(raw) and it["root"] == mth(raw).hex()  # an independent RFC 9162 oracle

    tensors = {it["name"]: it for it in items if it["kind"] == "tensor"}
    assert set(tensors) == set(TENSORS)  # one item per tensor of the .safetensors file
    st = model / "weights.safetensors"
    raw = st.read_bytes()
    for name, (shape, dtype) in TENSORS.items():
        it = tensors[name]
        offset, size = tensor_offset(st, name)
        assert (it["file"], it["dtype"], tuple(it["shape"]), it["size"]) == ("weights.safetensors", dtype, shape, size)
        assert it["root"] == mth(raw[offset : offset + size]).hex()


def test_hash_single_file(model):
    r = ok(cli("hash", model / "weights.safetensors", "--json", cwd=model.parent))
    data = json.loads(r.stdout)["report"]
    assert data["artifact"]["source"] == "file"
    assert sorted((it["kind"], it["name"]) for it in data["items"]) == [
        ("file", "weights.safetensors"), ("tensor", "b"), ("tensor", "mask"), ("tensor", "w")]
    assert data["root"] == sentry.hash_artifact(model / "weights.safetensors").root().hex()


def test_leaf_size_changes_the_roots(model):
    default = json.loads(ok(cli("hash", "model", "--json", cwd=model.parent)).stdout)["report"]
    small = json.loads(ok(cli("hash", "model", "--json", "--leaf-size", "1024", cwd=model.parent)).stdout)["report"]
    assert small["hashing"]["leaf_size"] == 1024
    assert small["root"] != default["root"]
    assert small["root"] == sentry.hash_artifact(model, leaf_size=1024).root().hex()
    by_key = {(it["kind"], it["name"]): it for it in default["items"]}
    for it in small["items"]:
        other = by_key[(it["kind"], it["name"])]
        if it["size"] > 1024:  # several leaves now: a different tree
            assert it["root"] != other["root"], it["name"]
        else:  # one leaf either way: the same root
            assert it["root"] == other["root"], it["name"]
    raw = (model / "sub" / "data.bin").read_bytes()
    assert next(it for it in small["items"] if it["name"] == "sub/data.bin")["root"] == mth(raw, 1024).hex()


@pytest.mark.parametrize("leaf", [
    "1000", "32", "-4096", str(1 << 25),
    "0",
])
def test_invalid_leaf_size(model, keys, leaf):
    line = error(cli("hash", "model", "--leaf-size", leaf, cwd=model.parent), 2)
    assert "leaf size" in line and "power of two" in line
    error(cli("sign", "model", "--key", keys[0], "--leaf-size", leaf, cwd=model.parent), 2)
    assert not (model.parent / "model.sig").exists()


def test_hash_missing_path(tmp_path):
    line = error(cli("hash", "nope", cwd=tmp_path), 2)
    assert "nope" in line and "does not exist" in line


# ---------------------------------------------------------------------------- sign


@pytest.mark.parametrize("arg", ["model", "model/", "./model/"])
def test_sign_directory_writes_signature_beside_it(model, keys, arg):
    before = files_under(model)
    r = ok(cli("sign", arg, "--key", keys[0], cwd=model.parent))
    sig = model.parent / "model.sig"
    assert sig.is_file() and str(sig) in r.stdout
    assert files_under(model) == before  # nothing written into the artifact
    assert not (model / ".sig").exists() and not (model / "model.sig").exists()
    assert sorted(p.name for p in model.parent.iterdir() if "sig" in p.name) == ["model.sig"]
    bundle = json.loads(sig.read_text())
    assert bundle["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    assert ok(cli("verify", arg, "--public-key", keys[1], cwd=model.parent)).stdout.startswith("OK")


def test_sign_directory_from_elsewhere(model, keys, tmp_path):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    ok(cli("sign", model, "--key", keys[0], cwd=elsewhere))
    assert (model.parent / "model.sig").is_file() and list(elsewhere.iterdir()) == []


def test_sign_single_file(tmp_path, keys):
    f = save_tensors(tmp_path / "w.safetensors", {"x": torch.ones(4, 4)})
    ok(cli("sign", "w.safetensors", "--key", keys[0], cwd=tmp_path))
    assert (tmp_path / "w.safetensors.sig").is_file()
    r = ok(cli("verify", "w.safetensors", "--public-key", keys[1], cwd=tmp_path))
    assert r.stdout.startswith("OK") and "2 items" in r.stdout  # the file and its one tensor
    flip_bit(f, tensor_offset(f, "x")[0])
    r = cli("verify", "w.safetensors", "--public-key", keys[1], cwd=tmp_path)
    assert "w.safetensors" in error(r, 1)
    changed = [line.split(":")[1].strip() for line in r.stdout.splitlines()]
    assert changed == ["file w.safetensors", "tensor x (in w.safetensors)"]


def test_signature_elsewhere(model, keys, tmp_path):
    out = tmp_path / "sigs" / "m.bundle"
    out.parent.mkdir()
    ok(cli("sign", "model", "--key", keys[0], "--signature", out, cwd=model.parent))
    assert out.is_file() and not (model.parent / "model.sig").exists()
    ok(cli("verify", "model", "--public-key", keys[1], "--signature", out, cwd=model.parent))
    line = error(cli("verify", "model", "--public-key", keys[1], cwd=model.parent), 2)  # no model.sig
    assert "model.sig" in line


def test_sign_into_missing_directory(model, keys):
    line = error(cli("sign", "model", "--key", keys[0], "--signature", "no/such/dir/m.sig", cwd=model.parent), 2)
    assert "no/such/dir" in line


def test_sign_with_public_key_as_key(model, keys):
    line = error(cli("sign", "model", "--key", keys[1], cwd=model.parent), 2)
    assert "not a private key" in line
    assert not (model.parent / "model.sig").exists()


# ---------------------------------------------------------------------------- verify


def test_verify_ok(model, keys, signed):
    r = ok(cli("verify", "model", "--public-key", keys[1], cwd=model.parent))
    assert r.stdout == "OK: verified 6 items\n" and r.stderr == ""  # three files, three tensors
    data = json.loads(ok(cli("verify", "model", "--public-key", keys[1], "--json", cwd=model.parent)).stdout)
    assert data["ok"] is True and data["error"] is None and data["report"]["checked"] == 6
    assert data["report"]["changed"] == data["report"]["missing"] == data["report"]["extra"] == []


def test_verify_tampered_file(model, keys, signed):
    flip_bit(model / "sub" / "data.bin", 5000)
    r = cli("verify", "model", "--public-key", keys[1], cwd=model.parent)
    line = error(r, 1)
    assert "sub/data.bin" in line
    assert r.stdout.splitlines() == [
        "changed: file sub/data.bin: content differs (first difference in bytes 4096..8191)"]

    r = cli("verify", "model", "--public-key", keys[1], "--json", cwd=model.parent)
    error(r, 1)
    data = json.loads(r.stdout)
    assert data["ok"] is False and data["error"]["kind"] == "ContentMismatch"
    report = data["report"]
    assert report["missing"] == [] and report["extra"] == []
    assert report["changed"] == [{"kind": "file", "name": "sub/data.bin", "file": None, "label": "file sub/data.bin",
                                  "reasons": ["content differs"], "first_difference": {"offset": 4096, "length": 4096}}]


def test_verify_tampered_tensor(model, keys, signed):
    st = model / "weights.safetensors"
    offset, size = tensor_offset(st, "w")
    flipped = offset + size - 1  # the last byte of w: its second leaf
    flip_bit(st, flipped, bit=7)
    r = cli("verify", "model", "--public-key", keys[1], cwd=model.parent)
    error(r, 1)
    start = flipped // 4096 * 4096
    end = min(start + 4096, st.stat().st_size) - 1
    assert sorted(r.stdout.splitlines()) == [
        f"changed: file weights.safetensors: content differs (first difference in bytes {start}..{end})",
        "changed: tensor w (in weights.safetensors): content differs (first difference in bytes 4096..8191)",
    ]
    data = json.loads(cli("verify", "model", "--public-key", keys[1], "--json", cwd=model.parent).stdout)
    assert {(c["kind"], c["name"], c["file"], c["label"]) for c in data["report"]["changed"]} == {
        ("file", "weights.safetensors", None, "file weights.safetensors"),
        ("tensor", "w", "weights.safetensors", "tensor w (in weights.safetensors)")}


def test_verify_added_and_removed_files(model, keys, signed):
    (model / "config.json").unlink()
    (model / "new.txt").write_text("added")
    r = cli("verify", "model", "--public-key", keys[1], "--json", cwd=model.parent)
    error(r, 1)
    data = json.loads(r.stdout)["report"]
    assert [(m["kind"], m["name"]) for m in data["missing"]] == [("file", "config.json")]
    assert [(e["kind"], e["name"]) for e in data["extra"]] == [("file", "new.txt")] and data["changed"] == []


def test_verify_wrong_public_key(model, signed, tmp_path):
    other = make_keys(tmp_path, "other")[1]
    r = cli("verify", "model", "--public-key", other, cwd=model.parent)
    assert "signature" in error(r, 1)
    assert r.stdout == ""
    r = cli("verify", "model", "--public-key", other, "--json", cwd=model.parent)
    verdict = json.loads(r.stdout)
    assert verdict["ok"] is False and verdict["error"]["kind"] == "BadSignature" and verdict["report"] is None
    assert "signature" in verdict["error"]["message"] and verdict["error"]["message"] in error(r, 1)


def test_verify_missing_signature(model, keys):
    line = error(cli("verify", "model", "--public-key", keys[1], cwd=model.parent), 2)
    assert "model.sig" in line and "does not exist" in line


def test_verify_nonexistent_path(model, keys, signed):
    error(cli("verify", "gone", "--public-key", keys[1], cwd=model.parent), 2)
    line = error(cli("verify", "gone", "--public-key", keys[1], "--signature", signed, cwd=model.parent), 2)
    assert "gone" in line and "does not exist" in line


def test_verify_missing_public_key_file(model, signed):
    assert "does not exist" in error(cli("verify", "model", "--public-key", "nope.pem", cwd=model.parent), 2)


def test_verify_with_private_key_as_public_key(model, keys, signed):
    line = error(cli("verify", "model", "--public-key", keys[0], cwd=model.parent), 2)
    assert "private key" in line
    assert "BEGIN" not in line  # no key material in messages


def _garbage(sig_bytes: bytes) -> dict:
    bundle = json.loads(sig_bytes)
    forged = json.loads(sig_bytes)
    env = forged["dsseEnvelope"]
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"]["items"] = statement["predicate"]["items"][:1]  # claim a smaller model
    env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    assert forged != bundle
    return {
        "text": b"this is not a signature\n",
        "truncated": sig_bytes[: len(sig_bytes) // 2],
        "empty": b"",
        "binary": bytes(range(256)) * 8,
        "json-not-a-bundle": b'{"hello": "world"}',
        "json-array": b"[]",
        "forged-payload": json.dumps(forged).encode(),
    }


@pytest.mark.parametrize("kind", ["text", "truncated", "empty", "binary", "json-not-a-bundle", "json-array",
                                  "forged-payload"])
def test_verify_garbage_signature(model, keys, signed, kind):
    signed.write_bytes(_garbage(signed.read_bytes())[kind])
    r = cli("verify", "model", "--public-key", keys[1], cwd=model.parent)
    line = error(r, 1)
    assert "model.sig" in line or "signature" in line
    assert r.stdout == ""


def test_verify_dataset_signature_as_model(model, keys):
    ok(cli("sign", "model", "--key", keys[0], "--dataset", cwd=model.parent))
    ok(cli("verify", "model", "--public-key", keys[1], "--dataset", cwd=model.parent))
    assert "add --dataset" in error(cli("verify", "model", "--public-key", keys[1], cwd=model.parent), 2)


# ---------------------------------------------------------------------------- help and usage


def test_top_level_help(tmp_path):
    r = ok(cli("--help", cwd=tmp_path))
    for word in ("keygen", "hash", "sign", "verify", "exit codes", "0 success", "1 verification failed", "2 usage"):
        assert word in r.stdout, word


@pytest.mark.parametrize("command, options", [
    ("keygen", ["--encrypt", "--password-file", "--force", "--public-key"]),
    ("hash", ["--leaf-size", "--json", "--quiet", "--ignore"]),
    ("sign", ["--key", "--password-file", "SENTRY_KEY_PASSWORD", "--signature", "--leaf-size", "--certificate",
              "--certificate-chain", "--sigstore", "--identity-token", "--staging", "--trust-config", "--cache-dir",
              "--format"]),
    ("verify", ["--public-key", "--signature", "--json", "--quiet", "--certificate-chain", "--identity", "--issuer",
                "--trust-config"]),
])
def test_subcommand_help(tmp_path, command, options):
    r = ok(cli(command, "--help", cwd=tmp_path))
    assert r.stdout.startswith(f"usage: sentry {command}")
    text = " ".join(r.stdout.split())  # argparse wraps lines
    assert "exit codes: 0 success, 1 verification failed, 2 usage or input error" in text
    for option in options:
        assert option in text, option


def test_no_subcommand_is_a_usage_error(tmp_path):
    r = cli(cwd=tmp_path)
    assert r.returncode == 2 and "usage: sentry" in r.stderr and "Traceback" not in r.stderr
    r = cli("frobnicate", cwd=tmp_path)
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_missing_required_option_is_a_usage_error(model):
    assert "choose how to sign: --key KEY.pem" in error(cli("sign", "model", cwd=model.parent), 2)
    assert "choose one way to verify: --public-key" in error(cli("verify", "model", cwd=model.parent), 2)


def test_python_dash_m_sentry(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sentry", "--help"], capture_output=True, text=True, cwd=tmp_path,
                       env=_env(), timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage: sentry") and "verify" in r.stdout


# ---------------------------------------------------------------------------- output streams


@pytest.mark.parametrize("quiet", [True, False])
def test_no_progress_when_quiet_or_not_a_terminal(model, keys, quiet):
    q = ["--quiet"] if quiet else []
    cwd = model.parent
    for args in (["hash", "model"], ["sign", "model", "--key", keys[0]], ["verify", "model", "--public-key", keys[1]]):
        r = ok(cli(*args, *q, cwd=cwd))
        assert r.stderr == "", (args, r.stderr)
        assert r.stdout


def _stderr_on_a_terminal(args, cwd) -> tuple[int, str]:
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "sentry.cli", *map(str, args)], stdout=subprocess.PIPE,
                           stderr=slave, stdin=subprocess.DEVNULL, cwd=cwd, env=_env(), timeout=120)
    finally:
        os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal is closed and drained
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return r.returncode, out.decode()


def test_progress_bar_on_a_terminal_only_without_quiet(model):
    code, err = _stderr_on_a_terminal(["hash", "model"], model.parent)
    assert code == 0 and "hashing [" in err and "100.0%" in err
    code, err = _stderr_on_a_terminal(["hash", "model", "--quiet"], model.parent)
    assert code == 0 and err == ""


def test_closed_stdout_pipe_is_not_a_traceback(tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    for i in range(2000):  # ~200 KB of output: more than a pipe holds
        (d / f"f{i:04}").write_bytes(b"%d" % i)
    p = subprocess.Popen([sys.executable, "-m", "sentry.cli", "hash", "many"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=tmp_path, env=_env())
    first = p.stdout.readline()
    p.stdout.close()  # like `sentry hash many | head -1`
    err = p.stderr.read().decode()
    code = p.wait(timeout=120)
    assert first.endswith(b"file f0000\n")
    assert "Traceback" not in err and "Exception ignored" not in err
    assert code == 141  # as if killed by SIGPIPE: neither success nor "verification failed"


# ---------------------------------------------------------------------------- certificates, Sigstore, OMS


def test_certificate_sign_and_verify(model, tmp_path):
    from support import make_pki

    pki = make_pki(tmp_path)
    cwd = model.parent
    ok(cli("sign", "model", "--key", pki["key"], "--certificate", pki["leaf"], "--certificate-chain",
           pki["intermediate"], cwd=cwd))
    assert ok(cli("verify", "model", "--certificate-chain", pki["root"], cwd=cwd)).stdout.startswith("OK: verified")
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other")
    assert "does not chain to a trusted CA certificate" in error(
        cli("verify", "model", "--certificate-chain", other["root"], cwd=cwd), 1)
    line = error(cli("verify", "model", "--public-key", make_keys(tmp_path)[1], cwd=cwd), 1)
    assert line.endswith("signed with an X.509 certificate, not a key; pass --certificate-chain CA.pem")


def test_option_combinations_are_usage_errors(model, keys):
    cwd = model.parent
    for args, words in (
        (["sign", "model", "--key", keys[0], "--identity-token", "t"], "--identity-token is for keyless signing"),
        (["sign", "model", "--sigstore", "--key", keys[0]], "--sigstore signs without a key of yours"),
        (["sign", "model", "--key", keys[0], "--certificate-chain", keys[1]], "--certificate-chain goes with"),
        (["sign", "model", "--key", keys[0], "--format", "oms", "--dataset"], "the OMS format signs models"),
        (["verify", "model", "--public-key", keys[1], "--identity", "me"], "choose one way to verify"),
        (["verify", "model", "--identity", "me@example.com"], "needs both --identity and --issuer"),
        (["verify", "model", "--public-key", keys[1], "--staging"], "--trust-config and --staging are for Sigstore"),
    ):
        assert words in error(cli(*args, cwd=cwd), 2), args


def test_sigstore_sign_without_identity_or_with_a_bad_token(model):
    ambient = ("GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "GITLAB_CI",
               "BUILDKITE", "CIRCLECI", "GOOGLE_SERVICE_ACCOUNT_NAME")
    env = {k: v for k, v in _env().items() if k not in ambient}
    r = subprocess.run([sys.executable, "-m", "sentry.cli", "sign", "model", "--sigstore"], capture_output=True,
                       text=True, cwd=model.parent, env=env, stdin=subprocess.DEVNULL, timeout=60)
    line = error(r, 2)
    assert "Sigstore signing needs an OIDC identity" in line and line.endswith("; pass --identity-token TOKEN to use a token you have")
    line = error(cli("sign", "model", "--sigstore", "--identity-token", "not.a.jwt", cwd=model.parent), 2)
    assert "no usable Sigstore identity" in line
    assert not (model.parent / "model.sig").exists()


def test_oms_format_round_trip_and_detection(model, keys):
    cwd = model.parent
    ok(cli("sign", "model", "--key", keys[0], "--format", "oms", "--signature", "model/model.sig", cwd=cwd))
    statement = json.loads(base64.b64decode(json.loads((model / "model.sig").read_text())["dsseEnvelope"]["payload"]))
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    r = ok(cli("verify", "model", "--public-key", keys[1], "--signature", "model/model.sig", "--json", cwd=cwd))
    data = json.loads(r.stdout)
    assert data["report"]["checked"] == 3  # files only: OMS has no tensors
    assert data["context"]["format"] == "oms" and data["context"]["artifact_type"] == "model"
    (model / "config.json").write_text("{}")
    r = cli("verify", "model", "--public-key", keys[1], "--signature", "model/model.sig", cwd=cwd)
    assert "changed: file config.json" in error(r, 1) and "changed: file config.json" in r.stdout


@pytest.mark.skipif(shared_interop() is None, reason="shared interop data absent")
def test_real_sigstore_bundle_verifies_offline_by_identity(tmp_path):
    d = shared_interop() / "v1.0.1-sigstore"
    args = ["verify", d, "--signature", d / "model.sig", "--ignore", "ignore-me",
            "--issuer", "https://sigstore.verify.ibm.com/oauth2"]
    out = ok(cli(*args, "--identity", "stefanb@us.ibm.com", cwd=tmp_path)).stdout
    assert out == "ignored: ignore-me\nOK: verified 2 items\n"  # what the verifier's --ignore left out shows
    assert "SANs do not match" in error(cli(*args, "--identity", "eve@example.com", cwd=tmp_path), 1)
