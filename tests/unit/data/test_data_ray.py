"""sentry.data.ray: Ray Data signs and verifies datasets with exactly the single-process root,
whatever the partitioning; tar shard members and Parquet row groups are samples; the
map_batches stage refuses tampered samples. Ray runs locally on 2 CPUs, started once."""
from __future__ import annotations

import io
import os
import random
import tarfile

import pytest
from support import REPO, verification_fails

import sentry
from sentry import SentryError
from sentry.errors import ContentMismatch

ray = pytest.importorskip("ray")
sray = pytest.importorskip("sentry.data.ray")


@pytest.fixture(scope="module")
def ray_local():
    """Ray in this process's image: workers import this checkout's sentry (PYTHONPATH, for this
    module only: a later test's subprocess must not see the checkout)."""
    root, saved = str(REPO), dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def shards(tmp_path):
    """A WebDataset-like directory: two tar shards of (jpg, cls) pairs, a Parquet table, a file."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    d, rng = tmp_path / "wds", random.Random(5)
    d.mkdir()
    for s in range(2):
        with tarfile.open(d / f"shard-{s:03d}.tar", "w", format=tarfile.PAX_FORMAT) as t:
            for i in range(6):
                for ext, data in (("jpg", rng.randbytes(rng.randrange(1, 6000))), ("cls", str(i % 3).encode())):
                    info = tarfile.TarInfo(f"{s}{i:04d}.{ext}")
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
    pq.write_table(pa.table({"x": list(range(500))}), d / "meta.parquet", row_group_size=200)
    (d / "README").write_text("shards\n")
    return d


def test_ray_signs_the_same_sidecar_as_sentry_sign_for_any_partitioning(ray_local, shards, keys, tmp_path):
    one = sentry.sign_dataset(shards, keys[0], tmp_path / "one.sig")
    want = (tmp_path / "one.samples.jsonl").read_bytes()
    for i, (partitions, per_task) in enumerate([(1, 1), (3, 2)]):
        sig = sray.sign(shards, keys[0], tmp_path / f"r{i}.sig", partitions=partitions, files_per_task=per_task)
        assert (tmp_path / f"r{i}.samples.jsonl").read_bytes() == want
        assert sentry.verify_dataset(shards, keys[1], sig).checked == 4  # the single-process verifier agrees
    assert sray.verify(shards, keys[1], one).checked == 4


def test_members_of_tar_shards_and_parquet_row_groups_are_samples(ray_local, shards, keys, tmp_path):
    import pyarrow.parquet as pq

    sig = sray.sign(shards, keys[0], tmp_path / "m.sig", members=("parquet", "tar"), partitions=3,
                    part_samples=8)
    signed = sentry.load_signed_dataset(None, keys[1], sig)
    names = sorted(signed.items)
    assert len(names) == 4 + 2 * 12 + 3 and "shard-001.tar/10005.cls" in names
    assert "meta.parquet/row-group-000002" in names
    with tarfile.open(shards / "shard-000.tar") as t:  # a member's root is that of its bytes (Python's tarfile)
        data = t.extractfile("00003.jpg").read()
    assert signed.items["shard-000.tar/00003.jpg"].root == sentry.hashing.cpu.digest_bytes(data).root
    meta = pq.ParquetFile(shards / "meta.parquet").metadata
    assert signed.items["meta.parquet/row-group-000001"].size == meta.row_group(1).column(0).total_compressed_size  # one column
    assert sray.verify(shards, keys[1], sig).checked == len(names)
    with pytest.raises(SentryError, match="sentry.data.ray.verify"):  # a directory walk cannot check members
        sentry.verify_dataset(shards, keys[1], sig)

    with tarfile.open(shards / "shard-001.tar") as t:
        offset = t.getmember("10002.jpg").offset_data
    raw = bytearray((shards / "shard-001.tar").read_bytes())
    raw[offset] ^= 1
    (shards / "shard-001.tar").write_bytes(raw)
    report = verification_fails(sray.verify, shards, public_key=keys[1], signature=sig)
    assert [c.label for c in report.changed] == ["sample shard-001.tar", "sample shard-001.tar/10002.jpg"]
    raw[0] ^= 1  # a header that no longer parses: the shard changed, its members missing, not an input error
    (shards / "shard-001.tar").write_bytes(raw)
    with pytest.raises(ContentMismatch) as failed:
        sray.verify(shards, keys[1], sig)
    assert [c.label for c in failed.value.report.changed] == ["sample shard-001.tar"]
    assert len(failed.value.report.missing) == 12


def test_the_map_batches_stage_refuses_tampered_samples(ray_local, shards, keys, tmp_path):
    sig = sray.sign(shards, keys[0], tmp_path / "s.sig", members=("tar",))
    signed = sentry.load_signed_dataset(None, keys[1], sig)
    seen = sray.read_samples(shards, members=("tar",)).map_batches(sray.VerifySamples(signed)).take_all()
    assert sorted(r["name"] for r in seen) == sorted(signed.items)

    with tarfile.open(shards / "shard-000.tar") as t:
        offset = t.getmember("00004.cls").offset_data
    raw = bytearray((shards / "shard-000.tar").read_bytes())
    raw[offset] ^= 1
    (shards / "shard-000.tar").write_bytes(raw)
    stage = sray.read_samples(shards, members=("tar",)).map_batches(sray.VerifySamples(signed), batch_size=4)
    with pytest.raises(Exception, match=r"ContentMismatch: sample shard-000.tar(/00004.cls)? failed verification"):
        stage.take_all()
    dropped = sray.read_samples(shards, members=("tar",)).map_batches(sray.VerifySamples(signed, policy="drop"))
    kept = {r["name"] for r in dropped.take_all()}  # (the warnings naming them go to the workers' logs)
    assert set(signed.items) - kept == {"shard-000.tar", "shard-000.tar/00004.cls"}

