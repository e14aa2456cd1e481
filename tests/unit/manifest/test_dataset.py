"""Datasets: a sidecar of sample records signed by its root; hostile sidecars; single-sample checks."""
from __future__ import annotations

import json

import pytest
from support import flip_bit, run_cli, verification_fails

import sentry
from sentry import SentryError, VerificationError
from sentry.hashing.merkle import StreamRoot
from sentry.manifest import sidecar
from sentry.manifest.dataset import DatasetClaim
from sentry.manifest.item import SAMPLE, Item


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "train"
    for label in ("cat", "dog"):
        (d / label).mkdir(parents=True)
        for i in range(5):
            (d / label / f"{i:03d}.bin").write_bytes(f"{label}{i}".encode() * (i * 900 + 1))
    (d / "labels.csv").write_text("name,label\n")
    return d


def _sidecar(sig):
    return sig.with_name(sig.name.removesuffix(".sig") + ".samples.jsonl")


def _fails(path, public, **kw) -> sentry.Report:
    return verification_fails(sentry.verify_dataset, path, public_key=public, **kw)


def test_round_trip_writes_a_small_bundle_and_a_sorted_sidecar(data_dir, keys):
    sig = sentry.sign_dataset(data_dir, key=keys[0])
    side = _sidecar(sig)
    assert sig.name == "train.sig" and side.name == "train.samples.jsonl"
    lines = side.read_bytes().splitlines()
    names = [json.loads(line)["name"] for line in lines]
    assert names == sorted(names) and len(names) == 11 and "cat/000.bin" in names
    from sentry.signing import parse_bundle

    payload = parse_bundle(json.loads(sig.read_text())).payload
    assert b"cat/000.bin" not in payload and len(sig.read_bytes()) < 2000  # samples live in the sidecar
    assert sentry.verify_dataset(data_dir, public_key=keys[1]).checked == 11


def test_names_sorting_before_slash_beside_a_directory_sign_and_verify(tmp_path, keys):
    """'-', '.', ' ' and '!' sort before '/': "cat.csv" comes before "cat/0.png" in code-point
    order, although a directory walk meets the directory "cat" first."""
    d = tmp_path / "train"
    for name in ("cat/0.png", "cat/a/1.png", "cat-2.png", "cat.csv", "cat 3", "cat!", "cat0", "cat/a.txt", "b/c"):
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(name.encode())
    sig = sentry.sign_dataset(d, key=keys[0])
    names = [json.loads(line)["name"] for line in _sidecar(sig).read_bytes().splitlines()]
    assert names == sorted(names) and len(names) == 9
    assert sentry.verify_dataset(d, public_key=keys[1]).checked == 9
    from sentry.manifest.ignore import IgnoreRules
    from sentry.manifest.sources import list_files

    listed = [n for n, _ in list_files(d, IgnoreRules())]
    assert listed == sorted(listed) == names


def test_dataset_root_is_the_manifest_root_of_the_records(data_dir, keys):
    from sentry.hashing.merkle import leaf_hash, root_of_hashes
    from sentry.signing import parse_bundle

    sig = sentry.sign_dataset(data_dir, key=keys[0])
    lines = _sidecar(sig).read_bytes().splitlines()
    statement = json.loads(parse_bundle(json.loads(sig.read_text())).payload)
    root = root_of_hashes([leaf_hash(line) for line in lines]).hex()
    assert statement["subject"][0]["digest"]["sha256"] == root
    side = statement["predicate"]["dataset"]["sidecar"]
    assert side == {"name": "train.samples.jsonl", "size": _sidecar(sig).stat().st_size, "root": root}
    assert statement["predicate"]["dataset"]["samples"] == 11 and statement["predicate"]["items"] == []


def test_tampered_injected_and_missing_samples_are_named(data_dir, keys):
    sentry.sign_dataset(data_dir, key=keys[0])
    flip_bit(data_dir / "dog" / "003.bin", 100)
    (data_dir / "dog" / "999.bin").write_bytes(b"injected")
    (data_dir / "cat" / "001.bin").unlink()
    report = _fails(data_dir, keys[1])
    assert [c.label for c in report.changed] == ["sample dog/003.bin"]
    assert report.changed[0].reasons == ("content differs",)
    assert report.extra == ["sample dog/999.bin"] and report.missing == ["sample cat/001.bin"]


