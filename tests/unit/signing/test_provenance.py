"""Per-sample provenance: each source signs every sample it contributes; verification and the
loaders check those signatures batch by batch and name the source of a bad sample."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import numpy as np
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from support import flip_bit, make_keys, run_cli, verification_fails

import sentry
from sentry import SentryError, VerificationError
from sentry.hashing.merkle import merkle_root
from sentry.signing import load_public_key
from sentry.signing import provenance as prov

datasets = pytest.importorskip("sklearn.datasets")
Image = pytest.importorskip("PIL.Image")
LAB_A, LAB_B = range(0, 5), range(5, 10)  # the digit classes each source contributes


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Two sources of scikit-learn's digits as PNGs (classes 0-4 from lab-a, 5-9 from lab-b),
    each with its own key and provenance file, and their union assembled and signed by an owner."""
    base = tmp_path_factory.mktemp("provenance")
    bunch = datasets.load_digits()
    images = (bunch.images * 255 / 16).astype(np.uint8)
    for i, (img, label) in enumerate(zip(images, bunch.target)):
        d = base / ("lab-a" if label in LAB_A else "lab-b") / str(label)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:04d}.png")
    out = {"base": base}
    for lab in ("lab-a", "lab-b"):
        out[lab] = make_keys(base, lab)
        assert sentry.sign_samples(base / lab, key=out[lab][0]) == base / f"{lab}.provenance.jsonl"
    out["owner"] = make_keys(base, "owner")
    return out


@pytest.fixture
def assembled(sources, tmp_path):
    """A private copy of the union of both sources, signed by the owner, to tamper with."""
    data = tmp_path / "data"
    for lab in ("lab-a", "lab-b"):
        shutil.copytree(sources["base"] / lab, data, dirs_exist_ok=True)
    sentry.sign_dataset(data, key=sources["owner"][0])
    return data


def both(sources):
    return {sources["base"] / f"{lab}.provenance.jsonl": sources[lab][1] for lab in ("lab-a", "lab-b")}


def records(path):
    lines = path.read_bytes().splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


# -- the file and its signatures --------------------------------------------------------------------
def test_every_signature_is_standard_ecdsa_over_the_documented_message(sources):
    """Checked with `cryptography` (OpenSSL) over the message bytes, the root recomputed here."""
    base = sources["base"]
    head, recs = records(base / "lab-a.provenance.jsonl")
    public = load_public_key(sources["lab-a"][1])
    assert head["leaf_size"] == 4096 and head["type"] == prov.PROVENANCE_TYPE
    assert len(recs) == sum(1 for p in (base / "lab-a").rglob("*.png"))
    for rec in recs[:50]:
        data = (base / "lab-a" / rec["name"]).read_bytes()
        root = merkle_root(data, 4096)
        assert rec["root"] == root.hex() and rec["size"] == len(data)
        message = b"sentry sample provenance v1\x00" + (4096).to_bytes(4, "big") + root
        sig = bytes.fromhex(rec["signature"])
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        public.verify(der, message, ec.ECDSA(hashes.SHA256()))
        with pytest.raises(InvalidSignature):
            public.verify(der, message[:-1] + bytes([message[-1] ^ 1]), ec.ECDSA(hashes.SHA256()))


def test_openssl_command_line_verifies_a_sample_signature(sources, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    base = sources["base"]
    rec = records(base / "lab-b.provenance.jsonl")[1][0]
    sig = bytes.fromhex(rec["signature"])
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    (tmp_path / "sig.der").write_bytes(der)
    (tmp_path / "msg").write_bytes(prov.sample_message(4096, bytes.fromhex(rec["root"])))
    run = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(sources["lab-b"][1]), "-signature",
                          str(tmp_path / "sig.der"), str(tmp_path / "msg")], capture_output=True, text=True)
    assert run.returncode == 0 and "Verified OK" in run.stdout


def test_prefix_places_the_samples_and_is_checked(sources, tmp_path):
    out = sentry.sign_samples(sources["base"] / "lab-a", key=sources["lab-a"][0], output=tmp_path / "a.jsonl",
                              prefix="digits/lab-a/")
    assert all(r["name"].startswith("digits/lab-a/") for r in records(out)[1])
    for bad in ("/abs/", "../up/", "no-slash", "a//b/"):
        with pytest.raises(SentryError, match="prefix"):
            sentry.sign_samples(sources["base"] / "lab-a", key=sources["lab-a"][0], output=tmp_path / "b.jsonl",
                                prefix=bad)


def test_a_provenance_file_written_inside_the_directory_is_not_a_sample(sources, tmp_path):
    d = tmp_path / "lab-a"
    shutil.copytree(sources["base"] / "lab-a", d)
    out = sentry.sign_samples(d, key=sources["lab-a"][0], output=d / "lab-a.provenance.jsonl")
    assert records(out)[1] == records(sources["base"] / "lab-a.provenance.jsonl")[1]


