"""Datasets signed in partitions: aligned record blocks fold into the one dataset root whatever the
partitioning (Dask as the engine), sidecars split in signed parts, and the tar member parser."""
from __future__ import annotations

import io
import json
import random
import tarfile

import pytest
from pymerkle import InmemoryTree
from support import verification_fails

import sentry
from sentry import SentryError, VerificationError
from sentry.hashing import aligned
from sentry.hashing.params import HashParams
from sentry.manifest import partition
from sentry.manifest.dataset import hash_samples
from sentry.manifest.sidecar import is_plain_name


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "train"
    rng = random.Random(7)
    for i in range(45):
        sub = d / f"c{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:03d}.bin").write_bytes(rng.randbytes(rng.randrange(0, 9000)))
    return d


def _pymerkle_root(lines) -> bytes:
    """Independent oracle: RFC 9162 over the sidecar records, one record per leaf."""
    tree = InmemoryTree(algorithm="sha256")
    for line in lines:
        tree.append_entry(line.rstrip(b"\n"))
    return tree.get_root() if lines else __import__("hashlib").sha256(b"").digest()


def _signed_root(sig) -> bytes:
    from sentry.signing import read_bundle
    from sentry.signing.statement import parse_statement

    return bytes.fromhex(parse_statement(read_bundle(sig).payload).digest_hex)


def _cuts(rng, n, k):
    cuts = sorted(rng.sample(range(1, n), min(k, n - 1))) if n > 1 else []
    return list(zip([0] + cuts, cuts + [n]))


def test_random_partitionings_on_dask_give_the_root_sentry_sign_gives(data_dir, keys, tmp_path):
    dask_bag = pytest.importorskip("dask.bag")
    sig = sentry.sign_dataset(data_dir, keys[0], tmp_path / "one.sig")
    lines = (tmp_path / "one.samples.jsonl").read_bytes().splitlines(keepends=True)
    assert _signed_root(sig) == _pymerkle_root(lines)
    items = hash_samples(data_dir, HashParams())
    rng = random.Random(1)
    for trial in range(6):
        n = rng.randrange(0, len(items) + 1)  # prefixes too: every count, not just the whole set
        spans = _cuts(rng, n, rng.randrange(0, 12))
        bag = dask_bag.from_sequence([(s, items[s:e]) for s, e in spans], npartitions=max(1, len(spans)))
        results = bag.map(lambda p: partition.task(*p)).compute(scheduler="threads" if trial % 2 else "synchronous")
        rng.shuffle(results)  # fold does not depend on the order results come back in
        root, count = partition.fold(part for _, part in results)
        got_lines = [line for ls, part in sorted(results, key=lambda r: r[1].start) for line in ls]
        assert (root, count) == (_pymerkle_root(lines[:n]), n)
        assert got_lines == lines[:n]


def test_fold_refuses_gaps_overlaps_misaligned_blocks_and_name_overlaps(data_dir):
    items = hash_samples(data_dir, HashParams())
    _, a = partition.task(0, items[:10])
    _, b = partition.task(10, items[10:20])
    _, c = partition.task(11, items[11:20])
    with pytest.raises(SentryError, match="gap at leaf 10"):
        partition.fold([a, partition.task(12, items[12:20])[1]])
    with pytest.raises(SentryError, match="overlap"):
        aligned.fold(list(a.blocks) + list(b.blocks) + list(c.blocks))
    with pytest.raises(SentryError, match="not an aligned power of two"):
        aligned.fold([(0, 2, b"\0" * 32), (2, 4, b"\0" * 32)])
    _, swapped = partition.task(10, items[:10])  # right place, names that do not follow
    with pytest.raises(SentryError, match="overlap by name"):
        partition.fold([a, swapped])
    with pytest.raises(SentryError, match="sorted by name"):
        partition.task(0, [items[1], items[0]])


def test_aligned_spans_are_the_largest_aligned_blocks():
    assert aligned.spans(0, 13) == [(0, 8), (8, 4), (12, 1)]
    assert aligned.spans(5, 13) == [(5, 1), (6, 2), (8, 4), (12, 1)]
    assert aligned.spans(0, 13, max_leaves=4) == [(0, 4), (4, 4), (8, 4), (12, 1)]


