"""Issue 10, items 3, 12 and 13: protect() guards every submodule, loader workers report what they
dropped, and the GPU batch signer leaves no key bytes in host staging buffers."""
from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import sentry
from sentry import SentryError, VerificationError

# --- 3. protect(model) guards every submodule -------------------------------------------------

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.a = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
        self.b = nn.Linear(8, 2)

    def forward(self, x):
        return self.b(self.a(x))


@pytest.fixture
def signed_net(tmp_path, keys):
    """(protect options, a reference Net) for a signature of Net's weights."""
    net = Net().eval()
    sig = sentry.sign_model(net, key=keys[0], signature=tmp_path / "net.sig")
    return {"public_key": keys[1], "signature": sig}, net


def _ran(module):
    """A list that gets one entry each time ``module``'s forward actually runs."""
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_protect_refuses_a_submodule_call_with_a_tampered_weight(signed_net):
    options, _ = signed_net
    model = Net().eval()
    with torch.no_grad():
        model.a[2].weight[0, 0] += 1.0
    ran = _ran(model.a[2])
    sentry.protect(model, **options)
    x = torch.randn(3, 16)
    for _ in range(2):  # the failure is final, and the forward never runs
        with pytest.raises(VerificationError, match=r"a\.2\.weight"):
            model.a[2](x)
    with pytest.raises(VerificationError, match=r"a\.2\.weight"):
        model(torch.randn(3, 8))
    assert ran == []


def test_protect_runs_submodules_and_the_model_with_good_weights(signed_net, monkeypatch):
    from sentry import api

    options, reference = signed_net
    verified, verify_model = [], api.verify_model
    monkeypatch.setattr(api, "verify_model", lambda m, **o: verified.append(m) or verify_model(m, **o))
    model = Net().eval()
    handle = sentry.protect(model, **options)
    x = torch.randn(3, 8)
    assert torch.equal(model.a(x), reference.a(x))
    assert torch.equal(model(x), reference(x))
    assert torch.equal(model.b(x), reference.b(x))
    assert verified == [model]  # the whole model, once
    handle.remove()


def test_protect_reverifies_after_a_change_and_refuses_unsigned_state(signed_net):
    options, reference = signed_net
    model = Net().eval()
    sentry.protect(model, **options)
    x = torch.randn(3, 8)
    model(x)
    model.load_state_dict(reference.state_dict())  # in-place copies of the same bytes: still signed
    assert torch.equal(model.a[0](x), reference.a[0](x))
    with torch.no_grad():
        model.b.weight.mul_(2)  # an in-place write after verification
    with pytest.raises(VerificationError, match=r"b\.weight"):
        model.b(x)


@pytest.mark.parametrize("change", ["new parameter", "new module", "data swap", "removed module"])
def test_protect_refuses_state_changed_after_verification(signed_net, change):
    options, _ = signed_net
    model = Net().eval()
    sentry.protect(model, **options)
    x = torch.randn(3, 8)
    model(x)
    if change == "new parameter":
        model.a[0].weight = nn.Parameter(torch.randn(16, 8))
        call, name = model.a[0], r"a\.0\.weight"
    elif change == "new module":  # attached after protect() and called on its own
        model.c = nn.Linear(8, 8)
        call, name = model.c, r"extra: tensor c\."
    elif change == "data swap":
        model.b.weight.data = torch.randn(2, 8)
        call, name = model.b, r"b\.weight"
    else:
        model.a[2] = nn.Identity()
        call, name = model, r"missing: tensor a\.2\."
    ran = _ran(call)
    with pytest.raises(VerificationError, match=name):
        call(x)
    assert ran == []


def test_protect_handle_removes_every_hook(signed_net):
    options, _ = signed_net
    model = Net().eval()
    before = {m: (dict(m._forward_pre_hooks), dict(m._forward_hooks)) for m in model.modules()}
    handle = sentry.protect(model, **options)
    assert all(m._forward_pre_hooks for m in model.modules())
    handle.remove()
    assert {m: (dict(m._forward_pre_hooks), dict(m._forward_hooks)) for m in model.modules()} == before
    with torch.no_grad():
        model.b.weight.zero_()
    model.b(torch.randn(1, 8))  # unprotected again