# -- verify_dataset ---------------------------------------------------------------------------------
def test_assembled_dataset_verifies_with_both_sources(sources, assembled):
    report = sentry.verify_dataset(assembled, public_key=sources["owner"][1], provenance=both(sources))
    assert report.ok and report.checked == 1797


def test_any_mapping_of_sources_loads_as_a_dict_does(sources):
    from types import MappingProxyType

    as_dict = sentry.load_provenance(both(sources))
    as_proxy = sentry.load_provenance(MappingProxyType(both(sources)))  # was read as pairs: a TypeError traceback
    assert [s.name for s in as_proxy.sources] == [s.name for s in as_dict.sources] == ["lab-a", "lab-b"]
    assert as_proxy.vouches == as_dict.vouches and as_proxy.leaf_size == as_dict.leaf_size


def test_a_tampered_sample_names_its_source(sources, assembled):
    bad = sorted((assembled / "7").glob("*.png"))[3]
    flip_bit(bad, bad.stat().st_size // 2)
    report = verification_fails(sentry.verify_dataset, assembled, public_key=sources["owner"][1],
                                provenance=both(sources))
    (change,) = report.changed
    assert change.label == f"sample 7/{bad.name}" and change.source == "lab-b"
    assert change.to_json()["source"] == "lab-b" and "(from source lab-b)" in str(change)


def test_an_owner_who_signs_a_swapped_sample_is_caught_by_its_source(sources, assembled):
    """The dataset signature covers the swap; only the source's signature can refuse it."""
    name = sorted((assembled / "2").glob("*.png"))[0]
    name.write_bytes((assembled / "3" / sorted(p.name for p in (assembled / "3").glob("*.png"))[0]).read_bytes())
    sentry.sign_dataset(assembled, key=sources["owner"][0])
    assert sentry.verify_dataset(assembled, public_key=sources["owner"][1]).ok  # without provenance: fine
    report = verification_fails(sentry.verify_dataset, assembled, public_key=sources["owner"][1],
                                provenance=both(sources))
    (change,) = report.changed
    assert change.label == f"sample 2/{name.name}" and change.reasons == ("its content does not match its provenance signature",)
    assert change.source == "lab-a"


def test_a_sample_no_source_signed_is_refused(sources, assembled):
    (assembled / "extra.png").write_bytes(b"\x89PNG not from any source")
    sentry.sign_dataset(assembled, key=sources["owner"][0])
    report = verification_fails(sentry.verify_dataset, assembled, public_key=sources["owner"][1],
                                provenance=both(sources))
    assert [(c.label, c.reasons, c.source) for c in report.changed] == [
        ("sample extra.png", ("no trusted source signed it",), None)]


def test_only_the_sources_given_are_trusted(sources, assembled):
    report = verification_fails(sentry.verify_dataset, assembled, public_key=sources["owner"][1],
                                provenance={sources["base"] / "lab-a.provenance.jsonl": sources["lab-a"][1]})
    assert len(report.changed) == sum(1 for _ in (assembled).rglob("*.png") if _.parent.name in "56789")
    assert {c.reasons for c in report.changed} == {("no trusted source signed it",)}


def test_a_forged_signature_is_named(sources, assembled, tmp_path):
    path = tmp_path / "lab-a.provenance.jsonl"
    lines = (sources["base"] / "lab-a.provenance.jsonl").read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[10])
    sig = bytearray.fromhex(rec["signature"])
    sig[40] ^= 1
    lines[10] = lines[10].replace(rec["signature"].encode(), sig.hex().encode())
    path.write_bytes(b"".join(lines))
    report = verification_fails(sentry.verify_dataset, assembled, public_key=sources["owner"][1],
                                provenance={path: sources["lab-a"][1],
                                            sources["base"] / "lab-b.provenance.jsonl": sources["lab-b"][1]})
    (change,) = report.changed
    assert change.label == f"sample {rec['name']}"
    assert change.reasons == ("its provenance signature does not verify",) and change.source == "lab-a"


def test_a_single_sample_check_uses_the_provenance_too(sources, assembled):
    bad = sorted((assembled / "0").glob("*.png"))[0]
    flip_bit(bad, 100)
    name = f"0/{bad.name}"
    report = verification_fails(sentry.verify_dataset, assembled, public_key=sources["owner"][1],
                                samples=[name], provenance=both(sources))
    assert [(c.label, c.source) for c in report.changed] == [(f"sample {name}", "lab-a")]
    assert sentry.verify_dataset(assembled, public_key=sources["owner"][1], samples=["9/" + sorted(
        p.name for p in (assembled / "9").glob("*.png"))[0]], provenance=both(sources)).ok


