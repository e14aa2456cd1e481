"""Issue 10, items 6 and 9: hostile headers and predicates end in one sentence, never a traceback;
and nothing is signed that a verifier would refuse, while very large manifests stay verifiable."""
import hashlib
import json
import struct

import pytest
from support import run_cli, save_tensors

import sentry
from sentry.errors import SentryError, VerificationError
from sentry.hashing.params import HashParams
from sentry.io.posix import FileSource
from sentry.manifest import manifest as manifests
from sentry.manifest import sidecar
from sentry.manifest.dataset import DatasetClaim
from sentry.manifest.item import MAX_NAME, SAMPLE, Item
from sentry.manifest.manifest import Manifest
from sentry.manifest.oms import OmsManifest
from sentry.manifest.safetensors import read_tensor_ranges
from sentry.signing import KeySigner, load_private_key, make_statement, write_bundle
from sentry.signing import bundle as bundles

DEEP = "[" * 100_000 + "]" * 100_000  # JSON text nested 100k levels deep
# Wrong-typed values for any field: each must be refused with a SentryError, nothing else.
HOSTILE = [["F32"], {}, {"a": [1]}, None, True, 1.5, -1, 10**30, "", "x" * 5000, [[[[]]]], json.loads("[" * 500 + "]" * 500)]


def mutations(obj, path=()):
    """(path, mutated copy) for every field of a JSON document, each set to every HOSTILE value."""
    if isinstance(obj, dict):
        children = list(obj.items())
    elif isinstance(obj, list):
        children = list(enumerate(obj))
    else:
        return
    for key, value in children:
        for bad in HOSTILE:
            yield path + (key,), _replaced(obj, key, bad)
        for sub_path, sub in mutations(value, path + (key,)):
            yield sub_path, _replaced(obj, key, sub)


def _replaced(obj, key, value):
    copy = dict(obj) if isinstance(obj, dict) else list(obj)
    copy[key] = value
    return copy


def only_sentry_errors(parse, documents):
    """Every document either parses or raises a SentryError; returns how many were refused."""
    refused = 0
    for path, doc in documents:
        try:
            parse(doc)
        except SentryError as exc:  # one short sentence, whatever the value
            assert len(str(exc)) < 400 and "\n" not in str(exc), (path, str(exc)[:1000])
            refused += 1
        except Exception as exc:  # pragma: no cover - the failure being tested for
            pytest.fail(f"mutating {path} raised {type(exc).__name__}: {exc}")
    return refused


def one_sentence(result, code):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


# ---------------------------------------------------------------------------------------- item 6


def write_safetensors(path, header, data=b"\0" * 16):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


