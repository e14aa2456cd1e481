"""Loaders that verify every batch: scikit-learn's digits (1797 real 8x8 images, shipped with the
package) written out as PNG and .npy samples, loaded through PyTorch and DALI CPU pipelines."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from support import flip_bit, make_keys

import sentry
from sentry import SentryError, VerificationError
from sentry.data import VerifiedDataset, verified_dataloader

datasets = pytest.importorskip("sklearn.datasets")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """``(png_dir, npy_dir, keys, images, labels)``: both layouts class-per-directory, signed."""
    base = tmp_path_factory.mktemp("digits")
    bunch = datasets.load_digits()
    images = (bunch.images * 255 / 16).astype(np.uint8)  # 0..16 grey levels -> 8-bit
    png, npy = base / "png", base / "npy"
    for i, (img, label) in enumerate(zip(images, bunch.target)):
        for d in (png / str(label), npy / str(label)):
            d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(png / str(label) / f"{i:04d}.png")
        np.save(npy / str(label) / f"{i:04d}.npy", img)
    keys = make_keys(base)
    for d in (png, npy):
        sentry.sign_dataset(d, key=keys[0])
    return png, npy, keys, images, bunch.target


@pytest.fixture
def copy_of(digits, tmp_path):
    """A private copy of one signed layout (with its signature and sidecar) to tamper with."""

    def copy(which):
        src = digits[0] if which == "png" else digits[1]
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        for suffix in (".sig", ".samples.jsonl"):
            shutil.copy(src.with_name(src.name + suffix), dst.with_name(dst.name + suffix))
        return dst

    return copy


def _epoch(loader):
    """An epoch's ``(x, y)`` pairs, from torch's tuples or DALI's ``[{"data", "label"}]``."""
    return [(b[0]["data"], b[0]["label"]) if isinstance(b[0], dict) else tuple(b) for b in loader]


# -- PyTorch --------------------------------------------------------------------------------------
def test_torch_loader_yields_the_real_digits_and_the_signed_root(digits):
    png, _, keys, images, target = digits
    dataset = VerifiedDataset(png, public_key=keys[1])
    assert len(dataset) == 1797
    k = int(dataset.names[500].split("/")[1][:4])  # names sort by class directory, then by index
    x, y = dataset[500]
    assert torch.equal(x, torch.from_numpy(images[k])[..., None].expand(8, 8, 3)) and y == target[k]  # grey -> RGB
    loader, hasher = verified_dataloader(dataset, batch_size=64)
    batches = _epoch(loader)
    assert sum(len(y) for _, y in batches) == 1797 and batches[0][0].shape == (64, 8, 8, 3)
    assert sentry.verify_dataset(hasher.compute(), public_key=keys[1], signature=png.with_name("png.sig")).ok


def test_torch_root_is_the_same_for_any_order_batch_size_and_workers(digits):
    png, _, keys, _, _ = digits
    roots = set()
    for batch, shuffle, workers in ((1, False, 0), (97, True, 0), (500, True, 2)):
        loader, hasher = verified_dataloader(VerifiedDataset(png, public_key=keys[1]), batch_size=batch,
                                             shuffle=shuffle, num_workers=workers)
        _epoch(loader)
        roots.add(hasher.compute())
    assert len(roots) == 1


def test_torch_loader_raises_at_the_batch_with_the_flipped_byte(copy_of, digits):
    keys = digits[2]
    d = copy_of("png")
    bad = sorted(d.rglob("*.png"))[700]  # sorted like the loader: in batch 700 // 100 = 7
    flip_bit(bad, 30)
    loader, _ = verified_dataloader(VerifiedDataset(d, public_key=keys[1]), batch_size=100)
    seen = []
    with pytest.raises(VerificationError, match=f"{bad.parent.name}/{bad.name} failed verification: content differs"):
        for x, _ in loader:
            seen.append(len(x))
    assert seen == [100] * 7  # batches 0..6 came out; batch 7 never did