# -- hostile or mismatched provenance ----------------------------------------------------------------
def test_a_provenance_file_given_with_another_key_is_refused(sources, assembled):
    with pytest.raises(VerificationError, match="another key than the one given for source lab-a"):
        sentry.verify_dataset(assembled, public_key=sources["owner"][1],
                              provenance={sources["base"] / "lab-a.provenance.jsonl": sources["lab-b"][1]})


def test_a_missing_provenance_file_is_an_input_error(sources, tmp_path):
    with pytest.raises(SentryError, match="per-sample provenance: .*nope.provenance.jsonl does not exist") as exc:
        sentry.load_provenance({tmp_path / "nope.provenance.jsonl": sources["lab-a"][1]})
    assert not isinstance(exc.value, VerificationError)


def test_a_sample_vouched_for_by_two_sources_is_refused(sources, tmp_path):
    copy = tmp_path / "again.provenance.jsonl"
    shutil.copy(sources["base"] / "lab-a.provenance.jsonl", copy)
    with pytest.raises(VerificationError, match="vouched for by two sources, lab-a and again"):
        sentry.load_provenance({sources["base"] / "lab-a.provenance.jsonl": sources["lab-a"][1],
                                copy: sources["lab-a"][1]})


def test_leaf_size_must_match_the_dataset(sources, assembled, tmp_path):
    out = sentry.sign_samples(sources["base"] / "lab-a", key=sources["lab-a"][0], output=tmp_path / "a.jsonl",
                              leaf_size=1024)
    with pytest.raises(SentryError, match="1024-byte leaves, the dataset with 4096"):
        sentry.verify_dataset(assembled, public_key=sources["owner"][1], provenance={out: sources["lab-a"][1]})


def _edited(sources, tmp_path, edit):
    lines = (sources["base"] / "lab-a.provenance.jsonl").read_bytes().splitlines(keepends=True)
    path = tmp_path / "lab-a.provenance.jsonl"
    path.write_bytes(b"".join(edit(lines)))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda ls: ls[:1] + ls[2:3] + ls[1:2] + ls[3:], "line 3 is out of name order"),
    (lambda ls: ls[:2] + ls[1:], "line 3 lists the sample twice"),
    (lambda ls: ls[:-1] + [ls[-1][:-1]], "does not end with a newline"),
    (lambda ls: ls[1:], "does not start with a Sentry provenance header"),
    (lambda ls: [], "is empty"),
    (lambda ls: ls[:1] + [ls[1].replace(b'{"name":"', b'{"name":"../')] + ls[2:], "outside the dataset"),
    (lambda ls: ls[:1] + [ls[1].replace(b'","root"', b'", "root"')] + ls[2:], "line 2 is not a canonical"),
    (lambda ls: ls[:1] + [ls[1].replace(b'"size":', b'"size":0')] + ls[2:], "line 2 is not a canonical"),
    (lambda ls: [ls[0].replace(b'"leaf_size":4096', b'"leaf_size":04096')] + ls[1:], "provenance header"),
])
def test_hostile_provenance_files_are_refused_with_the_line(sources, tmp_path, edit, message):
    path = _edited(sources, tmp_path, edit)
    with pytest.raises(VerificationError, match=message):
        sentry.load_provenance({path: sources["lab-a"][1]})