GOOD_HEADER = {"__metadata__": {"format": "pt"},
               "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


def test_safetensors_header_fields_of_any_wrong_type_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"

    def parse(header):
        with FileSource(write_safetensors(path, header)) as src:
            return read_tensor_ranges(src)

    assert [r.name for r in parse(GOOD_HEADER)] == ["w"]
    refused = only_sentry_errors(parse, mutations(GOOD_HEADER))
    assert refused > 100
    for raw in (b'{"w":' + DEEP.encode() + b"}", b'{"w":{"dtype":"F32","dtype":"F32"}}', b"\xff"):
        only_sentry_errors(parse, [("raw", raw)])
        with pytest.raises(SentryError):
            parse(raw)


def test_huge_shapes_are_refused_without_computing_their_product(tmp_path):
    header = {"w": {"dtype": "F32", "shape": [10**4000] * 2000, "data_offsets": [0, 16]}}
    with FileSource(write_safetensors(tmp_path / "m.safetensors", header)) as src, \
            pytest.raises(SentryError, match="does not match its shape"):
        read_tensor_ranges(src)


@pytest.mark.parametrize("header", [
    {"w": {"dtype": ["F32"], "shape": [2, 2], "data_offsets": [0, 16]}},
    {"w": {"dtype": {}, "shape": [2, 2], "data_offsets": [0, 16]}},
    {**GOOD_HEADER, "__metadata__": ["not", "a", "map"]},
    b'{"w":' + DEEP.encode() + b"}",
], ids=["dtype-list", "dtype-dict", "metadata-list", "deep"])
def test_hostile_header_is_one_sentence_in_hash_sign_and_verify(tmp_path, keys, header):
    good = write_safetensors(tmp_path / "m.safetensors", GOOD_HEADER)
    assert run_cli("sign", good, "--key", keys[0], "-q").returncode == 0
    write_safetensors(good, header)
    assert "m.safetensors" in one_sentence(run_cli("hash", good, "-q"), 2)
    assert "m.safetensors" in one_sentence(run_cli("sign", good, "--key", keys[0], "--signature",
                                                   tmp_path / "new.sig", "-q"), 2)
    # Verifying, the changed file is reported (its tensors are then not read): exit 1.
    result = run_cli("verify", good, "--public-key", keys[1], "-q")
    assert result.returncode == 1 and "Traceback" not in result.stderr and "m.safetensors" in result.stdout


FILE_ITEM = {"kind": "file", "name": "a/b.bin", "size": 5, "root": "ab" * 32}
TENSOR_ITEM = {"kind": "tensor", "name": "w", "size": 16, "root": "cd" * 32, "dtype": "F32", "shape": [2, 2],
               "file": "m.safetensors"}
PREDICATE = {"hashing": HashParams().to_json(),
             "artifact": {"type": "model", "source": "directory", "ignore": ["*.log"], "allow_symlinks": False},
             "items": [FILE_ITEM, TENSOR_ITEM]}


@pytest.mark.parametrize("item", [FILE_ITEM, TENSOR_ITEM], ids=["file", "tensor"])
def test_signed_item_fields_of_any_wrong_type_are_refused(item):
    Item.from_json(item)
    assert only_sentry_errors(Item.from_json, mutations(item)) > 40


def test_signed_predicates_of_any_wrong_type_are_refused(tmp_path):
    Manifest.from_predicate(PREDICATE)
    only_sentry_errors(lambda p: Manifest.from_predicate(p, sidecar_dir=tmp_path), mutations(PREDICATE))
    with_sidecar = {**PREDICATE, "items": [], "sidecar": {"name": "m.manifest.jsonl", "size": 0}}
    (tmp_path / "m.manifest.jsonl").write_bytes(b"")
    Manifest.from_predicate(with_sidecar, sidecar_dir=tmp_path)
    only_sentry_errors(lambda p: Manifest.from_predicate(p, sidecar_dir=tmp_path), mutations(with_sidecar))
    dataset = {**PREDICATE, "artifact": {**PREDICATE["artifact"], "type": "dataset"}, "items": [],
               "dataset": {"samples": 0, "sidecar": {"name": "d.samples.jsonl", "size": 0, "root": "ab" * 32}}}
    DatasetClaim.from_predicate(dataset)
    only_sentry_errors(DatasetClaim.from_predicate, mutations(dataset))
    oms = {"serialization": {"method": "shards", "hash_type": "sha256", "shard_size": 10, "ignore_paths": [".git"]},
           "resources": [{"name": "w:0:10", "algorithm": "sha256-sharded-10", "digest": "ab" * 32}]}
    digest = hashlib.sha256(bytes.fromhex("ab" * 32)).hexdigest()
    OmsManifest.from_statement(digest, oms)
    only_sentry_errors(lambda p: OmsManifest.from_statement(digest, p), mutations(oms))
    only_sentry_errors(HashParams.from_json, mutations(HashParams().to_json()))


def test_sidecar_lines_of_any_wrong_type_are_refused():
    def parse(item):
        line = item.encode() if isinstance(item, str) else json.dumps(item, sort_keys=True, separators=(",", ":")).encode()
        return list(sidecar.item_records([line], "sidecar"))

    assert parse(TENSOR_ITEM)[0].name == "w"
    assert only_sentry_errors(parse, list(mutations(TENSOR_ITEM)) + [("deep", DEEP)]) > 50
    with pytest.raises(SentryError, match="not a canonical"):  # spaces: not the one spelling signed
        list(sidecar.item_records([json.dumps(FILE_ITEM, sort_keys=True).encode()], "sidecar"))


def sign_statement(path, key, predicate, digest="ab" * 32):
    """A bundle, validly signed with ``key``, over any predicate (what a hostile signer can write)."""
    payload = make_statement("m", digest, predicate)
    write_bundle(path, KeySigner(load_private_key(key)).sign(payload))
    return path


@pytest.mark.parametrize("mutate", [
    lambda p: p["items"][1].update(dtype=["F32"]),
    lambda p: p["items"][1].update(dtype={}),
    lambda p: p["items"][1].update(file=[]),
    lambda p: p["items"][0].update(name=""),
    lambda p: p["artifact"].update(type=["model"]),
    lambda p: p.update(sidecar={"name": ["x"], "size": 1}),
    lambda p: p.update(sidecar={"name": "missing.jsonl", "size": 1}, items=[]),
], ids=["dtype-list", "dtype-dict", "file-list", "empty-name", "type-list", "sidecar-name", "sidecar-missing"])
def test_hostile_signed_predicate_is_one_sentence_in_verify(tmp_path, keys, mutate):
    model = tmp_path / "m"
    model.mkdir()
    (model / "a.bin").write_bytes(b"hello")
    predicate = json.loads(json.dumps(PREDICATE))
    mutate(predicate)
    sign_statement(tmp_path / "m.sig", keys[0], predicate)
    result = run_cli("verify", model, "--public-key", keys[1], "-q")
    assert result.returncode in (1, 2)
    one_sentence(result, result.returncode)


# ---------------------------------------------------------------------------------------- item 9


@pytest.mark.parametrize("name", ["", "t" * (MAX_NAME + 1)], ids=["empty", "overlong"])
def test_tensor_names_a_verifier_refuses_are_refused_when_signing(tmp_path, keys, name):
    path = write_safetensors(tmp_path / "m.safetensors",
                             {name: {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})
    err = one_sentence(run_cli("sign", path, "--key", keys[0], "-q"), 2)
    assert "cannot sign" in err and "a verifier would refuse it" in err
    assert not (tmp_path / "m.safetensors.sig").exists()


def test_in_memory_names_a_verifier_refuses_are_refused_when_signing(tmp_path, keys):
    torch = pytest.importorskip("torch")
    with pytest.raises(SentryError, match="a verifier would refuse it"):
        sentry.sign_model({"x" * (MAX_NAME + 1): torch.zeros(2)}, keys[0], tmp_path / "m.sig")


def chunked_model(tmp_path, count=40):
    """A checkpoint of tensors of 16 leaves each (64-byte leaves): 16 chunk roots per tensor."""
    torch = pytest.importorskip("torch")
    tensors = {f"layers.{i}.weight": torch.full((256,), float(i)) for i in range(count)}
    return save_tensors(tmp_path / "m.safetensors", tensors)


def signed_predicate(sig):
    payload = bundles.read_bundle(sig).payload
    return json.loads(payload)["predicate"]


def test_a_manifest_too_large_for_the_bundle_drops_its_chunk_roots(tmp_path, keys, monkeypatch):
    path = chunked_model(tmp_path)
    full = sentry.hash_artifact(path, leaf_size=64)
    assert len(full.items[1].chunks) == 16
    monkeypatch.setattr(manifests, "MAX_INLINE_BYTES", full.records_size() - 1)
    sig = sentry.sign_model(path, keys[0], leaf_size=64)
    predicate = signed_predicate(sig)
    assert predicate["hashing"]["max_chunks"] == 1 and "sidecar" not in predicate
    assert all("chunks" not in it for it in predicate["items"]) and len(predicate["items"]) == 41
    assert sentry.verify_model(path, keys[1]).ok
    with open(path, "r+b") as f:  # a change is still found, just not located inside the tensor
        f.seek(-1, 2)
        f.write(b"\1")
    with pytest.raises(VerificationError) as failed:
        sentry.verify_model(path, keys[1])
    assert [c.label.split()[0] for c in failed.value.report.changed] == ["file", "tensor"]


def test_a_manifest_still_too_large_goes_to_a_sidecar_that_verify_reads(tmp_path, keys, monkeypatch):
    torch = pytest.importorskip("torch")
    path = chunked_model(tmp_path)
    monkeypatch.setattr(manifests, "MAX_INLINE_BYTES", 1000)
    sig = sentry.sign_model(path, keys[0], leaf_size=64)
    side = tmp_path / "m.safetensors.manifest.jsonl"
    predicate = signed_predicate(sig)
    assert predicate["items"] == [] and predicate["sidecar"] == {"name": side.name, "size": side.stat().st_size}
    assert len(side.read_bytes().splitlines()) == 41
    assert sentry.verify_model(path, keys[1]).ok
    # The in-memory model verifies against it too, and the CLI and the audit read it.
    state = {f"layers.{i}.weight": torch.full((256,), float(i)) for i in range(40)}
    assert sentry.verify_model(state, keys[1], sig).ok
    assert run_cli("verify", path, "--public-key", keys[1], "-q").returncode == 0
    # Tampering with the sidecar is caught: its items no longer hash to the signed root.
    side.write_bytes(side.read_bytes().replace(b'"size":1024', b'"size":1025', 1))
    one_sentence(run_cli("verify", path, "--public-key", keys[1], "-q"), 1)
    side.unlink()
    err = one_sentence(run_cli("verify", path, "--public-key", keys[1], "-q"), 2)
    assert "manifest.jsonl" in err


def directory_of(path, count):
    path.mkdir()
    for i in range(count):
        (path / f"{i}.bin").write_bytes(b"x")
    return path


def test_the_sidecar_of_a_large_manifest_never_goes_inside_the_artifact(tmp_path, keys, monkeypatch):
    model = directory_of(tmp_path / "m", 30)
    monkeypatch.setattr(manifests, "MAX_INLINE_BYTES", 1000)
    with pytest.raises(SentryError, match="sidecar"):
        sentry.sign_model(model, keys[0], model / "m.sig")
    assert sorted(p.name for p in model.iterdir()) == sorted(f"{i}.bin" for i in range(30))
    sig = sentry.sign_model(model, keys[0])
    assert (tmp_path / "m.manifest.jsonl").exists()
    assert sentry.verify_model(model, keys[1], sig).ok
    (model / "new.bin").write_bytes(b"y")
    with pytest.raises(VerificationError, match="new.bin"):
        sentry.verify_model(model, keys[1], sig)


def test_the_inline_limit_leaves_room_in_a_bundle():
    assert manifests.MAX_INLINE_BYTES + (1 << 20) < bundles.MAX_PAYLOAD_BYTES
    assert bundles.MAX_PAYLOAD_BYTES // 3 * 4 + (1 << 20) <= bundles.MAX_BUNDLE_BYTES


def test_a_statement_too_large_for_a_bundle_is_refused_before_signing(tmp_path, keys, monkeypatch):
    model = directory_of(tmp_path / "m", 20)
    from sentry.signing import statement

    monkeypatch.setattr(statement, "MAX_PAYLOAD_BYTES", 2000)
    with pytest.raises(SentryError, match="more than a signature bundle carries.*sidecar"):
        sentry.sign_model(model, keys[0], format="oms")
    assert not (tmp_path / "m.sig").exists()
    monkeypatch.setattr(bundles, "MAX_BUNDLE_BYTES", 100)
    with pytest.raises(SentryError, match="a verifier reads at most 100"):
        write_bundle(tmp_path / "x.sig", {"mediaType": "x" * 200})


def test_too_many_items_are_refused_when_signing(tmp_path, keys, monkeypatch):
    data = directory_of(tmp_path / "d", 4)
    monkeypatch.setattr(sidecar, "MAX_ITEMS", 3)
    with pytest.raises(SentryError, match="more than 3 items"):
        sentry.sign_dataset(data, keys[0])
    monkeypatch.setattr(manifests, "MAX_ITEMS", 3)
    with pytest.raises(SentryError, match="cannot sign .*a verifier would refuse it"):
        sentry.sign_model(data, keys[0])


def test_sample_names_a_verifier_refuses_are_refused_when_signing(tmp_path, keys):
    with pytest.raises(SentryError, match="cannot sign sample"):
        list(sidecar.Writer().lines([Item(SAMPLE, "a/" * MAX_NAME, 1, b"\0" * 32)]))
    data = tmp_path / "d"
    data.mkdir()
    (data / "x.png").write_bytes(b"x")
    prefix = "p" * (MAX_NAME - 2) + "/"  # a valid prefix, but with the sample's name too long
    with pytest.raises(SentryError, match="cannot sign sample"):
        sentry.sign_samples(data, keys[0], prefix=prefix)


@pytest.mark.parametrize("name", ["w.bin", "a/b c.bin", "q\"uote", "back\\slash", "é", "ctl\x01"])
@pytest.mark.parametrize("chunks", [(), (b"\1" * 32,), (b"\1" * 32, b"\2" * 32)], ids=["0", "1", "2"])
def test_file_records_are_what_json_dumps_writes(name, chunks):
    from sentry.hashing.merkle import root_of_hashes

    item = Item("file", name, 9000, root_of_hashes(chunks) if chunks else b"\3" * 32, chunks)
    assert item.record() == json.dumps(item.to_json(), sort_keys=True, separators=(",", ":")).encode()


def test_an_overlong_predicate_type_is_refused_in_one_short_sentence(tmp_path, keys):
    model = directory_of(tmp_path / "m", 1)
    payload = make_statement("m", "ab" * 32, PREDICATE, predicate_type="x" * 100_000)
    write_bundle(tmp_path / "m.sig", KeySigner(load_private_key(keys[0])).sign(payload))
    err = one_sentence(run_cli("verify", model, "--public-key", keys[1], "-q"), 1)
    assert "predicateType is longer than" in err and len(err) < 300