def test_a_sidecar_in_parts_signs_the_same_root_and_verifies(data_dir, keys, tmp_path):
    one = sentry.sign_dataset(data_dir, keys[0], tmp_path / "one.sig")
    sig = sentry.sign_dataset(data_dir, keys[0], tmp_path / "parts.sig", part_samples=16)
    assert _signed_root(sig) == _signed_root(one)
    parts = sorted(tmp_path.glob("parts.samples.*.jsonl"))
    assert [p.name for p in parts] == [f"parts.samples.{j:06d}.jsonl" for j in range(3)]
    joined = b"".join(p.read_bytes() for p in parts)
    assert joined == (tmp_path / "one.samples.jsonl").read_bytes()
    from sentry.signing import read_bundle
    from sentry.signing.statement import parse_statement

    desc = parse_statement(read_bundle(sig).payload).predicate["dataset"]
    assert desc["samples"] == 45 and desc["parts"]["samples"] == 16
    assert [f["start"] for f in desc["parts"]["files"]] == [0, 16, 32]
    for f, p in zip(desc["parts"]["files"], parts):  # each part's root is its own records' (pymerkle)
        assert bytes.fromhex(f["root"]) == _pymerkle_root(p.read_bytes().splitlines(keepends=True))
    assert sentry.verify_dataset(data_dir, keys[1], sig).checked == 45
    one_sample = sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*.bin"))[20]
    assert sentry.verify_dataset(data_dir, keys[1], sig, samples=[one_sample]).checked == 1
    (data_dir / one_sample).write_bytes(b"changed")
    report = verification_fails(sentry.verify_dataset, data_dir, public_key=keys[1], signature=sig)
    assert [c.label for c in report.changed] == [f"sample {one_sample}"]


def test_a_sidecar_part_edited_swapped_or_missing_fails(data_dir, keys, tmp_path):
    sig = sentry.sign_dataset(data_dir, keys[0], tmp_path / "p.sig", part_samples=16)
    p0, p1 = tmp_path / "p.samples.000000.jsonl", tmp_path / "p.samples.000001.jsonl"
    a, b = p0.read_bytes(), p1.read_bytes()
    p0.write_bytes(b), p1.write_bytes(a)  # both well formed, each signed, in the wrong places
    with pytest.raises(VerificationError, match="p.samples.00000"):
        sentry.verify_dataset(data_dir, keys[1], sig)
    p0.write_bytes(a), p1.write_bytes(b.replace(b'"size":', b'"size":1', 1)[: len(b)])
    with pytest.raises(VerificationError, match="p.samples.000001"):
        sentry.verify_dataset(data_dir, keys[1], sig)
    p1.unlink()
    with pytest.raises(SentryError, match="p.samples.000001.jsonl"):
        sentry.verify_dataset(data_dir, keys[1], sig)


def test_part_sizes_and_places_are_checked(data_dir, keys, tmp_path):
    for bad in (3, -4, 1 << 24):
        with pytest.raises(SentryError, match="power of two"):
            sentry.sign_dataset(data_dir, keys[0], tmp_path / "x.sig", part_samples=bad)
    with pytest.raises(SentryError, match="outside the dataset"):
        sentry.sign_dataset(data_dir, keys[0], data_dir / "x.sig", part_samples=4)


def _tar(path, entries, fmt=tarfile.PAX_FORMAT):
    with tarfile.open(path, "w", format=fmt) as t:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.type, info.size = kind, len(data)
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname, info.size = "/etc/passwd", 0
            t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_members_match_pythons_tarfile(tmp_path, fmt):
    from sentry.io.tar import members

    long = "d" * 90 + "/" + ("x" * 90 if fmt == tarfile.USTAR_FORMAT else "y" * 400) + ".txt"
    path = _tar(tmp_path / "s.tar", [("000.jpg", b"a" * 1000, tarfile.REGTYPE), ("dir", b"", tarfile.DIRTYPE),
                                     (long, b"long", tarfile.REGTYPE), ("000.cls", b"", tarfile.REGTYPE)], fmt)
    with tarfile.open(path) as t:
        want = [(m.name, m.offset_data, m.size) for m in t.getmembers() if m.isreg()]
    assert [tuple(m) for m in members(path)] == want


@pytest.mark.parametrize("name,kind,why", [
    ("l", tarfile.SYMTYPE, "symbolic link"), ("l", tarfile.LNKTYPE, "hard link"),
    ("l", tarfile.CHRTYPE, "character device"), ("l", tarfile.BLKTYPE, "block device"),
    ("l", tarfile.FIFOTYPE, "FIFO"), ("../x", tarfile.REGTYPE, "not a relative path"),
    ("/etc/x", tarfile.REGTYPE, "not a relative path"), ("a/./b", tarfile.REGTYPE, "not a relative path"),
])
def test_tar_links_devices_and_escaping_names_are_refused(tmp_path, name, kind, why):
    from sentry.io.tar import members

    with pytest.raises(SentryError, match=why):
        members(_tar(tmp_path / "bad.tar", [(name, b"", kind)]))


def test_damaged_or_ambiguous_tars_are_refused(tmp_path):
    from sentry.io.tar import members

    dup = _tar(tmp_path / "dup.tar", [("a", b"1", tarfile.REGTYPE), ("a", b"2", tarfile.REGTYPE)])
    with pytest.raises(SentryError, match="appears twice"):
        members(dup)
    good = _tar(tmp_path / "g.tar", [("a", b"x" * 3000, tarfile.REGTYPE)]).read_bytes()
    (tmp_path / "cut.tar").write_bytes(good[:2048])
    with pytest.raises(SentryError, match="past the end"):
        members(tmp_path / "cut.tar")
    (tmp_path / "sum.tar").write_bytes(good[:100] + b"Z" + good[101:])  # the first header's mode field
    with pytest.raises(SentryError, match="checksum"):
        members(tmp_path / "sum.tar")
    (tmp_path / "junk.tar").write_bytes(random.Random(3).randbytes(4096))
    with pytest.raises(SentryError, match="tar .*junk.tar"):
        members(tmp_path / "junk.tar")
    assert is_plain_name("s.tar/a")