@pytest.mark.parametrize("per_batch", [1, 3, 1 << 13])
def test_samples_hashed_in_batches_give_the_same_sidecar_and_report(data_dir, keys, monkeypatch, per_batch):
    from sentry.manifest import dataset

    sig = sentry.sign_dataset(data_dir, key=keys[0])
    whole = _sidecar(sig).read_bytes()
    monkeypatch.setattr(dataset, "SAMPLES_PER_BATCH", per_batch)
    assert sentry.sign_dataset(data_dir, key=keys[0]) == sig and _sidecar(sig).read_bytes() == whole
    assert sentry.verify_dataset(data_dir, public_key=keys[1]).checked == 11
    flip_bit(data_dir / "dog" / "003.bin", 100)
    flip_bit(data_dir / "cat" / "002.bin", 5)
    (data_dir / "dog" / "999.bin").write_bytes(b"injected")
    (data_dir / "a.bin").write_bytes(b"injected")
    (data_dir / "cat" / "001.bin").unlink()
    report = _fails(data_dir, keys[1])
    assert [c.label for c in report.changed] == ["sample cat/002.bin", "sample dog/003.bin"]
    assert report.extra == ["sample a.bin", "sample dog/999.bin"] and report.missing == ["sample cat/001.bin"]
    assert report.checked == 13


@pytest.mark.parametrize("block", [1, 7, 100, 1 << 22])
def test_whole_directory_verify_reads_the_sidecar_a_block_at_a_time(data_dir, keys, monkeypatch, block):
    """Lines that straddle blocks, and a merge that meets missing and extra samples at the start,
    the middle and the end; the report is the one a lookup by name (the subset path) gives."""
    from sentry.manifest import sidecar as sc
    from sentry.manifest.dataset import SignedDataset, compare_all, hash_samples

    monkeypatch.setattr(sc, "READ_BLOCK", block)
    sig = sentry.sign_dataset(data_dir, key=keys[0])
    assert sentry.verify_dataset(data_dir, public_key=keys[1]).checked == 11
    (data_dir / "cat" / "000.bin").unlink()  # the first record
    (data_dir / "labels.csv").unlink()  # the last record
    (data_dir / "a.bin").write_bytes(b"before every record")
    (data_dir / "z.bin").write_bytes(b"after every record")
    (data_dir / "dog" / "0025.bin").write_bytes(b"between two records")
    flip_bit(data_dir / "dog" / "004.bin", 3)
    report = _fails(data_dir, keys[1])
    assert report.missing == ["sample cat/000.bin", "sample labels.csv"]
    assert report.extra == ["sample a.bin", "sample dog/0025.bin", "sample z.bin"]
    assert [c.label for c in report.changed] == ["sample dog/004.bin"] and report.checked == 14
    _, claim = sentry.api._read_claim(None, keys[1], sig, "dataset")
    items = hash_samples(data_dir, claim.params)
    by_name = SignedDataset.load(claim, _sidecar(sig)).compare(items)
    assert compare_all(claim, _sidecar(sig), iter(items)) == by_name
    side = _sidecar(sig)
    side.write_bytes(side.read_bytes()[:-1] + b" ")  # same size, no final newline
    with pytest.raises(VerificationError, match="does not end with a newline"):
        sentry.verify_dataset(data_dir, public_key=keys[1])


def test_items_carry_no_per_item_dict():
    # Memory at millions of samples: slots, and no `extra` dict unless one is given.
    item = Item(SAMPLE, "a", 1, bytes(32))
    assert not hasattr(item, "__dict__") and item.extra is None


def test_single_samples_are_checked_without_the_rest(data_dir, keys, monkeypatch):
    sentry.sign_dataset(data_dir, key=keys[0])
    flip_bit(data_dir / "dog" / "003.bin", 0)
    import sentry.hashing as hashing

    hashed = []
    real = hashing.digest_ranges
    monkeypatch.setattr(hashing, "digest_ranges", lambda ranges, *a, **kw: hashed.extend(ranges) or real(ranges, *a, **kw))
    assert sentry.verify_dataset(data_dir, public_key=keys[1], samples=["cat/002.bin"]).checked == 1
    assert [r.path.name for r in hashed] == ["002.bin"]
    assert [c.label for c in _fails(data_dir, keys[1], samples=["dog/003.bin", "cat/000.bin"]).changed] == ["sample dog/003.bin"]
    with pytest.raises(SentryError, match="neither in the signed dataset nor in the directory"):
        sentry.verify_dataset(data_dir, public_key=keys[1], samples=["nope.bin"])
    (data_dir / "cat" / "004.bin").unlink()
    assert _fails(data_dir, keys[1], samples=["cat/004.bin"]).missing == ["sample cat/004.bin"]
    with pytest.raises(SentryError, match="not a relative path inside"):
        sentry.verify_dataset(data_dir, public_key=keys[1], samples=["../train.sig"])


