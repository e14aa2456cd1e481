"""The pipeline natively (issue 11): dataset agent -> trainer -> inferencer served over the Open
Inference Protocol v2 to a real client (tritonclient), and each agent refusing what it must."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support import REPO, flip_bit, make_keys, tensor_offset

import sentry
from agents import dataset as dataset_agent
from agents import inferencer as inferencer_agent
from agents import trainer as trainer_agent
from agents.common import run

ROOT = REPO


class NeverServe:
    """Stands in for the HTTP server where an agent must refuse before serving: a test fails, never hangs."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("the inferencer went on to serve")


def call(agent, *argv, env=None):
    """Run an agent in this process as its command line does: (exit code, stdout, stderr)."""
    import torch

    out, err = io.StringIO(), io.StringIO()
    old, threads = dict(os.environ), torch.get_num_threads()  # the trainer sets its own
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                pytest.MonkeyPatch.context() as patch:
            patch.setattr(inferencer_agent, "ThreadingHTTPServer", NeverServe)
            code = run(agent.AGENT, agent.main, [str(a) for a in argv])
    except SystemExit as exc:  # argparse: usage errors and --help
        code = exc.code
    finally:
        os.environ.clear()
        os.environ.update(old)
        torch.set_num_threads(threads)
    return code, out.getvalue(), err.getvalue()


