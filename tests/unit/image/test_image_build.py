"""`sentry image build` / `verify` and the verify-on-read reader, against references nobody here
wrote: `veritysetup verify` and `veritysetup format` (cryptsetup), Modelwrap's and Privatemode's
documented commands, safetensors' own loader, the CPU engine's RFC 9162 roots, cryptography
(through KeyVerifier) for the signed statement."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import uuid

import pytest
import torch
from support import flip_bit, save_tensors, tensor_offset

from sentry.cli import main
from sentry.errors import SentryError, VerificationError
from sentry.hashing import cpu
from sentry.hashing.params import HashParams
from sentry.image import IMAGE_PREDICATE_TYPE, VerifiedImage, build_image, verify_image
from sentry.image.erofs import Erofs

pytestmark = pytest.mark.skipif(not (shutil.which("mkfs.erofs") and shutil.which("veritysetup")),
                                reason="needs erofs-utils and cryptsetup-bin")
B = 4096
MODEL_ID = "org/tiny-model@0123456789abcdef"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    g = torch.Generator().manual_seed(3)
    save_tensors(d / "model.safetensors", {"embed": torch.randn(300, 16, generator=g), "head": torch.randn(7, generator=g)})
    (d / "config.json").write_text('{"model_type": "tiny"}\n')
    (d / "tokenizer").mkdir()
    (d / "tokenizer" / "vocab.txt").write_bytes(os.urandom(3 * B + 100))
    (d / "one_block.bin").write_bytes(os.urandom(B))
    (d / ".git").mkdir()  # left out, as `sentry sign` leaves it out
    (d / ".git" / "HEAD").write_text("ref\n")
    return d


@pytest.fixture(scope="module")
def images(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("images")
    return {lay: build_image(model, out / f"{lay}.img", layout=lay, model_id=MODEL_ID if lay == "modelwrap" else None)
            for lay in ("plain", "modelwrap", "privatemode")}


def verify_args(r) -> dict:
    return {} if r.layout.superblock else {"superblock": False, "salt": b"\x00"}


def veritysetup_verify(r, path=None) -> int:
    args = ["veritysetup", "verify", f"--hash-offset={r.hash_offset}"]
    if not r.layout.superblock:
        args += ["--no-superblock", "--salt=00", f"--data-blocks={r.data_blocks}"]
    path = path or r.path
    return subprocess.run(args + [str(path), str(path), r.root_hash.hex()], capture_output=True).returncode


@pytest.mark.parametrize("layout", ["plain", "modelwrap", "privatemode"])
def test_veritysetup_verify_accepts_every_layout(images, layout):
    r = images[layout]
    assert veritysetup_verify(r) == 0
    assert verify_image(r.path, r.root_hash, **verify_args(r))["ok"]
    assert r.image_sha256 == hashlib.sha256(r.path.read_bytes()).hexdigest()


def test_the_image_holds_the_signed_files_and_nothing_else(images, model):
    data = images["plain"].path.read_bytes()[: images["plain"].hash_offset]
    fs = Erofs(lambda o, n: data[o : o + n], len(data))
    files = {name: fs.read_file(node) for name, node in fs.files()}
    assert files == {n: (model / n).read_bytes() for n in ("config.json", "model.safetensors", "one_block.bin",
                                                           "tokenizer/vocab.txt")}


def test_two_builds_are_identical_bytes_whatever_the_modes_and_directory_order(model, tmp_path):
    first = build_image(model, tmp_path / "a.img")
    copy = tmp_path / "copy"
    for name in sorted(["config.json", "model.safetensors", "one_block.bin", "tokenizer/vocab.txt"], reverse=True):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model / name, copy / name)
        (copy / name).chmod(0o600)
    os.utime(copy / "config.json", (1, 1))
    second = build_image(copy, tmp_path / "b.img")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.root_hash == second.root_hash


def test_modelwrap_documented_commands_reproduce_our_mpk_and_reference(images, tmp_path):
    """tinfoilsh/modelwrap pack.py: veritysetup --salt=sha256(model) --uuid=uuid5(URL, model-inner)
    --hash-offset=<image size> --root-hash-file=INFO format MPK MPK, then INFO += _<offset>_<uuid>."""
    r = images["modelwrap"]
    mpk, info = tmp_path / "theirs.mpk", tmp_path / "theirs.info"
    mpk.write_bytes(r.path.read_bytes()[: r.hash_offset])
    want_uuid = uuid.uuid5(uuid.NAMESPACE_URL, MODEL_ID + "-inner")
    subprocess.run(["veritysetup", f"--salt={hashlib.sha256(MODEL_ID.encode()).hexdigest()}", f"--uuid={want_uuid}",
                    f"--hash-offset={r.hash_offset}", f"--root-hash-file={info}", "format", str(mpk), str(mpk)],
                   check=True, capture_output=True)
    with open(info, "a") as f:
        f.write(f"_{r.hash_offset}_{want_uuid}")
    assert r.path.with_suffix(".info").read_text() == info.read_text() == r.to_json()["reference"]
    assert mpk.read_bytes() == r.path.read_bytes()
    data = r.path.read_bytes()
    assert Erofs(lambda o, n: data[o : o + n], len(data)).uuid == want_uuid.bytes  # /dev/disk/by-uuid/<uuid>


def test_privatemode_documented_commands_reproduce_our_root(images, tmp_path):
    """Privatemode's README reads the root with jq -r '.[0].roothash' repart.json; the hash partition
    is the bare tree (no superblock), salt 00, which veritysetup format --no-superblock rebuilds."""
    r = images["privatemode"]
    repart = r.path.with_suffix(".repart.json")
    jq = subprocess.run(["jq", "-r", ".[0].roothash", str(repart)], capture_output=True, text=True) if shutil.which("jq") else None
    roothash = jq.stdout.strip() if jq else json.loads(repart.read_text())[0]["roothash"]
    data, tree = tmp_path / "data.part", tmp_path / "hash.part"
    data.write_bytes(r.path.read_bytes()[: r.hash_offset])
    out = subprocess.run(["veritysetup", "format", "--no-superblock", "--salt=00", str(data), str(tree)],
                         check=True, capture_output=True, text=True).stdout
    assert re.search(r"Root hash:\s+(\w+)", out).group(1) == roothash == r.root_hash.hex()
    assert tree.read_bytes() == r.path.read_bytes()[r.hash_offset :]


def test_salt_00_file_roots_from_the_verity_pass_equal_the_engine(images, model):
    roots = images["privatemode"].file_roots
    assert roots == {n: cpu.digest_bytes((model / n).read_bytes(), HashParams()).root
                     for n in ("config.json", "model.safetensors", "one_block.bin", "tokenizer/vocab.txt")}
    assert images["plain"].file_roots == roots and images["modelwrap"].file_roots == {}  # other salt: no one-pass


def tamper_offsets(r, model) -> dict:
    """A byte in every kind of place: file data, EROFS metadata, an inline tail, the last data
    byte, the verity superblock, every tree level."""
    data = r.path.read_bytes()
    fs = Erofs(lambda o, n: data[o : o + n], r.hash_offset)
    nodes = dict(fs.files())
    st = nodes["model.safetensors"].extents[0][0] + tensor_offset(model / "model.safetensors", "embed")[0] + 5
    places = {"tensor": st, "superblock of EROFS": 1024 + 36, "EROFS volume name": 1024 + 64, "inline tail": nodes["config.json"].extents[-1][0],
              "last data byte": r.hash_offset - 1, "last byte": len(data) - 1}
    if r.layout.superblock:
        places["verity salt"] = r.hash_offset + 88
    return places


@pytest.mark.parametrize("layout", ["plain", "privatemode"])
def test_a_changed_byte_anywhere_is_refused_by_veritysetup_and_sentry(images, model, tmp_path, capsys, layout):
    r = images[layout]
    for what, offset in tamper_offsets(r, model).items():
        bad = tmp_path / f"{what}.img"
        shutil.copyfile(r.path, bad)
        flip_bit(bad, offset)
        assert veritysetup_verify(r, bad) != 0, what
        extra = [] if r.layout.superblock else ["--no-superblock", "--salt", "00"]
        assert main(["image", "verify", str(bad), "--root-hash", r.root_hash.hex(), *extra]) == 1, what
        err = capsys.readouterr().err
        assert err.startswith("sentry: ") and err.count("\n") == 1, err
        if what == "tensor":
            assert f"data block {offset // B} " in err and "model.safetensors" in err, err
        if what == "EROFS volume name":
            assert "data block 0 " in err and "EROFS metadata" in err, err


def test_sentry_verify_refuses_what_veritysetup_ignores_in_the_superblock_padding(images, tmp_path):
    r = images["plain"]
    bad = tmp_path / "pad.img"
    shutil.copyfile(r.path, bad)
    flip_bit(bad, r.hash_offset + 600)
    with pytest.raises(VerificationError, match="superblock"):
        verify_image(bad, r.root_hash)


def test_verified_reader_loads_safetensors_and_raises_at_a_tampered_block(images, model, tmp_path):
    r = images["plain"]
    with VerifiedImage(r.path, r.root_hash) as img:
        assert sorted(img.files()) == ["config.json", "model.safetensors", "one_block.bin", "tokenizer/vocab.txt"]
        tensors = img.load_safetensors("model.safetensors")
    from safetensors.torch import load_file

    want = load_file(str(model / "model.safetensors"))
    assert tensors.keys() == want.keys() and all(torch.equal(tensors[k], want[k]) for k in want)
    bad = tmp_path / "bad.img"
    shutil.copyfile(r.path, bad)
    offset = tamper_offsets(r, model)["tensor"]
    flip_bit(bad, offset)
    with VerifiedImage(bad, r.root_hash) as img:
        assert img.read_file("config.json") == (model / "config.json").read_bytes()
        with pytest.raises(VerificationError, match=f"data block {offset // B} "):
            img.load_safetensors("model.safetensors")


def test_verified_reader_refuses_a_wrong_root_before_reading_data(images):
    with pytest.raises(VerificationError, match="does not match root hash"):
        VerifiedImage(images["plain"].path, bytes(32))


def test_cli_build_json_and_signed_statement(model, tmp_path, keys, capsys):
    from sentry.signing import KeyVerifier, load_public_key, parse_statement, read_bundle

    out = tmp_path / "m.mpk"
    assert main(["image", "build", str(model), "-o", str(out), "--layout", "modelwrap", "--model-id", MODEL_ID,
                 "--json", "-q", "--key", str(keys[0])]) == 0
    j = json.loads(capsys.readouterr().out)["report"]
    assert set(j) >= {"root_hash", "hash_offset", "salt", "data_blocks", "uuid", "image_sha256", "manifest_root"}
    assert j["salt"] == hashlib.sha256(MODEL_ID.encode()).hexdigest()
    assert main(["hash", str(model), "--json", "-q"]) == 0
    assert j["manifest_root"] == json.loads(capsys.readouterr().out)["report"]["root"]
    bundle = read_bundle(tmp_path / "m.mpk.sig")
    st = parse_statement(KeyVerifier(load_public_key(keys[1])).verify(bundle))
    assert st.predicate_type == IMAGE_PREDICATE_TYPE
    assert st.digest_hex == j["image_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert st.predicate["verity"]["root_hash"] == j["root_hash"]
    assert st.predicate["manifest"]["root"] == j["manifest_root"]


@pytest.mark.parametrize("argv, match", [
    (["--layout", "modelwrap"], "needs the model's identity; pass --model-id ORG/NAME@REVISION"),
    (["--model-id", "org/name@rev"], "only used by the modelwrap layout"),
    (["--layout", "privatemode", "--salt", "01"], "fixes the salt"),
    (["--salt", "xyz"], "hex digits"),
    (["--uuid", "nope"], "must be a UUID"),
    (["--layout", "modelwrap", "--model-id", "../x"], "org/name@revision"),
])
def test_build_usage_errors_are_one_sentence(model, tmp_path, capsys, argv, match):
    assert main(["image", "build", str(model), "-o", str(tmp_path / "x.img"), *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


def test_outputs_never_land_in_the_model_or_over_a_file(model, tmp_path, capsys):
    assert main(["image", "build", str(model), "-o", str(model / "x.img")]) == 2
    assert "inside the model directory" in capsys.readouterr().err
    (tmp_path / "exists.img").write_text("keep")
    assert main(["image", "build", str(model), "-o", str(tmp_path / "exists.img")]) == 2
    assert "--force" in capsys.readouterr().err and (tmp_path / "exists.img").read_text() == "keep"


def _patch(data: bytearray, offset: int, fmt: str, value) -> None:
    struct.pack_into(fmt, data, offset, value)


def test_hostile_erofs_loops_and_wild_pointers_are_refused(images):
    data = bytearray(images["plain"].path.read_bytes()[: images["plain"].hash_offset])
    fs = Erofs(lambda o, n: bytes(data[o : o + n]), len(data))
    root = fs.inode(fs.root_nid)
    dir_block = root.extents[0][0]
    entries = list(fs._entries(root))
    i = [name for name, _ in entries].index(b"tokenizer")
    looped = bytearray(data)
    _patch(looped, dir_block + 12 * i, "<Q", fs.root_nid)  # tokenizer/ -> the root again
    with pytest.raises(SentryError, match="reached twice"):
        Erofs(lambda o, n: bytes(looped[o : o + n]), len(looped)).files()
    nid = dict(entries)[b"one_block.bin"]
    wild = bytearray(data)
    _patch(wild, fs.meta + 32 * nid + 16, "<I", 0xFFFFFF)  # its data block address, far past the end
    with pytest.raises(SentryError, match="past the image's end"):
        Erofs(lambda o, n: bytes(wild[o : o + n]), len(wild)).files()
    with pytest.raises(SentryError, match="not an EROFS"):
        Erofs(lambda o, n: bytes(n), 8192)


def test_a_side_file_is_not_replaced_without_force(model, tmp_path, capsys):
    (tmp_path / "m.info").write_text("keep")
    argv = ["image", "build", str(model), "-o", str(tmp_path / "m.mpk"), "--layout", "modelwrap", "--model-id", MODEL_ID]
    assert main(argv) == 2
    assert "m.info exists" in capsys.readouterr().err and not (tmp_path / "m.mpk").exists()


def test_a_source_file_changed_during_the_build_is_an_error(model, tmp_path, monkeypatch):
    import sentry.image.build as build

    src = tmp_path / "src"
    shutil.copytree(model, src)
    real = build.make_erofs

    def changing(files, out, fs_uuid):
        (src / "config.json").write_text('{"model_type": "other"}\n')
        return real(files, out, fs_uuid)

    monkeypatch.setattr(build, "make_erofs", changing)
    with pytest.raises(SentryError, match="config.json (changed while the image was being built|differs)"):
        build_image(src, tmp_path / "x.img")
    assert not (tmp_path / "x.img").exists() and not list(tmp_path.glob(".x.img*"))
