"""The CUDA backends' one-time work under threads and streams, with a small fake CuPy that counts
compilations (each one slow, as NVRTC is) and logs launches and synchronizations per stream."""
from __future__ import annotations

import sys
import threading
import time
import types

import fake_gpu
import numpy as np
import pytest
from cuda_emu import isolate

from sentry import _gpu
from sentry._gpu import PerDevice
from sentry.hashing import cuda

THREADS = 16


class _Stream:
    def __init__(self, fake, name):
        self.fake, self.name, self.ptr = fake, name, id(self)

    def synchronize(self):
        self.fake.log.append(("sync", self.name))

    def __enter__(self):
        self.previous, self.fake.stream = self.fake.stream, self
        return self

    def __exit__(self, *exc):
        self.fake.stream = self.previous


class _HostArray(np.ndarray):
    def get(self):
        return np.array(self)


class CountingCupy(types.ModuleType):
    """CuPy as far as the launch code's one-time work needs it. ``compiles`` gets the device of
    each RawModule built; ``log`` gets ("launch", kernel, device, stream) and ("sync", stream)."""

    def __init__(self, compile_seconds: float = 0.05):
        super().__init__("cupy")
        self.compile_seconds, self.compiles, self.log = compile_seconds, [], []
        self.local = threading.local()  # each thread's current device, as in CUDA
        self.stream = _Stream(self, "first")
        fake = self

        class Device:
            def __init__(self, device_id=None):
                self.id = fake.device if device_id is None else device_id
                self.attributes = {"MultiProcessorCount": 132}

            def __enter__(self):
                self.previous, fake.local.device = fake.device, self.id
                return self

            def __exit__(self, *exc):
                fake.local.device = self.previous

        class RawModule:
            def __init__(self, code, options):
                time.sleep(fake.compile_seconds)  # wide open for a second thread to compile too
                fake.compiles.append(fake.device)
                self.device = fake.device

            def get_function(self, name):
                def launch(grid, block, args):
                    fake.log.append(("launch", name, self.device, fake.stream.name))

                launch.kernel = types.SimpleNamespace(ptr=id(launch))
                return launch

        self.uint8 = np.uint8
        self.RawModule = RawModule
        self.cuda = types.SimpleNamespace(Device=Device, get_current_stream=lambda: self.stream,
                                          runtime=types.SimpleNamespace(getDeviceCount=lambda: 2),
                                          driver=types.SimpleNamespace(
                                              occupancyMaxActiveBlocksPerMultiprocessor=lambda fn, threads, smem: 4))

    @property
    def device(self) -> int:
        return getattr(self.local, "device", 0)

    def empty(self, n, dtype):
        return np.zeros(n, dtype).view(_HostArray)

    zeros = empty

    def asarray(self, host):
        return np.asarray(host).view(_HostArray)


def run_together(fn, count: int = THREADS) -> list:
    """fn(i) in ``count`` threads released at once; their results in order."""
    barrier, out = threading.Barrier(count), [None] * count

    def worker(i):
        barrier.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_merkle_kernels_compile_once_per_device_when_reader_threads_start_together(monkeypatch):
    fake = CountingCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    isolate(monkeypatch)
    monkeypatch.setattr(cuda, "_kernels", PerDevice(cuda._compile))

    def first_block(i):
        gpu = cuda._Gpu(i % 2)  # the reader threads of two devices
        gpu.launch("merkle_leaves", 1000, i)
        gpu.launch("merkle_roots", 10, i)

    run_together(first_block)
    assert sorted(fake.compiles) == [0, 1]
    launches = [entry for entry in fake.log if entry[0] == "launch"]
    assert len(launches) == 2 * THREADS
    # every thread launched kernels loaded on its own device
    assert sorted((name, dev) for _, name, dev, _ in launches) == sorted(
        (name, i % 2) for i in range(THREADS) for name in ("merkle_leaves", "merkle_roots"))


def test_ecdsa_kernels_and_table_are_built_once_per_device_under_threads(monkeypatch):
    fake = fake_gpu.load_crypto_cuda(monkeypatch, CountingCupy())
    from sentry.crypto import cuda as ecdsa

    built = run_together(lambda i: ecdsa._module())
    assert fake.compiles == [0]
    assert all(b is built[0] for b in built)  # one table, shared
    assert [e for e in fake.log if e[0] == "launch"] == [("launch", "p256_build_table", 0, "first")]


def test_the_ecdsa_table_is_complete_before_another_stream_reads_it(monkeypatch):
    """The table is built on whichever stream is current at first use; a launch on another stream
    must not start before that build has finished."""
    fake = fake_gpu.load_crypto_cuda(monkeypatch, CountingCupy(0))
    from sentry.crypto import cuda as ecdsa

    ecdsa._module()  # first use, on stream "first"
    with _Stream(fake, "other"):
        ecdsa.verify([b"\x04" + bytes(64)], None, bytes(32), bytes(64))
    build = fake.log.index(("launch", "p256_build_table", 0, "first"))
    use = fake.log.index(("launch", "p256_verify_batch", 0, "other"))
    assert ("sync", "first") in fake.log[build:use]


@pytest.mark.parametrize("device_ids", [[0] * THREADS, [i % 3 for i in range(THREADS)]])
def test_per_device_builds_once_per_device_and_hands_everyone_the_same_value(device_ids):
    calls = []

    def build(device_id):
        calls.append(device_id)
        time.sleep(0.05)
        return object()

    cache = PerDevice(build)
    got = run_together(lambda i: cache.get(device_ids[i]))
    assert sorted(calls) == sorted(set(device_ids))
    for i, value in enumerate(got):
        assert value is got[device_ids.index(device_ids[i])]


def test_raw_module_compiles_each_source_once_per_device_and_clear_caches_forgets_them(monkeypatch):
    fake = CountingCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    isolate(monkeypatch)
    keys = [(("merkle.cu", "verity.cu")[i % 2], i // 2 % 2) for i in range(THREADS)]
    got = run_together(lambda i: _gpu.raw_module(*keys[i]))
    assert sorted(fake.compiles) == [0, 0, 1, 1]  # two sources on each of two devices
    for i, module in enumerate(got):
        assert module is got[keys.index(keys[i])] and module.device == keys[i][1]
    assert len({id(m) for m in got}) == 4
    assert _gpu.unavailable_reason() is None  # the fake sees 2 GPUs
    _gpu.clear_caches()
    assert _gpu.raw_module("merkle.cu", 0) is not got[0] and len(fake.compiles) == 5