def test_signature_and_sidecar_elsewhere(data_dir, keys, tmp_path):
    out = tmp_path / "sigs"
    out.mkdir()
    sig = sentry.sign_dataset(data_dir, key=keys[0], signature=out / "t.sig", sidecar=out / "list.jsonl")
    assert (out / "list.jsonl").exists() and not (out / "t.samples.jsonl").exists()
    assert sentry.verify_dataset(data_dir, public_key=keys[1], signature=sig).ok  # the signed name finds it
    (out / "list.jsonl").rename(tmp_path / "moved.jsonl")
    with pytest.raises(SentryError, match="does not exist"):
        sentry.verify_dataset(data_dir, public_key=keys[1], signature=sig)
    assert sentry.verify_dataset(data_dir, public_key=keys[1], signature=sig, sidecar=tmp_path / "moved.jsonl").ok


def test_sidecar_inside_the_dataset_is_left_out(data_dir, keys):
    sig = sentry.sign_dataset(data_dir, key=keys[0], signature=data_dir / "d.sig")
    assert (data_dir / "d.samples.jsonl").exists()
    assert sentry.verify_dataset(data_dir, public_key=keys[1], signature=sig).checked == 11


def test_root_from_a_loader_verifies_against_the_signature(data_dir, keys):
    sig = sentry.sign_dataset(data_dir, key=keys[0])
    side = _sidecar(sig).read_bytes().splitlines()
    from sentry.manifest.sidecar import records_root

    assert sentry.verify_dataset(records_root(side), public_key=keys[1], signature=sig).checked == 11
    with pytest.raises(VerificationError, match="is not the one"):
        sentry.verify_dataset(records_root(side[1:]), public_key=keys[1], signature=sig)
    with pytest.raises(SentryError, match="needs signature"):
        sentry.verify_dataset(records_root(side), public_key=keys[1])


def test_model_and_dataset_signatures_do_not_mix(data_dir, keys):
    sentry.sign_model(data_dir, key=keys[0])
    with pytest.raises(SentryError, match="signs a model, not a dataset; verify it with verify_model"):
        sentry.verify_dataset(data_dir, public_key=keys[1])


# -- hostile sidecars -----------------------------------------------------------------------------
def _resign_with(data_dir, keys, lines):
    """A validly signed dataset whose sidecar holds ``lines`` (what a careless or hostile signer wrote)."""
    from sentry.api import _signer
    from sentry.hashing.params import HashParams
    from sentry.signing import make_statement, write_bundle

    data = b"".join(line + b"\n" for line in lines)
    sig = data_dir.with_name("train.sig")
    _sidecar(sig).write_bytes(data)
    claim = DatasetClaim(HashParams(), len(lines), _sidecar(sig).name, len(data), sidecar.records_root(lines))
    write_bundle(sig, _signer(keys[0], None).sign(make_statement("train", claim.root.hex(), claim.to_predicate())))


