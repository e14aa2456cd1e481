"""bench/verify_overhead.py runs (a small model), and its GPU stub is undone when it is done."""
from pathlib import Path

import pytest
from support import REPO

torch = pytest.importorskip("torch")

BENCH = REPO / "bench"


def test_verify_overhead_runs_and_leaves_sentry_as_it_was(monkeypatch, capsys):
    import sentry.hashing
    from sentry.hashing import cuda

    originals = (sentry.hashing.resolve_device, cuda._Gpu, torch.cuda.current_stream)
    monkeypatch.syspath_prepend(str(BENCH))
    import verify_overhead

    assert verify_overhead.main(["--layers", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "12 bf16 tensors" in out and "cuda._run (launch loop)" in out
    assert (sentry.hashing.resolve_device, cuda._Gpu, torch.cuda.current_stream) == originals


def test_library_never_names_the_stub():
    import sentry

    library = Path(sentry.__file__).parent
    assert not [p for p in library.rglob("*.py") if any(w in p.read_text() for w in ("gpu_stub", "StubGpu", "StandIn"))]