def agent_process(module, *argv, **kw):
    return subprocess.Popen([sys.executable, "-m", f"agents.{module}", *map(str, argv)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Digits built and signed by the dataset agent, a CNN trained on them for 3 epochs and signed."""
    tmp = tmp_path_factory.mktemp("pipeline")
    owner, owner_pub = make_keys(tmp, "owner")
    trainer, trainer_pub = make_keys(tmp, "trainer")
    data = tmp / "digits"
    code, _, err = call(dataset_agent, "--out", data, env={"SENTRY_KEY_FILE": str(owner)})
    assert code == 0, err
    ckpt = tmp / "ckpt" / "digits.safetensors"
    code, out, err = call(trainer_agent, "--dataset", data, "--out", ckpt, "--key", trainer, "--epochs", 3,
                          env={"SENTRY_DATASET_PUBLIC_KEY_FILE": str(owner_pub)})
    assert code == 0, err
    return dict(tmp=tmp, owner=owner, owner_pub=owner_pub, trainer=trainer, trainer_pub=trainer_pub, data=data,
                ckpt=ckpt, sig=Path(f"{ckpt}.sig"), data_sig=tmp / "digits.sig", out=out, err=err)


def test_dataset_agent_builds_signed_class_folders(pipeline):
    data = pipeline["data"]
    assert sorted(p.name for p in data.iterdir()) == [str(d) for d in range(10)]
    assert len(list(data.glob("*/*.png"))) == 1797
    report = sentry.verify_dataset(data, public_key=pipeline["owner_pub"])
    assert report.checked == 1797


def test_trainer_reaches_90_percent_and_prints_rates(pipeline):
    out = pipeline["out"]
    accuracy = float(re.search(r"accuracy: ([\d.]+)%", out).group(1))
    assert accuracy > 90, out
    assert re.search(r"loading: \d+ samples/s verified, \d+ samples/s unverified", out), out
    assert "every sample of" in pipeline["err"] and "signed checkpoint" in pipeline["err"]


def test_checkpoint_signature_links_the_dataset(pipeline):
    report = sentry.verify_model(pipeline["ckpt"], public_key=pipeline["trainer_pub"])
    link = sentry.dataset_link(pipeline["data_sig"], pipeline["owner_pub"])
    assert report.training_data == [link]
    assert link.root == sentry.load_signed_dataset(pipeline["data"], pipeline["owner_pub"]).claim.root.hex()


def _wait_for_serving(proc) -> str:
    """The URL the inferencer logs once it serves (its stderr, read until then)."""
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"serving \S+ on http://([\d.]+:\d+)", line)
        if match:
            return match.group(1)
    proc.kill()
    raise AssertionError("the inferencer did not start serving:\n" + "".join(lines))


def test_inferencer_serves_oip_v2_to_tritonclient(pipeline):
    import tritonclient.http as http
    from sklearn.datasets import load_digits
    from tritonclient.utils import InferenceServerException

    root = sentry.dataset_link(pipeline["data_sig"], pipeline["owner_pub"]).root
    proc = agent_process("inferencer", "--model", pipeline["ckpt"], "--public-key", pipeline["trainer_pub"],
                         "--dataset-root", root, "--dataset-signature", pipeline["data_sig"],
                         "--dataset-public-key", pipeline["owner_pub"], "--host", "127.0.0.1", "--port", 0)
    try:
        url = _wait_for_serving(proc)
        client = http.InferenceServerClient(url)
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
        meta = client.get_model_metadata("digits")
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
        assert {o["name"] for o in meta["outputs"]} == {"output", "probabilities", "class"}
        report = sentry.verify_model(pipeline["ckpt"], public_key=pipeline["trainer_pub"])
        verified = meta["sentry"]
        assert verified["manifest_root"] == report.root and verified["dataset_root"] == root
        assert verified["dataset_root_pinned"] is True
        assert verified["key_fingerprint"] == sentry.signing.public_key_hint(
            sentry.signing.load_public_key(pipeline["trainer_pub"]))

        digits = load_digits()
        x = (np.rint(digits.images[:40] * 255 / 16) / 255).astype(np.float32).reshape(40, 1, 8, 8)
        for binary in (False, True):  # JSON tensors, and Triton's binary tensor extension
            tensor = http.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            outputs = [http.InferRequestedOutput(n, binary_data=binary) for n in ("class", "probabilities")]
            result = client.infer("digits", [tensor], outputs=outputs)
            assert (result.as_numpy("class") == digits.target[:40]).mean() > 0.9
            assert np.allclose(result.as_numpy("probabilities").sum(1), 1, atol=1e-5)
        wrong = http.InferInput("input", [1, 1, 4, 4], "FP32")
        wrong.set_data_from_numpy(np.zeros((1, 1, 4, 4), np.float32))
        with pytest.raises(InferenceServerException, match="input shape"):
            client.infer("digits", [wrong])
        for body, why in HOSTILE_REQUESTS:
            status, answer = _post(url, body)
            assert status == 400 and why in answer["error"], (body, answer)
        assert _post(url, b"{}", path="/v2/models/other/infer")[0] == 404
        assert client.is_server_ready()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


GOOD_INPUT = {"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.5] * 64}
HOSTILE_REQUESTS = [
    (b"not json", "not a JSON inference request"),
    (b"[1]", "not a JSON object"),
    (b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [NaN]}]}',
     "not a JSON inference request"),
    (json.dumps({"inputs": [dict(GOOD_INPUT, data=[1e39] * 64)]}).encode(), "not finite"),
    (json.dumps({"inputs": [dict(GOOD_INPUT, data=[[0.5]] * 63)]}).encode(), "holds 63 values"),
    (json.dumps({"inputs": [dict(GOOD_INPUT, data=["x"] * 64)]}).encode(), "list of numbers"),
    (json.dumps({"inputs": [dict(GOOD_INPUT, datatype="FP64")]}).encode(), "datatype FP32"),
    (json.dumps({"inputs": [dict(GOOD_INPUT, shape=[5000, 1, 8, 8])]}).encode(), "input shape"),
    (json.dumps({"inputs": [GOOD_INPUT], "parameters": [1]}).encode(), "parameters must be an object"),
    (json.dumps({"inputs": [GOOD_INPUT], "outputs": [{"name": "secret"}]}).encode(), "unknown output"),
    (json.dumps({"inputs": [dict(GOOD_INPUT, parameters={"binary_data_size": 256})]}).encode(),
     "binary input must be 256 bytes"),
]


def _post(url, body: bytes, path="/v2/models/digits/infer"):
    import http.client

    connection = http.client.HTTPConnection(url, timeout=30)
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    return response.status, answer


def test_tampered_sample_stops_the_trainer(pipeline, tmp_path):
    """Case: a sample changed between the dataset agent and the trainer."""
    data = tmp_path / "digits"
    shutil.copytree(pipeline["data"], data)
    for suffix in (".sig", ".samples.jsonl"):
        shutil.copy(pipeline["tmp"] / f"digits{suffix}", tmp_path / f"digits{suffix}")
    victim = data / "3" / "00007.png"
    flip_bit(victim, victim.stat().st_size - 20)
    ckpt = tmp_path / "m.safetensors"
    proc = agent_process("trainer", "--dataset", data, "--dataset-public-key", pipeline["owner_pub"],
                         "--out", ckpt, "--key", pipeline["trainer"], "--epochs", 1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"sentry_trainer: refused: training stopped at epoch 1, batch \d+ of dataset .*: "
                        r"sample 3/00007.png failed verification: content differs", last), err
    assert "Traceback" not in err and not ckpt.exists()


@pytest.fixture
def checkpoint_copy(pipeline, tmp_path):
    ckpt = tmp_path / "digits.safetensors"
    shutil.copy(pipeline["ckpt"], ckpt)
    shutil.copy(pipeline["sig"], f"{ckpt}.sig")
    return ckpt


def refused(*argv, code=1):
    result, out, err = call(inferencer_agent, *argv)
    assert result == code, err
    assert "serving" not in err and len(err.strip().splitlines()[-1]) < 400
    return err.strip().splitlines()[-1]


def test_inferencer_refuses_tampered_checkpoint(pipeline, checkpoint_copy):
    offset, _ = tensor_offset(checkpoint_copy, "classifier.3.weight")
    flip_bit(checkpoint_copy, offset + 5)
    last = refused("--model", checkpoint_copy, "--public-key", pipeline["trainer_pub"], "--port", 0)
    assert last.startswith("sentry_inferencer: refused: verification failed: 2 changed of 10 items; changed: file "
                           "digits.safetensors: content differs")


def test_inferencer_refuses_wrong_signer(pipeline, checkpoint_copy, tmp_path):
    _, other = make_keys(tmp_path, "other")
    last = refused("--model", checkpoint_copy, "--public-key", other, "--port", 0)
    assert "does not match the public key" in last


def test_inferencer_refuses_wrong_dataset_root(pipeline, checkpoint_copy):
    last = refused("--model", checkpoint_copy, "--public-key", pipeline["trainer_pub"], "--port", 0,
                   "--dataset-root", "ab" * 32)
    assert f"not the pinned {'ab' * 32}" in last
    assert "not 64 hex digits" in refused("--model", checkpoint_copy, "--public-key", pipeline["trainer_pub"],
                                          "--dataset-root", "xyz", code=2)


def test_inferencer_refuses_another_dataset_signature(pipeline, checkpoint_copy, tmp_path):
    """The same samples, the same root, but another signature (another leaf size): pinned, it fails."""
    data = tmp_path / "digits"
    shutil.copytree(pipeline["data"], data)
    resigned = sentry.sign_dataset(data, key=pipeline["owner"], leaf_size=2048)
    assert sentry.dataset_link(resigned, pipeline["owner_pub"]).root == sentry.dataset_link(
        pipeline["data_sig"], pipeline["owner_pub"]).root
    last = refused("--model", checkpoint_copy, "--public-key", pipeline["trainer_pub"], "--port", 0,
                   "--dataset-signature", resigned, "--dataset-public-key", pipeline["owner_pub"])
    assert "was not trained on the dataset that" in last


def test_inferencer_refuses_model_without_dataset_link(pipeline, checkpoint_copy):
    sentry.sign_model(checkpoint_copy, key=pipeline["trainer"])  # re-signed without training_data
    last = refused("--model", checkpoint_copy, "--public-key", pipeline["trainer_pub"], "--port", 0)
    assert "does not name the data the model was trained on" in last


def test_dataset_agent_npy_rerun_and_stray_file(tmp_path):
    owner, _ = make_keys(tmp_path, "owner")
    data = tmp_path / "d"
    first = call(dataset_agent, "--out", data, "--format", "npy", "--key", owner)
    assert first[0] == 0, first[2]
    again = call(dataset_agent, "--out", data, "--format", "npy", "--key", owner)
    assert again[0] == 0 and re.search(r"root \w+", first[2])[0] == re.search(r"root \w+", again[2])[0]
    assert np.load(data / "7" / "00000.npy").shape == (8, 8)
    (data / "stray.txt").write_text("x")
    code, _, err = call(dataset_agent, "--out", data, "--format", "npy", "--key", owner)
    assert code == 2 and "stray.txt, which the source does not produce" in err


def test_trainer_writes_over_its_own_checkpoint_only(pipeline, tmp_path):
    """Another file at --out (another model, anything) is refused before training; a checkpoint
    this trainer wrote is what a rerun replaces."""
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"not a checkpoint of the trainer")
    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, str(foreign), metadata={"sentry.agent": "someone else"})
    for out in (other, foreign):
        before = out.read_bytes()
        code, _, err = call(trainer_agent, "--dataset", pipeline["data"], "--out", out, "--key", pipeline["trainer"],
                            "--dataset-public-key", pipeline["owner_pub"], "--epochs", 1)
        assert code == 2 and "exists and is not a checkpoint this trainer wrote" in err
        assert out.read_bytes() == before
    assert trainer_agent._written_by_trainer(pipeline["ckpt"])


def test_dataset_agent_never_builds_into_a_directory_of_other_files(tmp_path):
    """A directory it did not build (no signature beside it) is refused before a sample is written."""
    owner, _ = make_keys(tmp_path, "owner")
    home = tmp_path / "home"
    home.mkdir()
    (home / "id_rsa").write_text("secret")
    code, _, err = call(dataset_agent, "--out", home, "--key", owner)
    assert code == 2 and "is a directory with files in it and no signature" in err
    assert [p.name for p in home.rglob("*")] == ["id_rsa"] and not (tmp_path / "home.sig").exists()
    (tmp_path / "empty").mkdir()
    assert call(dataset_agent, "--out", tmp_path / "empty", "--key", owner)[0] == 0


def test_dataset_agent_reads_parquet(tmp_path):
    """A Hugging Face style table (Image feature structs + labels) as Parquet."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    from PIL import Image

    def png(level):
        out = io.BytesIO()
        Image.fromarray(np.full((4, 4), level, np.uint8)).save(out, format="PNG")
        return out.getvalue()

    table = pa.table({"image": [{"bytes": png(i * 20), "path": None} for i in range(12)],
                      "label": [i % 12 for i in range(12)]})
    pq.write_table(table, tmp_path / "train.parquet")
    owner, owner_pub = make_keys(tmp_path, "owner")
    code, _, err = call(dataset_agent, "--out", tmp_path / "d", "--source", tmp_path / "train.parquet", "--key", owner)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "d").iterdir())[:3] == ["00", "01", "02"]  # sorted = numeric
    assert sentry.verify_dataset(tmp_path / "d", public_key=owner_pub).checked == 12