def test_torch_drop_policy_reports_and_root_no_longer_verifies(copy_of, digits):
    keys = digits[2]
    d = copy_of("npy")
    bad = sorted(d.rglob("*.npy"))[3]
    flip_bit(bad, 150)
    (d / "3" / "injected.npy").write_bytes(bad.read_bytes())
    with pytest.warns(UserWarning, match="dropped"):
        dataset = VerifiedDataset(d, public_key=keys[1], policy="drop")
        loader, hasher = verified_dataloader(dataset, batch_size=256)
        n = sum(len(y) for _, y in loader)
    assert n == 1796 and hasher.report.extra == ["sample 3/injected.npy"]
    assert [c.label for c in hasher.report.changed] == [f"sample {bad.parent.name}/{bad.name}"]
    with pytest.raises(VerificationError, match="is not the one"):
        sentry.verify_dataset(hasher.compute(), public_key=keys[1], signature=d.with_name("npy.sig"))


def test_injected_and_missing_samples_are_named_before_the_first_batch(copy_of, digits):
    keys = digits[2]
    d = copy_of("png")
    (d / "0" / "zzz.png").write_bytes((d / "0" / "0000.png").read_bytes())
    with pytest.raises(VerificationError, match="zzz.png is not in the signed dataset"):
        VerifiedDataset(d, public_key=keys[1])
    (d / "0" / "zzz.png").unlink()
    gone = sorted(d.rglob("*.png"))[-1]
    gone.unlink()
    with pytest.raises(VerificationError, match=f"signed sample 9/{gone.name} is missing"):
        VerifiedDataset(d, public_key=keys[1])


def test_configure_supplies_the_verification_material(digits):
    png, _, keys, _, _ = digits
    sentry.configure(public_key=keys[1], signature=png.with_name("png.sig"))
    try:
        assert len(VerifiedDataset(png)) == 1797
    finally:
        sentry.configure(public_key=None, signature=None)


def test_unknown_policy(digits):
    with pytest.raises(SentryError, match="unknown policy"):
        VerifiedDataset(digits[0], public_key=digits[2][1], policy="ignore")


# -- DALI CPU pipelines (device_id=None) ------------------------------------------------------------
def _dali():
    return pytest.importorskip("nvidia.dali")


@pytest.mark.parametrize("kind", ["image", "numpy"])
def test_dali_cpu_loader_matches_torch_and_the_signature(digits, kind):
    _dali()
    from sentry.data import get_image_dataloader

    png, npy, keys, images, target = digits
    path = png if kind == "image" else npy
    loader, hasher = get_image_dataloader(path, 128, device="cpu", gds=False, public_key=keys[1], kind=kind)
    assert len(loader) == 15
    xs, ys = zip(*_epoch(loader))
    x, y = torch.cat(xs), torch.cat(ys)
    assert len(y) == 1797
    k = int(loader.names[500].split("/")[1][:4])  # unshuffled: the sorted names' order
    want = torch.from_numpy(images[k])
    assert torch.equal(x[500][..., 0] if kind == "image" else x[500], want) and y[500] == target[k]
    torch_loader, torch_hasher = verified_dataloader(VerifiedDataset(path, public_key=keys[1]), batch_size=50)
    _epoch(torch_loader)
    assert hasher.compute() == torch_hasher.compute()
    assert sentry.verify_dataset(hasher.compute(), public_key=keys[1], signature=path.with_name(path.name + ".sig")).ok


