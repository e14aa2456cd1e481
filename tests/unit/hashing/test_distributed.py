"""Sharded models under torchrun (gloo, CPU): each rank hashes its shards, all fold the roots the
single-process engine gives the whole tensor; FSDP2 signatures both ways; a changed shard fails on
every rank; a rank that never joins gives the others a timeout error, not a hang. DCP
checkpoints saved by those ranks verify against single-process signatures and vice versa."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.checkpoint")
from support import REPO, TESTS  # noqa: E402

import sentry  # noqa: E402
from sentry.errors import VerificationError  # noqa: E402

WORKER = TESTS / "dist" / "worker.py"
ROOT = REPO


def torchrun(out: Path, nproc: int, *scenarios) -> list:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(nproc), str(WORKER), str(out), *scenarios],
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads(line) for r in range(nproc) for line in (out / f"rank{r}.jsonl").read_text().splitlines()]


def by_check(lines, check):
    return sorted((l for l in lines if l["check"] == check), key=lambda l: l["rank"])


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(300, 513), torch.nn.ReLU(), torch.nn.Linear(513, 10))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist2")
    from sentry.cli import main

    main(["keygen", str(out / "key.pem"), "--public-key", str(out / "key.pub.pem")])
    return out, torchrun(out, 2, "dtensor", "fsdp", "spread", "dead_rank")


def test_dtensor_shards_fold_to_the_single_process_roots(two_ranks):
    _, lines = two_ranks
    got = by_check(lines, "dtensor_1d")
    assert [l["rank"] for l in got] == [0, 1]
    assert all(l["same"] for l in got), got  # aligned, unaligned, bf16, tiny, Shard(1) (redistributed)
    # O(log n) hashes per tensor: far below the 4.7 MB of tensor bytes a gather would move
    assert all(l["bytes_sent"] < 20_000 for l in got)


def test_fsdp2_model_verifies_and_signs_both_ways(two_ranks):
    out, lines = two_ranks
    assert [l["ok"] for l in by_check(lines, "fsdp_verifies_whole_signature")] == [True, True]
    assert [l["exists"] for l in by_check(lines, "fsdp_signed")] == [True, True]
    assert by_check(lines, "whole_verifies_sharded_signature") == [{"rank": 0, "check": "whole_verifies_sharded_signature", "ok": True}]
    sentry.verify_model(mlp(), out / "key.pub.pem", out / "sharded.sig")  # here too, outside torchrun


def test_replicas_hash_their_whole_copies_by_default_and_share_the_work_when_spread(two_ranks):
    _, lines = two_ranks
    default, spread = ([l for l in by_check(lines, "replicated") if l["spread"] is s] for s in (False, True))
    assert all(l["same"] for l in default + spread)  # both give the single-process roots
    total = default[0]["total"]
    assert [l["bytes_hashed"] for l in default] == [total, total]
    assert sum(l["bytes_hashed"] for l in spread) == total  # the parts cover the bytes once
    assert all(abs(l["bytes_hashed"] - total / 2) <= 4096 * 5 for l in spread)  # halves, cut on leaf boundaries


def test_a_plain_model_verifies_with_spread_replicas_and_what_it_leaves_unchecked(two_ranks):
    _, lines = two_ranks
    assert [l["ok"] for l in by_check(lines, "ddp_spread_verifies")] == [True, True]
    assert all(l["shown"] for l in by_check(lines, "ddp_spread_verifies"))  # what it left unchecked is said
    tampered = by_check(lines, "ddp_spread_tampered")
    own = [l for l in tampered if l["where"] == "own_part"]
    assert [l["raised"] for l in own] == [True, True]  # every rank fails, naming the tensor
    assert all(any("0.weight" in line for line in l["lines"]) for l in own)
    # the documented trade-off: a copy's bytes that another replica hashed are not checked
    assert [l["raised"] for l in tampered if l["where"] == "other_part"] == [False, False]


def test_a_changed_shard_fails_on_every_rank_naming_the_tensor(two_ranks):
    _, lines = two_ranks
    got = by_check(lines, "tampered_shard")
    assert [l["raised"] for l in got] == [True, True]
    for l in got:  # rank 0 holds no changed byte and still names the tensor
        assert "2.weight" in l["message"]
        assert any("2.weight" in line for line in l["lines"]) and not any("0.weight" in line for line in l["lines"])


def test_a_rank_that_never_joins_gives_a_timeout_error(two_ranks):
    _, lines = two_ranks
    (got,) = by_check(lines, "dead_rank")
    assert got["raised"] and "did not answer within 2 s" in got["message"]
    assert got["seconds"] < 7  # the other rank left after 8 s: the error came from the timeout


def test_dcp_saved_by_two_ranks_verifies_against_a_single_process_signature(two_ranks, tmp_path):
    out, _ = two_ranks
    ckpt = out / "dcp"
    assert sorted(p.name for p in ckpt.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    report = sentry.verify_model(ckpt, out / "key.pub.pem", out / "whole.sig")
    assert report.checked == len(mlp().state_dict()) == 4 and not report.uncovered
    # and the reverse: the DCP directory signed, the model in one process verified against it
    sig = sentry.sign_model(ckpt, out / "key.pem", tmp_path / "dcp.sig")
    sentry.verify_model(mlp(), out / "key.pub.pem", sig)
    with pytest.raises(VerificationError, match="0.bias"):
        model = mlp()
        with torch.no_grad():
            model[0].bias[-1] += 1
        sentry.verify_model(model, out / "key.pub.pem", sig)


def test_dcp_in_safetensors_format_verifies(two_ranks):
    out, _ = two_ranks
    consolidated = sorted((out / "hf").rglob("*.safetensors"))
    assert consolidated
    full = [p for p in consolidated if p.parent.name != "sharded"]
    sentry.verify_model(full[0], out / "key.pub.pem", out / "whole.sig")


def test_a_2d_mesh_on_four_ranks(tmp_path):
    """(Shard(0), Shard(0)), (Shard(0), Replicate), (Replicate, Shard(0)), (Shard(0), Shard(1)) and
    the 1-D placements over four ranks fold to the single-process roots; replicas that disagree
    fail on every rank, naming the tensor."""
    lines = torchrun(tmp_path, 4, "mesh2d", "dtensor")
    assert [l["same"] for l in by_check(lines, "dtensor_2d")] == [True] * 4
    assert [l["same"] for l in by_check(lines, "dtensor_1d")] == [True] * 4
    for l in by_check(lines, "replicas_disagree"):
        assert l["raised"] and "tensor 'unaligned': two holders of " in l["message"]
    assert len(by_check(lines, "replicas_disagree")) == 4


@pytest.mark.parametrize("start,end,count", [(0, 10_000, 2), (100, 9_000, 3), (0, 5, 4), (4096, 3 * 4096 + 7, 2),
                                             (123, 10 ** 9 + 17, 7)])
def test_spread_parts_cover_the_range_once_cut_on_leaf_boundaries(start, end, count):
    from sentry.hashing.sharded import spread_part

    parts = [spread_part(start, end, j, count, 4096) for j in range(count)]
    assert parts[0][0] == start and parts[-1][1] == end
    assert all(parts[j][1] == parts[j + 1][0] for j in range(count - 1))
    assert all(lo <= hi for lo, hi in parts)
    assert all(cut in (start, end) or cut % 4096 == 0 for _, cut in parts)
    if end - start > 4096 * count * 8:  # long ranges: parts within a leaf of even
        assert max(hi - lo for lo, hi in parts) - min(hi - lo for lo, hi in parts) <= 2 * 4096