def test_a_key_that_is_not_p256_is_refused(sources, tmp_path):
    from cryptography.hazmat.primitives import serialization

    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(SentryError, match="P-256"):
        sentry.load_provenance({sources["base"] / "lab-a.provenance.jsonl": p384.public_key()})
    pem = tmp_path / "p384.pem"
    pem.write_bytes(p384.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    with pytest.raises(SentryError, match="P-256"):
        sentry.sign_samples(sources["base"] / "lab-a", key=pem, output=tmp_path / "x.jsonl")


def test_a_dataset_root_has_no_samples_to_check(sources, assembled):
    with pytest.raises(SentryError, match="checked on the samples"):
        sentry.verify_dataset(b"\0" * 32, public_key=sources["owner"][1], signature=assembled.with_name("data.sig"),
                              provenance=both(sources))


# -- loaders ----------------------------------------------------------------------------------------
def test_torch_loader_raises_at_the_batch_and_names_the_source(sources, assembled):
    import torch

    from sentry.data import VerifiedDataset, verified_dataloader

    dataset = VerifiedDataset(assembled, public_key=sources["owner"][1], provenance=both(sources))
    loader, hasher = verified_dataloader(dataset, batch_size=100)
    assert sum(len(y) for _, y in loader) == 1797
    assert sentry.verify_dataset(hasher.compute(), public_key=sources["owner"][1],
                                 signature=assembled.with_name("data.sig")).ok
    # A sample the owner re-signed but its source never did: the loader stops at its batch.
    victim = dataset.names[450]
    (assembled / victim).write_bytes((assembled / dataset.names[0]).read_bytes())
    sentry.sign_dataset(assembled, key=sources["owner"][0])
    dataset = VerifiedDataset(assembled, public_key=sources["owner"][1], provenance=both(sources))
    seen = 0
    with pytest.raises(VerificationError, match=f"sample {victim} failed verification: its content does not match "
                                                "its provenance signature \\(from source lab-a\\)"):
        for x, _ in verified_dataloader(dataset, batch_size=100)[0]:
            seen += len(x)
    assert seen == 400
    assert isinstance(x, torch.Tensor)


def test_the_dataset_pickles_for_spawned_workers(sources, assembled):
    import pickle

    from sentry.data import VerifiedDataset

    dataset = pickle.loads(pickle.dumps(VerifiedDataset(assembled, public_key=sources["owner"][1],
                                                        provenance=both(sources))))
    assert dataset[5][1] == 0 and dataset.hasher.provenance.source_of(dataset.names[5]) == "lab-a"


def test_torch_drop_policy_reports_the_source(sources, assembled):
    from sentry.data import VerifiedDataset, verified_dataloader

    bad = sorted((assembled / "8").glob("*.png"))[0]
    flip_bit(bad, 60)
    dataset = VerifiedDataset(assembled, public_key=sources["owner"][1], provenance=both(sources), policy="drop")
    with pytest.warns(UserWarning, match="from source lab-b"):
        loader, hasher = verified_dataloader(dataset, batch_size=256)
        assert sum(len(y) for _, y in loader) == 1796
    assert [(c.label, c.source) for c in hasher.report.changed] == [(f"sample 8/{bad.name}", "lab-b")]


def test_dali_cpu_loader_checks_each_batch_before_yielding_it(sources, assembled):
    pytest.importorskip("nvidia.dali")
    from sentry.data import get_image_dataloader

    loader, hasher = get_image_dataloader(assembled, 128, device="cpu", public_key=sources["owner"][1],
                                          provenance=both(sources))
    assert sum(len(batch[0]["label"]) for batch in loader) == 1797
    victim = loader.names[700]
    (assembled / victim).write_bytes((assembled / loader.names[1]).read_bytes())
    sentry.sign_dataset(assembled, key=sources["owner"][0])
    loader, _ = get_image_dataloader(assembled, 100, device="cpu", public_key=sources["owner"][1],
                                     provenance=both(sources), output="tuple")
    seen = 0
    with pytest.raises(VerificationError, match=f"sample {victim} failed.*source lab-a"):
        for _, y in loader:
            seen += len(y)
    assert seen == 700


@pytest.mark.gpu
def test_gpu_signature_check_agrees_with_the_cpu(sources, assembled):
    from sentry.crypto import cuda_available

    if not cuda_available():
        pytest.skip("needs CuPy and a GPU")
    from dataclasses import replace

    from sentry.manifest.dataset import hash_samples

    loaded = sentry.load_provenance(both(sources))
    items = hash_samples(assembled, sentry.load_signed_dataset(assembled, sources["owner"][1]).params)
    items[5] = replace(items[5], root=hashlib.sha256(b"x").digest())
    assert loaded.check(items, "cuda") == loaded.check(items, "cpu")
    assert sum(r is not None for r in loaded.check(items, "cuda")) == 1


# -- command line -----------------------------------------------------------------------------------
def test_cli_sign_samples_and_verify_with_sources(sources, assembled, tmp_path):
    base = sources["base"]
    out = tmp_path / "a.jsonl"
    run = run_cli("sign-samples", base / "lab-a", "--key", sources["lab-a"][0], "-o", out, "-q")
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == (base / "lab-a.provenance.jsonl").read_bytes()  # RFC 6979: deterministic
    args = ["verify", assembled, "--dataset", "--public-key", sources["owner"][1], "-q",
            "--source", out, sources["lab-a"][1], "--source", base / "lab-b.provenance.jsonl", sources["lab-b"][1]]
    run = run_cli(*args)
    assert run.returncode == 0 and "OK: verified 1797" in run.stdout, run.stderr
    bad = sorted((assembled / "6").glob("*.png"))[0]
    flip_bit(bad, 70)
    run = run_cli(*args, "--json")
    assert run.returncode == 1
    (change,) = json.loads(run.stdout)["report"]["changed"]
    assert (change["kind"], change["name"], change["source"]) == ("sample", f"6/{bad.name}", "lab-b")
    run = run_cli("verify", assembled, "--public-key", sources["owner"][1], "--source", out, sources["lab-a"][1])
    assert run.returncode == 2 and "add --dataset" in run.stderr
    run = run_cli("sign-samples", base / "lab-a", "--key", sources["lab-a"][1], "-o", tmp_path / "c.jsonl")
    assert run.returncode == 2 and run.stderr.startswith("sentry: ") and "Traceback" not in run.stderr