def test_dali_shuffle_and_batch_size_do_not_change_the_root(digits):
    _dali()
    from sentry.data import get_image_dataloader

    png, _, keys, _, target = digits
    roots, orders = set(), []
    for batch, shuffle, seed in ((1000, False, 0), (64, True, 1), (7, True, 2)):
        loader, hasher = get_image_dataloader(png, batch, device="cpu", public_key=keys[1], shuffle=shuffle, seed=seed)
        for _epoch_number in range(2 if batch == 64 else 1):  # epochs stay exact when the reader reshuffles
            ys = torch.cat([y for _, y in _epoch(loader)])
            assert sorted(ys.tolist()) == sorted(target.tolist())
            orders.append(ys.tolist())
        roots.add(hasher.compute())
    assert len(roots) == 1 and orders[0] != orders[1] != orders[2]


def test_dali_loader_raises_before_yielding_the_tampered_batch(copy_of, digits):
    _dali()
    from sentry.data import get_image_dataloader

    keys = digits[2]
    d = copy_of("npy")
    bad = sorted(d.rglob("*.npy"))[1000]
    flip_bit(bad, bad.stat().st_size - 1)  # in the array, not the header
    loader, _ = get_image_dataloader(d, 100, device="cpu", public_key=keys[1], kind="numpy", output="tuple")
    seen = 0
    with pytest.raises(VerificationError, match=f"{bad.parent.name}/{bad.name} failed verification"):
        for x, _ in loader:
            seen += len(x)
    assert seen == 1000  # ten whole batches, and not the one holding sample 1000


def test_dali_refuses_an_array_whose_header_was_rewritten(copy_of, digits):
    _dali()
    from sentry.data import get_image_dataloader

    keys = digits[2]
    d = copy_of("npy")
    bad = sorted(d.rglob("*.npy"))[0]
    raw = bad.read_bytes().replace(b"'|u1'", b"'|i1'")  # same bytes, reinterpreted as int8
    bad.write_bytes(raw)
    loader, _ = get_image_dataloader(d, 1, device="cpu", public_key=keys[1], kind="numpy")
    with pytest.raises(VerificationError, match=f"0/{bad.name} failed verification"):
        next(iter(loader))
    # In a batch with untouched arrays DALI itself stops at the mixed dtypes: the sample is still named.
    loader, _ = get_image_dataloader(d, 100, device="cpu", public_key=keys[1], kind="numpy")
    with pytest.raises(VerificationError, match=f"DALI could not load a batch, and changed: sample 0/{bad.name}"):
        next(iter(loader))


def test_dali_names_an_image_too_damaged_to_decode(copy_of, digits):
    _dali()
    from sentry.data import get_image_dataloader

    d = copy_of("png")
    bad = sorted(d.rglob("*.png"))[1]
    bad.write_bytes(bad.read_bytes()[:40])
    loader, _ = get_image_dataloader(d, 16, device="cpu", public_key=digits[2][1])
    with pytest.raises(VerificationError, match=f"changed: sample 0/{bad.name}: size"):
        next(iter(loader))


def test_dali_bad_arguments(digits):
    _dali()
    from sentry.data import get_image_dataloader

    png, _, keys, _, _ = digits
    with pytest.raises(SentryError, match="unknown loader device"):
        get_image_dataloader(png, 8, device="tpu", public_key=keys[1])
    with pytest.raises(SentryError, match="no numpy samples"):
        get_image_dataloader(png, 8, device="cpu", public_key=keys[1], kind="numpy")


@pytest.mark.gpu
@pytest.mark.parametrize("kind, gds", [("image", False), ("numpy", True), ("numpy", False)])
def test_dali_gpu_loader_gives_the_cpu_root(digits, kind, gds):
    _dali()
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from sentry.data import get_image_dataloader

    png, npy, keys, _, _ = digits
    path = png if kind == "image" else npy
    roots = []
    for device in ("cpu", "gpu"):
        loader, hasher = get_image_dataloader(path, 256, device=device, gds=gds, public_key=keys[1], kind=kind)
        xs = [x for x, _ in _epoch(loader)]
        assert xs[0].device.type == ("cuda" if device == "gpu" else "cpu")
        roots.append(hasher.compute())
    assert roots[0] == roots[1]