def _record(name, size=1, root="00" * 32, **extra):
    return json.dumps({"kind": "sample", "name": name, "root": root, "size": size, **extra},
                      sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize("lines, message", [
    ([_record("a"), _record("a")], "lists the sample twice"),
    ([_record("b"), _record("a")], "out of name order"),
    ([_record("../etc/passwd")], "outside the dataset"),
    ([_record("/etc/passwd")], "outside the dataset"),
    ([_record("a/./b")], "outside the dataset"),
    ([_record("a", chunks=["00" * 32])], "not a canonical sample record"),
    ([_record("a").replace(b",", b", ", 1)], "not a canonical sample record"),
    ([b'{"kind":"sample","kind":"sample","name":"a","root":"' + b"0" * 64 + b'","size":1}'], "not a canonical"),
    ([_record("a").replace(b'"sample"', b'"file"')], "not a canonical sample record"),
    ([b"not json"], "not a canonical sample record"),
    ([_record("a", size=-1)], "not a canonical sample record"),
    ([_record("a", size=1.0)], "not a canonical sample record"),
    ([_record("a").replace(b'"a"', b'"\\u0061"')], "not a canonical sample record"),
])
def test_hostile_sidecar_is_refused(data_dir, keys, lines, message):
    _resign_with(data_dir, keys, lines)
    with pytest.raises(VerificationError, match=message):
        sentry.verify_dataset(data_dir, public_key=keys[1])


def test_sidecar_edited_to_match_a_tampered_sample(data_dir, keys):
    sig = sentry.sign_dataset(data_dir, key=keys[0])
    path = data_dir / "cat" / "002.bin"
    flip_bit(path, 7)
    from sentry.hashing.cpu import digest_bytes

    side = _sidecar(sig)
    lines = side.read_bytes().splitlines()
    lines = [_record("cat/002.bin", path.stat().st_size, digest_bytes(path.read_bytes()).root.hex())
             if json.loads(line)["name"] == "cat/002.bin" else line for line in lines]
    side.write_bytes(b"".join(line + b"\n" for line in lines))  # same size: only the root can tell
    with pytest.raises(VerificationError, match="do not hash to the signed root"):
        sentry.verify_dataset(data_dir, public_key=keys[1])


def test_truncated_or_replaced_sidecar(data_dir, keys, tmp_path):
    sig = sentry.sign_dataset(data_dir, key=keys[0])
    side = _sidecar(sig)
    good = side.read_bytes()
    side.write_bytes(good[:-1])
    with pytest.raises(VerificationError, match="signature covers one of"):
        sentry.verify_dataset(data_dir, public_key=keys[1])
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("x")
    side.write_bytes(good)
    sentry.sign_dataset(other, key=keys[0])
    with pytest.raises(VerificationError, match="signature covers one of"):  # another dataset's sidecar
        sentry.verify_dataset(data_dir, public_key=keys[1], sidecar=other.with_name("other.samples.jsonl"))
    side.unlink()
    with pytest.raises(SentryError, match="does not exist"):
        sentry.verify_dataset(data_dir, public_key=keys[1])


def test_unreadable_sample_is_an_input_error(data_dir, keys):
    import os

    sentry.sign_dataset(data_dir, key=keys[0])
    (data_dir / "cat" / "000.bin").unlink()
    os.mkfifo(data_dir / "cat" / "000.bin")
    with pytest.raises(SentryError, match="not a regular file") as exc:
        sentry.verify_dataset(data_dir, public_key=keys[1])
    assert exc.value.exit_code == 2


def test_sign_refuses_a_file(data_dir, keys):
    with pytest.raises(SentryError, match="not a directory"):
        sentry.sign_dataset(data_dir / "labels.csv", key=keys[0])


# -- command line ---------------------------------------------------------------------------------
def test_cli_sign_verify_sample(data_dir, keys):
    r = run_cli("sign", data_dir, "--dataset", "--key", keys[0])
    assert r.returncode == 0 and "train.samples.jsonl" in r.stdout
    r = run_cli("verify", data_dir, "--dataset", "--public-key", keys[1])
    assert r.returncode == 0 and "verified 11 items" in r.stdout
    flip_bit(data_dir / "dog" / "001.bin", 3)
    r = run_cli("verify", data_dir, "--dataset", "--public-key", keys[1], "--sample", "dog/000.bin")
    assert r.returncode == 0, r.stderr
    r = run_cli("verify", data_dir, "--dataset", "--public-key", keys[1], "--json")
    changed = json.loads(r.stdout)["report"]["changed"]
    assert r.returncode == 1 and (changed[0]["kind"], changed[0]["name"]) == ("sample", "dog/001.bin")
    r = run_cli("verify", data_dir, "--public-key", keys[1], "--sample", "x")
    assert r.returncode == 2 and "add --dataset" in r.stderr


@pytest.mark.slow
def test_100k_tiny_samples_sign_and_verify(tmp_path, keys):
    import os

    d = tmp_path / "tiny"
    for i in range(100_000):
        if i % 1000 == 0:
            os.makedirs(d / f"{i // 1000:03d}")
        fd = os.open(d / f"{i // 1000:03d}" / f"{i:06d}", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, i.to_bytes(4, "little") * 4)
        os.close(fd)
    sig = sentry.sign_dataset(d, key=keys[0])
    assert _sidecar(sig).stat().st_size == 122 * 100_000 and sig.stat().st_size < 2000  # O(n) sidecar, small bundle
    assert sentry.verify_dataset(d, public_key=keys[1]).checked == 100_000
    flip_bit(d / "042" / "042042", 1)
    report = _fails(d, keys[1], samples=["042/042042", "099/099999"])
    assert [c.label for c in report.changed] == ["sample 042/042042"] and report.checked == 2


ODD_NAMES = ["a", "dir/x y.bin", "q\"uote", "back\\slash", "tab\there", "del\x7f", "é.jpg", "日本", "emoji😀", "~!#[]", "ctl\x01"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_sample_record_fast_path_writes_what_json_dumps_writes(name):
    it = Item(SAMPLE, name, 123, bytes(range(32)))
    assert it.record() == json.dumps(it.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    token = json.dumps(name).encode()
    assert sidecar.json_string(token) == name
    assert list(sidecar.records([it.record()], "s", StreamRoot())) == [it]


@pytest.mark.parametrize("token", [b'"a\\u0041"', b'"\\/"', b'"\xc3\xa9"', b'"\x7f"', b'"tab\there"', b'"x"y"'])
def test_sidecar_names_not_spelt_as_json_dumps_spells_them_are_refused(token):
    assert sidecar.json_string(token) is None


def test_progress_total_survives_a_dangling_sample(tmp_path):
    """Totalling sizes for a progress bar never turns a bad sample into a traceback."""
    from sentry.hashing.params import HashParams
    from sentry.manifest.dataset import hash_samples
    from sentry.progress import ProgressBar

    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("a")
    (d / "b").symlink_to(tmp_path / "nowhere")
    with pytest.raises(SentryError, match="symbolic link"):
        hash_samples(d, HashParams(), names=["a", "b"], progress=ProgressBar(enabled=False))