def test_protect_needs_a_module():
    with pytest.raises(SentryError, match="torch.nn.Module"):
        sentry.protect({"w": torch.zeros(1)})


# --- 12. loader workers: every verdict reaches the main process's report ----------------------

@pytest.fixture
def small_dataset(tmp_path, keys):
    """A signed dataset of 12 ``.npy`` samples in 3 classes, with one sample's array bytes flipped."""
    np = pytest.importorskip("numpy")
    d = tmp_path / "small"
    for i in range(12):
        (d / str(i % 3)).mkdir(parents=True, exist_ok=True)
        np.save(d / str(i % 3) / f"{i:02d}.npy", np.full((4, 4), i, dtype=np.uint8))
    sentry.sign_dataset(d, key=keys[0])
    bad = d / "1" / "04.npy"
    data = bytearray(bad.read_bytes())
    data[-1] ^= 1  # in the array, past the header: every loader still reads it
    bad.write_bytes(bytes(data))
    return d, keys[1], "sample 1/04.npy"


@pytest.mark.parametrize("workers", [0, 2])
def test_torch_drop_policy_reports_what_workers_dropped(small_dataset, workers):
    from sentry.data import VerifiedDataset, verified_dataloader

    d, public_key, bad = small_dataset
    dataset = VerifiedDataset(d, public_key=public_key, policy="drop")
    loader, hasher = verified_dataloader(dataset, batch_size=5, num_workers=workers)
    with pytest.warns(UserWarning, match=f"dropped: {bad} failed verification: content differs"):
        kept = sum(len(labels) for _, labels in loader)
    assert kept == 11 and hasher.verified == 11
    assert hasher.report.checked == 12
    assert [c.label for c in hasher.report.changed] == [bad]
    assert not hasher.report.ok


def test_torch_raise_policy_with_workers_raises_one_sentence(small_dataset):
    from sentry.data import VerifiedDataset, verified_dataloader

    d, public_key, bad = small_dataset
    loader, hasher = verified_dataloader(VerifiedDataset(d, public_key=public_key), batch_size=5, num_workers=2)
    with pytest.raises(VerificationError) as caught:
        list(loader)
    assert str(caught.value) == f"{bad} failed verification: content differs"


def test_dali_drop_policy_counts_every_sample(small_dataset):
    pytest.importorskip("nvidia.dali")
    from sentry.data import get_image_dataloader

    d, public_key, bad = small_dataset
    loader, hasher = get_image_dataloader(d, 5, device="cpu", kind="numpy", public_key=public_key, policy="drop")
    with pytest.warns(UserWarning, match="dropped"):
        kept = sum(len(batch[0]["label"]) for batch in loader)
    assert kept == 11 and hasher.report.checked == 12
    assert [c.label for c in hasher.report.changed] == [bad]


# --- 13. the GPU batch signer leaves no key bytes on the host ----------------------------------

def test_gpu_batch_sign_leaves_no_key_bytes_in_host_staging_buffers(monkeypatch):
    import random

    import fake_gpu
    from ecdsa_vectors import N

    from sentry.crypto import batch_sign

    fake = fake_gpu.install_signer(monkeypatch)
    rng = random.Random(13)
    keys = [rng.randrange(1, N).to_bytes(32, "big") for _ in range(3)]
    digests = [rng.randbytes(32) for _ in range(5)]
    index = [0, 1, 2, 0, 1]
    signatures = batch_sign(keys, digests, key_index=index, device="cuda")
    assert signatures == batch_sign(keys, digests, key_index=index, device="cpu")
    assert fake.staged  # the digests and the key index went through staging: only the keys must not
    for buffer in fake.staged:
        assert not any(key in buffer for key in keys)
    assert fake.freed == 1 and not fake.pinned_ours  # one page-locked buffer of its own, zeroed, freed
    module, _ = sys.modules["sentry.crypto.cuda"]._module()
    assert not module.keys.any()  # the device buffer was zeroed after the kernel
