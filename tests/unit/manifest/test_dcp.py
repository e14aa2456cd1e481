"""DCP checkpoints in one process: tensor roots from .metadata's chunks equal the in-memory roots;
a hostile .metadata pickle is never executed; changed, truncated or unexplained bytes fail."""
import pickle
import random

import pytest

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")
import sentry  # noqa: E402
from sentry.cli import main  # noqa: E402
from sentry.errors import SentryError, VerificationError  # noqa: E402
from sentry.hashing.cpu import digest_bytes  # noqa: E402
from sentry.hashing.params import HashParams  # noqa: E402
from sentry.hashing.pieces import Pieces, plan_range  # noqa: E402


def _pieces_digest(data: bytes, cuts, params):
    """Fold the pieces of ``data`` cut at ``cuts``, each range hashed on its own."""
    ls, pieces = params.leaf_size, Pieces("t", len(data), params)
    for a, b in zip(cuts, cuts[1:]):
        plan = plan_range(len(data), a, b, params)
        assert len(plan.edges) <= 2
        for r in plan.regions:
            pieces.add_region(r, digest_bytes(data[r.lo * ls: min(r.hi * ls, len(data))], r.params(ls)).chunks)
        for s, e in plan.edges:
            pieces.add_bytes(s, data[s:e])
    return pieces.fold()


def test_pieces_of_any_ranges_fold_to_the_engine_digest():
    rng = random.Random(7)
    for _ in range(150):
        ls = rng.choice([64, 4096])
        params = HashParams(ls, rng.choice([1, 3, 16, 4096]))
        size = rng.choice([0, 1, ls - 1, ls, ls + 1, rng.randrange(300 * ls)])
        data = rng.randbytes(size)
        cuts = sorted([0, size] + [rng.randrange(size + 1) for _ in range(rng.randrange(5))])
        assert _pieces_digest(data, cuts, params) == digest_bytes(data, params), (ls, params, size, cuts)


def test_pieces_refuse_gaps_and_disagreeing_replicas():
    params, data = HashParams(64), bytes(range(200))
    pieces = Pieces("w", 200, params)
    pieces.add_bytes(0, data[:10])
    with pytest.raises(SentryError, match="'w'.*do not cover bytes 0..63"):
        pieces.fold()
    pieces = Pieces("w", 200, params)
    pieces.add_block(0, 1, b"a" * 32)
    with pytest.raises(SentryError, match="two holders of leaves 0..0 hold different bytes"):
        pieces.add_block(0, 1, b"b" * 32)


def state():
    g = torch.Generator().manual_seed(3)
    return {"w": torch.randn(1001, 77, generator=g), "b": torch.arange(5), "h": torch.randn(9, 3, generator=g).half()}


@pytest.fixture
def ckpt(tmp_path):
    keys = tmp_path / "key.pem", tmp_path / "key.pub.pem"
    main(["keygen", str(keys[0]), "--public-key", str(keys[1])])
    path = tmp_path / "ckpt"
    dcp.save(state(), checkpoint_id=path, no_dist=True)
    sig = sentry.sign_model(state(), keys[0], tmp_path / "mem.sig")
    return path, keys, sig


def test_dcp_directory_verifies_against_the_model_in_memory_and_by_cli(ckpt, tmp_path, capsys):
    path, (key, pub), sig = ckpt
    report = sentry.verify_model(path, pub, sig)
    assert report.checked == 3 and not report.uncovered
    assert main(["sign", str(path), "--key", str(key), "--signature", str(tmp_path / "dir.sig")]) == 0
    assert main(["verify", str(path), "--public-key", str(pub), "--signature", str(tmp_path / "dir.sig")]) == 0
    sentry.verify_model(state(), pub, tmp_path / "dir.sig")


def _where(path, fqn):
    """(file, offset) of the middle of tensor ``fqn``'s raw bytes inside the checkpoint."""
    raw = state()[fqn].numpy().tobytes()
    for file in sorted(path.glob("*.distcp")):
        at = file.read_bytes().find(raw)
        if at >= 0:
            return file, at + len(raw) // 2
    raise AssertionError(f"{fqn} not stored as raw bytes")


def test_a_changed_chunk_fails_naming_the_tensor_and_a_truncated_one_is_refused(ckpt):
    path, (_, pub), sig = ckpt
    file, at = _where(path, "w")
    raw = bytearray(file.read_bytes())
    raw[at] ^= 1
    file.write_bytes(raw)
    with pytest.raises(VerificationError, match="tensor w"):
        sentry.verify_model(path, pub, sig)
    file.write_bytes(raw[: at - 100])
    with pytest.raises(SentryError, match="ends before the chunk|not a saved tensor"):
        sentry.verify_model(path, pub, sig)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_hostile_metadata_pickle_is_never_executed(ckpt, tmp_path):
    path, (key, pub), sig = ckpt
    dir_sig = sentry.sign_model(path, key, tmp_path / "dir.sig")
    victim = tmp_path / "pwned"
    (path / ".metadata").write_bytes(pickle.dumps(_Evil(str(victim))))
    # against a tensor signature: the allowlist unpickler refuses the unknown global
    with pytest.raises(SentryError, match=r"refers to (io|builtins)\.open, which a DCP checkpoint.s metadata never holds"):
        sentry.verify_model(path, pub, sig)
    # against a signature of the directory: the file's root differs, so it is not even parsed
    with pytest.raises(VerificationError) as failed:
        sentry.verify_model(path, pub, dir_sig)
    lines = failed.value.report.lines()
    assert "missing: tensor w (in .metadata)" in lines
    assert any(line.startswith("changed: file .metadata: ") and line.endswith("content differs") for line in lines)
    with pytest.raises(SentryError, match=r"(io|builtins)\.open"):
        sentry.sign_model(path, key, tmp_path / "other.sig")
    assert not victim.exists()


def test_non_tensor_entries_leave_their_files_uncovered(tmp_path, ckpt):
    _, (key, pub), sig = ckpt
    path = tmp_path / "with_bytes"
    dcp.save({**state(), "notes": {"step": 3}}, checkpoint_id=path, no_dist=True)
    with pytest.raises(VerificationError, match="not covered by the signature"):
        sentry.verify_model(path, pub, sig)
    report = sentry.verify_model(path, pub, sig, allow_uncovered=True)
    assert ".metadata" in " ".join(report.uncovered)


def test_a_metadata_size_larger_than_the_stored_bytes_is_refused_before_allocating(ckpt):
    from torch.distributed.checkpoint.filesystem import FileSystemReader

    path, (_, pub), sig = ckpt
    md = FileSystemReader(str(path)).read_metadata()
    md.state_dict_metadata["h"].size = torch.Size([10**6, 10**6])  # 4 TB of half floats
    (path / ".metadata").write_bytes(pickle.dumps(md))
    with pytest.raises(SentryError, match="tensor 'h' is larger than the bytes stored for it"):
        sentry.verify_model(path, pub, sig)