@pytest.mark.parametrize("agent", [dataset_agent, trainer_agent, inferencer_agent])
def test_usage_errors_are_one_line_exit_2(agent):
    code, _, err = call(agent, env={k: "" for k in ("SENTRY_KEY_FILE", "SENTRY_PUBLIC_KEY_FILE",
                                                   "SENTRY_DATASET_PUBLIC_KEY_FILE")})
    assert code == 2 and len(err.strip().splitlines()) == 1 and "required" in err
    code, out, _ = call(agent, "--help")
    assert code == 0 and "exit codes" in out


def test_missing_key_names_the_environment_variable(tmp_path):
    code, _, err = call(dataset_agent, "--out", tmp_path / "d", env={"SENTRY_KEY_FILE": "", "SENTRY_SIGSTORE": ""})
    assert code == 2 and "give --key KEYFILE (or set SENTRY_KEY_FILE), or --sigstore to sign keyless" in err
    assert not (tmp_path / "d").exists()  # nothing built before the signer is settled
    (tmp_path / "data").mkdir()
    code, _, err = call(trainer_agent, "--dataset", tmp_path / "data", "--out", tmp_path / "m.safetensors",
                        env={"SENTRY_DATASET_PUBLIC_KEY_FILE": "", "SENTRY_DATASET_IDENTITY": ""})
    assert code == 2 and "give --dataset-public-key PUB (or $SENTRY_DATASET_PUBLIC_KEY_FILE), or " \
                         "--dataset-identity with --dataset-issuer" in err


