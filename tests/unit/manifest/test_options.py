"""Options: one frozen object per call, from its keyword arguments else the configured defaults."""
from __future__ import annotations

import pytest

from sentry.errors import SentryError
from sentry.hashing.params import HashParams
from sentry.manifest.ignore import DEFAULT_IGNORES
from sentry.manifest.options import Defaults, Options


def test_a_call_resolves_once_from_its_arguments_else_the_defaults():
    defaults = Defaults()
    assert Options.resolve(defaults) == Options()
    assert Options.resolve(defaults).device == "auto" and Options().params == HashParams()
    defaults.set(leaf_size=1024, device="cpu", distributed_timeout=5)
    o = Options.resolve(defaults, ignore=["*.tmp"], default_ignores=False)
    assert (o.params.leaf_size, o.device, o.distributed_timeout, o.ignore, o.default_ignores) == \
        (1024, "cpu", 5, ("*.tmp",), ())
    given = Options.resolve(defaults, leaf_size=256, device="cuda", distributed_timeout=1)
    assert (given.params.leaf_size, given.device, given.distributed_timeout) == (256, "cuda", 1)
    signed = HashParams(leaf_size=8192, max_chunks=1)  # a signature's parameters win over any leaf size
    assert Options.resolve(defaults, params=signed, leaf_size=256).params == signed
    assert Options.resolve(defaults, default_ignores=[".git"]).default_ignores == (".git",)
    assert Options.resolve(defaults).default_ignores == DEFAULT_IGNORES
    with pytest.raises(AttributeError):
        o.device = "cpu"  # frozen: resolved once, then only read


def test_defaults_set_clear_and_refuse_unknown_names():
    defaults = Defaults()
    defaults.set(device="cpu", key="k.pem")
    assert defaults.pick("device", None) == "cpu" and defaults.pick("device", "cuda") == "cuda"
    defaults.set(device=None)
    assert defaults.pick("device", None) is None and defaults.pick("key", None) == "k.pem"
    with pytest.raises(SentryError, match="unknown setting.*colour"):
        defaults.set(colour="blue", device="cuda")
    assert defaults.pick("device", None) is None  # nothing is set when one name is unknown
    with pytest.raises(SentryError, match="leaf size must be a power of two"):
        Options.resolve(Defaults(), leaf_size=1000)


def test_a_dataset_resolves_without_default_ignores_a_model_with_them(tmp_path, keys):
    """The same directory: every file is a sample of a dataset (its .git too), not of a model."""
    import sentry.api

    (tmp_path / "d" / ".git").mkdir(parents=True)
    (tmp_path / "d" / ".git" / "HEAD").write_bytes(b"ref")
    (tmp_path / "d" / "a.bin").write_bytes(b"a")
    sentry.sign_dataset(tmp_path / "d", keys[0], tmp_path / "d.sig")
    sentry.sign_samples(tmp_path / "d", keys[0], tmp_path / "d.prov.jsonl")
    _, claim, _ = sentry.api.dataset_claim(None, keys[1], tmp_path / "d.sig")
    assert claim.samples == 2 and claim.default_ignores == ()
    assert len((tmp_path / "d.prov.jsonl").read_bytes().splitlines()) == 1 + 2  # header + both samples
    assert [it.name for it in sentry.hash_artifact(tmp_path / "d").items] == ["a.bin"]
