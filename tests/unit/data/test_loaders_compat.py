"""The original Sentry's "After Sentry" example runs unchanged (issue 11):

    dataloader, hasher = get_image_dataloader(path='./dataset/cifar10', batch=128, device='gpu', gds=True)
    sentry.verify_model(model)
    for data in dataloader:
        x, y = data[0]['data'], data[0]['label']
    sentry.verify_dataset(hasher.compute())

``batch=`` is accepted, the sample kind comes from the files, batches are DALI's
``[{"data", "label"}]``, device/gds default to what is usable, and the DALI and PyTorch loaders
decode images to the same layout. Small data made here: 300 of scikit-learn's digits as PNG and
.npy class folders, and a few odd PNG modes made with Pillow."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from support import make_keys

import sentry
from sentry import SentryError
from sentry.data import VerifiedDataset, verified_dataloader

pytest.importorskip("nvidia.dali")
datasets = pytest.importorskip("sklearn.datasets")
Image = pytest.importorskip("PIL.Image")
from sentry.data import get_image_dataloader  # noqa: E402  (after the DALI skip)

N = 300


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def digits(tmp_path_factory, keys):
    """``base`` holding ``dataset/cifar10`` (PNG class folders) and ``dataset/npy`` (.npy), signed."""
    base = tmp_path_factory.mktemp("digits")
    bunch = datasets.load_digits()
    png, npy = base / "dataset" / "cifar10", base / "dataset" / "npy"
    for i in range(N):
        img, label = (bunch.images[i] * 255 / 16).astype(np.uint8), str(bunch.target[i])
        for d in (png / label, npy / label):
            d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(png / label / f"{i:04d}.png")
        np.save(npy / label / f"{i:04d}.npy", img)
    for d in (png, npy):
        sentry.sign_dataset(d, key=keys[0])
    return base


@pytest.fixture
def configured(keys, digits, monkeypatch):
    """A training script's setup: the public key and the dataset signature configure()'d, cwd at base."""
    monkeypatch.chdir(digits)
    sentry.configure(public_key=keys[1], signature=digits / "dataset" / "cifar10.sig")
    yield digits
    sentry.configure(public_key=None, signature=None)


def test_after_sentry_example_runs_on_a_cpu_host(configured):
    # device and gds left to "auto", as a script for both kinds of host would; gds=True is
    # harmless on a CPU pipeline (it applies to .npy read into GPU memory only).
    for options in ({}, {"gds": True}):
        dataloader, hasher = get_image_dataloader(path='./dataset/cifar10', batch=128, **options)
        seen = 0
        for data in dataloader:
            x, y = data[0]['data'], data[0]['label']
            assert isinstance(data, list) and len(data) == 1 and set(data[0]) == {"data", "label"}
            assert x.dtype == torch.uint8 and x.shape[1:] == (8, 8, 3) and y.dtype == torch.int64
            seen += len(y)
        assert seen == N
        assert sentry.verify_dataset(hasher.compute()).ok


def test_after_sentry_example_with_device_gpu_on_a_host_without_one_is_one_sentence(configured, monkeypatch):
    from nvidia.dali import backend

    monkeypatch.setattr(backend, "GetCUDADeviceCount", lambda: 0)  # a CPU host, wherever the test runs
    with pytest.raises(SentryError, match=r"^device='gpu' needs a CUDA GPU that DALI can use, and this machine "
                                          r"has 0: use device='auto' or 'cpu'$"):
        get_image_dataloader(path='./dataset/cifar10', batch=128, device='gpu', gds=True)
    monkeypatch.setattr(backend, "GetCUDADeviceCount", lambda: 1)
    with pytest.raises(SentryError, match="needs GPU 3 that DALI can use, and this machine has 1"):
        get_image_dataloader(path='./dataset/cifar10', batch=128, device='gpu', device_id=3)


def test_the_same_example_on_the_pytorch_loader(configured):
    dataloader, hasher = verified_dataloader(VerifiedDataset('./dataset/cifar10'), batch_size=128)
    x, y = next(iter(dataloader))  # torch's own batches stay (samples, labels)
    assert x.shape == (128, 8, 8, 3) and x.dtype == torch.uint8
    assert sum(len(y) for _, y in dataloader) == N
    assert sentry.verify_dataset(hasher.compute()).ok


def test_batch_is_an_alias_of_batch_size(digits, keys):
    path = digits / "dataset" / "cifar10"
    loader, _ = get_image_dataloader(path, batch=100, device="cpu", public_key=keys[1])
    assert len(loader) == 3
    loader, _ = get_image_dataloader(path, 100, device="cpu", public_key=keys[1])  # positional, as before
    assert len(loader) == 3
    with pytest.raises(SentryError, match="^give the batch size once: batch or batch_size, not both$"):
        get_image_dataloader(path, batch_size=100, batch=100, device="cpu", public_key=keys[1])
    with pytest.raises(SentryError, match="needs a batch size: batch=N"):
        get_image_dataloader(path, device="cpu", public_key=keys[1])
    with pytest.raises(SentryError, match="batch size must be a positive integer, got 0"):
        get_image_dataloader(path, batch=0, device="cpu", public_key=keys[1])


def test_the_sample_kind_comes_from_the_files(digits, keys, tmp_path):
    npy = digits / "dataset" / "npy"
    loader, hasher = get_image_dataloader(npy, batch=64, device="cpu", public_key=keys[1])
    xs = torch.cat([b[0]["data"] for b in loader])
    assert loader.kind == "numpy" and xs.shape == (N, 8, 8)  # arrays as stored, no decoding
    assert sentry.verify_dataset(hasher.compute(), public_key=keys[1], signature=npy.with_name("npy.sig")).ok
    mixed = tmp_path / "mixed"
    (mixed / "0").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mixed / "0" / "a.png")
    np.save(mixed / "0" / "b.npy", np.zeros((8, 8), np.uint8))
    sentry.sign_dataset(mixed, key=keys[0])
    with pytest.raises(SentryError, match="mixed holds both image and .npy samples: pass kind='image' or kind='numpy'$"):
        get_image_dataloader(mixed, batch=2, device="cpu", public_key=keys[1])
    loader, _ = get_image_dataloader(mixed, batch=2, device="cpu", public_key=keys[1], kind="numpy")
    assert loader.names == ["0/b.npy"]  # an explicit kind still picks its files out of a mix


def test_output_tuple_and_bad_options(digits, keys):
    path = digits / "dataset" / "cifar10"
    loader, _ = get_image_dataloader(path, batch=128, device="cpu", public_key=keys[1], output="tuple")
    x, y = next(iter(loader))
    assert x.shape == (128, 8, 8, 3) and y.shape == (128,)
    for options, message in (({"output": "dict"}, "unknown loader output 'dict': choose dali or tuple"),
                             ({"gds": "yes"}, "gds must be 'auto', True or False, got 'yes'"),
                             ({"device": "tpu"}, "unknown loader device 'tpu': choose auto, cpu or gpu"),
                             ({"kind": "text"}, "unknown sample kind 'text': choose auto, image or numpy")):
        with pytest.raises(SentryError, match=f"^{message}$"):
            get_image_dataloader(path, batch=8, public_key=keys[1], **options)


def _odd_images(d):
    """PNGs in the modes a real dataset mixes (4x6 each), and a JPEG stored 6x4 with an EXIF
    rotation: every one must come out as 4x6x3 uint8 RGB from both loaders."""
    from PIL import Image as PIL

    rng = np.random.default_rng(7)
    d.mkdir()
    PIL.fromarray(rng.integers(0, 256, (4, 6), np.uint8)).save(d / "grey.png")
    PIL.fromarray(rng.integers(0, 256, (4, 6, 4), np.uint8), mode="RGBA").save(d / "rgba.png")
    PIL.fromarray(rng.integers(0, 256, (4, 6, 2), np.uint8), mode="LA").save(d / "grey_alpha.png")
    PIL.fromarray(rng.integers(0, 256, (4, 6, 3), np.uint8)).convert("P").save(d / "palette.png")
    PIL.fromarray(rng.integers(0, 65536, (4, 6)).astype(np.uint16)).save(d / "grey16.png")
    PIL.fromarray(rng.integers(0, 256, (4, 6), np.uint8)).convert("1").save(d / "bilevel.png")
    exif = PIL.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    PIL.fromarray(rng.integers(0, 256, (6, 4, 3), np.uint8)).save(d / "rotated.jpg", exif=exif, quality=95)


def test_dali_and_pytorch_decode_to_the_same_rgb_layout(tmp_path, keys):
    d = tmp_path / "odd"
    _odd_images(d)
    sentry.sign_dataset(d, key=keys[0])
    loader, _ = get_image_dataloader(d, batch=16, device="cpu", public_key=keys[1])
    (batch,) = list(loader)
    dali = dict(zip(loader.names, batch[0]["data"]))
    dataset = VerifiedDataset(d, public_key=keys[1])
    assert sorted(dali) == dataset.names and len(dataset) == 7
    for i, name in enumerate(dataset.names):
        x, _ = dataset[i]
        assert x.shape == dali[name].shape == (4, 6, 3) and x.dtype == dali[name].dtype == torch.uint8, name
        if name.endswith(".png"):  # lossless: the very same pixels
            assert torch.equal(x, dali[name]), name
        else:  # two JPEG decoders may round differently
            assert (x.int() - dali[name].int()).abs().max() <= 2, name


def test_gds_true_without_cufile_warns_and_reads_on_the_host(monkeypatch):
    from sentry.data import dali_loader

    monkeypatch.setattr(dali_loader, "_cufile_loads", lambda: False)
    with pytest.warns(UserWarning, match=r"gds=True, but the cuFile library \(libcufile\) is not installed"):
        assert dali_loader._gpu_reader(True) is False
    monkeypatch.setattr(dali_loader, "_cufile_loads", lambda: True)
    assert dali_loader._gpu_reader(True) is True and dali_loader._gpu_reader(False) is False
    from sentry.io import kvikio

    monkeypatch.setattr(kvikio, "available", lambda: False)
    assert dali_loader._gpu_reader("auto") is False  # no kvikio: no GDS to detect, the host reader


def test_the_whole_example_with_a_model_and_a_dataset_configured_once(digits, keys, monkeypatch):
    """verify_model(model) and the loader in one script: the model's signature and the dataset's
    are configured side by side (dataset_signature comes first for datasets)."""
    monkeypatch.chdir(digits)
    model = torch.nn.Linear(192, 10)
    sentry.sign_model(model, key=keys[0], signature=digits / "model.sig")
    sentry.configure(public_key=keys[1], signature=digits / "model.sig",
                     dataset_signature=digits / "dataset" / "cifar10.sig")
    try:
        dataloader, hasher = get_image_dataloader(path='./dataset/cifar10', batch=128)
        assert sentry.verify_model(model).ok
        assert sum(len(data[0]['label']) for data in dataloader) == N
        assert sentry.verify_dataset(hasher.compute()).ok
    finally:
        sentry.configure(public_key=None, signature=None, dataset_signature=None)