# -- keyless (Sigstore): live signing needs Fulcio and Rekor, which tests do not have; everything up to
# that boundary runs the real client (tests/unit/signing/test_sigstore.py does the same for the library).
@pytest.fixture
def keyless_env(tmp_path):
    """An identity token of me@example.com and a trust config whose services refuse connections."""
    pytest.importorskip("sigstore")
    from sigstore_support import fake_token, trust_config_file

    return {"SIGSTORE_IDENTITY_TOKEN": fake_token(), "SENTRY_TRUST_CONFIG": trust_config_file(tmp_path, service_url="http://127.0.0.1:9"),
            "SENTRY_KEY_FILE": ""}


def test_dataset_agent_signs_keyless_up_to_fulcio(tmp_path, keyless_env):
    code, _, err = call(dataset_agent, "--out", tmp_path / "d", "--sigstore", env=keyless_env)
    assert code == 2 and "Traceback" not in err, err
    assert "built " in err and err.strip().splitlines()[-1].startswith("sentry_dataset: error: Sigstore signing failed: ")
    assert not (tmp_path / "d.sig").exists()


def test_keyless_signing_options_are_checked_first(pipeline, tmp_path, keyless_env):
    code, _, err = call(dataset_agent, "--out", tmp_path / "d", "--sigstore", "--key", pipeline["owner"], env=keyless_env)
    assert code == 2 and "--sigstore signs without a key: leave out --key" in err
    code, _, err = call(dataset_agent, "--out", tmp_path / "d", "--sigstore",
                        env=dict(keyless_env, SIGSTORE_IDENTITY_TOKEN="", GITHUB_ACTIONS=""))
    assert code == 2 and "--sigstore needs an OIDC identity: set SIGSTORE_IDENTITY_TOKEN" in err
    expired = dict(keyless_env, SIGSTORE_IDENTITY_TOKEN="not-a-jwt")
    code, _, err = call(trainer_agent, "--dataset", pipeline["data"], "--out", tmp_path / "m.safetensors",
                        "--sigstore", "--dataset-public-key", pipeline["owner_pub"], env=expired)
    assert code == 2 and "no usable Sigstore identity" in err and "accuracy" not in err  # before any training
    assert not (tmp_path / "d").exists() and not (tmp_path / "m.safetensors").exists()