def _parts_statement(data_dir, keys, tmp_path):
    from sentry.signing import read_bundle
    from sentry.signing.statement import parse_statement

    sig = sentry.sign_dataset(data_dir, keys[0], tmp_path / "p.sig", part_samples=16)
    return parse_statement(read_bundle(sig).payload)


@pytest.mark.parametrize("edit,why", [
    (lambda d: d["parts"]["files"][1].update(start=15), "does not start at record 16"),
    (lambda d: d["parts"].update(samples=12), "power of two"),
    (lambda d: d["parts"]["files"].pop(), "need 3 sidecar parts"),
    (lambda d: d["parts"]["files"][2].update(name=d["parts"]["files"][0]["name"]), "same name"),
    (lambda d: d["parts"]["files"][0].update(name="../x.jsonl"), "plain file name"),
    (lambda d: d["parts"]["files"][0].update(root="0" * 64), "does not match the signed digest"),
])
def test_a_signed_parts_list_is_checked_before_any_part_is_read(data_dir, keys, tmp_path, edit, why):
    from sentry.api import signed_claim
    from sentry.signing.statement import Statement

    st = _parts_statement(data_dir, keys, tmp_path)
    predicate = json.loads(json.dumps(st.predicate))
    edit(predicate["dataset"])
    with pytest.raises(VerificationError, match=why):
        signed_claim(Statement(st.subject_name, st.digest_hex, st.predicate_type, predicate), tmp_path / "p.sig")


def test_cli_signs_in_parts_and_verifies_with_the_sidecar_named_as_when_signing(data_dir, keys, tmp_path):
    from support import run_cli

    side = tmp_path / "lists" / "train.jsonl"
    side.parent.mkdir()
    r = run_cli("sign", data_dir, "--dataset", "--key", keys[0], "--signature", tmp_path / "t.sig",
                "--part-samples", "32", "--sidecar", side)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in side.parent.iterdir()) == ["train.000000.jsonl", "train.000001.jsonl"]
    r = run_cli("verify", data_dir, "--dataset", "--public-key", keys[1], "--signature", tmp_path / "t.sig",
                "--sidecar", side)
    assert r.returncode == 0, r.stderr
    r = run_cli("sign", data_dir, "--key", keys[0], "--signature", tmp_path / "m.sig", "--part-samples", "32")
    assert r.returncode == 2 and "add --dataset" in r.stderr


def test_an_empty_dataset_signs_in_parts_as_it_does_whole(tmp_path, keys):
    (tmp_path / "empty").mkdir()
    one = sentry.sign_dataset(tmp_path / "empty", keys[0], tmp_path / "one.sig")
    sig = sentry.sign_dataset(tmp_path / "empty", keys[0], tmp_path / "p.sig", part_samples=4)
    assert _signed_root(sig) == _signed_root(one) == __import__("hashlib").sha256(b"").digest()
    assert not list(tmp_path.glob("p.samples.*")) and sentry.verify_dataset(tmp_path / "empty", keys[1], sig).ok


def test_a_parquet_file_that_is_not_one_or_lies_about_its_row_groups_is_refused(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from sentry.io.parquet import row_groups

    (tmp_path / "junk.parquet").write_bytes(b"PAR1" + bytes(64) + b"PAR1")
    with pytest.raises(SentryError, match="junk.parquet: cannot read its footer"):
        row_groups(tmp_path / "junk.parquet")
    good = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": list(range(300)), "y": [str(i) for i in range(300)]}), good, row_group_size=100)
    meta = pq.ParquetFile(good).metadata
    ranges = row_groups(good)
    assert [g.size for g in ranges] == [sum(meta.row_group(i).column(j).total_compressed_size for j in range(2))
                                        for i in range(3)]
    raw = good.read_bytes()
    (tmp_path / "cut.parquet").write_bytes(raw[:ranges[1].offset] + raw[ranges[2].offset:])  # a footer that lies
    with pytest.raises(SentryError, match="cut.parquet"):
        row_groups(tmp_path / "cut.parquet")


def test_a_later_part_never_replaces_a_file_that_is_not_an_earlier_sample_list(data_dir, keys, tmp_path):
    (tmp_path / "p.samples.000002.jsonl").write_text("my notes\n")
    with pytest.raises(SentryError, match="p.samples.000002.jsonl"):
        sentry.sign_dataset(data_dir, keys[0], tmp_path / "p.sig", part_samples=16)
    assert (tmp_path / "p.samples.000002.jsonl").read_text() == "my notes\n"
    assert not (tmp_path / "p.sig").exists()
    sentry.sign_dataset(data_dir, keys[0], tmp_path / "p.sig", part_samples=16, force=True)
    sentry.sign_dataset(data_dir, keys[0], tmp_path / "p.sig", part_samples=16)  # its own earlier parts: fine