def test_inferencer_verifies_keyless_identities(pipeline, checkpoint_copy):
    """A Sigstore identity instead of a public key: a key-signed checkpoint is refused; half an identity,
    or a key and an identity at once, are usage errors."""
    pytest.importorskip("sigstore")
    last = refused("--model", checkpoint_copy, "--identity", "me@example.com", "--issuer", "https://issuer.example.com",
                   "--port", 0)
    assert last.startswith("sentry_inferencer: refused: ")
    assert "needs both --identity and --issuer" in refused("--model", checkpoint_copy, "--identity", "me@example.com",
                                                          code=2)
    assert "choose one: --public-key, or --identity with --issuer" in refused(
        "--model", checkpoint_copy, "--public-key", pipeline["trainer_pub"], "--identity", "me@example.com", code=2)
    assert "give --dataset-public-key PUB" in refused("--model", checkpoint_copy, "--public-key", pipeline["trainer_pub"],
                                                      "--dataset-signature", pipeline["data_sig"], code=2)


def test_dataset_agent_reads_a_save_to_disk_directory(tmp_path):
    """A Hugging Face ``Dataset.save_to_disk`` layout: state.json naming Arrow IPC stream files."""
    pa = pytest.importorskip("pyarrow")
    saved = tmp_path / "saved"
    saved.mkdir()
    images = pa.array([[[i] * 3] * 3 for i in range(4)], pa.list_(pa.list_(pa.uint8())))  # an Array2D feature
    table = pa.table({"img": images, "label": [0, 1, 0, 1]})
    with pa.ipc.new_stream(saved / "data-00000-of-00001.arrow", table.schema) as writer:
        writer.write_table(table)
    (saved / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (saved / "dataset_info.json").write_text("{}")
    owner, owner_pub = make_keys(tmp_path, "owner")
    code, _, err = call(dataset_agent, "--out", tmp_path / "d", "--source", saved, "--key", owner)
    assert code == 0, err
    assert sentry.verify_dataset(tmp_path / "d", public_key=owner_pub).checked == 4
    (saved / "state.json").write_text(json.dumps({"_data_files": [{"filename": "../x.arrow"}]}))
    code, _, err = call(dataset_agent, "--out", tmp_path / "e", "--source", saved, "--key", owner)
    assert code == 2 and "outside its directory" in err
    (saved / "state.json").write_text("{}")
    code, _, err = call(dataset_agent, "--out", tmp_path / "e", "--source", saved, "--key", owner)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot build" in err


def test_per_sample_provenance_from_dataset_agent_to_trainer(tmp_path):
    owner, owner_pub = make_keys(tmp_path, "owner")
    source, source_pub = make_keys(tmp_path, "source")
    trainer, _ = make_keys(tmp_path, "trainer")
    data = tmp_path / "digits"
    code, _, err = call(dataset_agent, "--out", data, "--key", owner, "--source-key", source)
    assert code == 0 and "signed the provenance of every sample" in err, err
    provenance = tmp_path / "digits.provenance.jsonl"
    train = ("--dataset", data, "--dataset-public-key", owner_pub, "--out", tmp_path / "m.safetensors",
             "--key", trainer, "--epochs", 1, "--limit", 64)
    code, _, err = call(trainer_agent, *train, "--provenance", provenance, source_pub)
    assert code == 0 and "with its source's signature (1 given)" in err, err
    code, _, err = call(trainer_agent, *train, "--provenance", provenance, owner_pub)
    assert code == 1 and "signed with another key than the one given for source digits" in err
