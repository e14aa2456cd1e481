"""kvikio (GDS or compatibility mode) reads into device buffers: the same bytes as pread.

The tests without the ``gpu`` mark run kvikio's and CuPy's stand-ins from ``fake_gpu.py``.
"""
from __future__ import annotations

import os

import fake_gpu
import numpy as np
import pytest

from sentry.errors import SentryError
from sentry.io import kvikio as kio


def test_cufile_json_is_used_unless_the_environment_names_one(monkeypatch, tmp_path):
    import json
    import re

    text = kio.DEFAULT_CONFIG.read_text()
    settings = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.M))  # cuFile allows // comments
    assert settings["properties"]["allow_compat_mode"] is True
    assert settings["properties"]["max_direct_io_size_kb"] * 1024 >= kio.BLOCK_BYTES  # Sentry's blocks
    monkeypatch.delenv(kio.CONFIG_ENV, raising=False)
    assert kio.configure_cufile() == str(kio.DEFAULT_CONFIG)
    monkeypatch.setenv(kio.CONFIG_ENV, str(tmp_path / "mine.json"))
    assert kio.configure_cufile() == str(tmp_path / "mine.json")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def fakes(monkeypatch):
    return fake_gpu.install(monkeypatch)


def test_without_kvikio_gpu_reads_are_unavailable_in_one_sentence(monkeypatch, tmp_path):
    fake_gpu.install(monkeypatch, with_kvikio=False)
    (tmp_path / "f").write_bytes(b"x")
    assert not kio.available()
    with pytest.raises(SentryError, match=r"^reading files into GPU memory needs kvikio, which is not installed: pip install .sentry-artifacts\[gpu\].$"):
        kio.DeviceFileSource(tmp_path / "f")


def test_cufile_reads_the_descriptor_filesource_opened_even_if_the_path_is_swapped(fakes, tmp_path):
    _, kv = fakes
    f, other = tmp_path / "f.bin", tmp_path / "other.bin"
    f.write_bytes(b"checked" * 1000)
    other.write_bytes(b"swapped" * 1000)
    kv.before_open = lambda _: os.replace(other, f)  # between FileSource's open and kvikio's
    with kio.DeviceFileSource(f) as src:
        assert kv.opened == [f"/proc/self/fd/{src.fileno()}"]
        buf = fake_gpu.FakeCupy().empty(7000, np.uint8)
        src.read_device(0, buf)
        assert buf.tobytes() == b"checked" * 1000
        with pytest.raises(SentryError, match="changed while it was being hashed"):
            src.check_unchanged()


def test_a_cufile_on_another_file_is_refused_and_nothing_is_left_open(fakes, tmp_path, monkeypatch):
    _, kv = fakes
    f, other = tmp_path / "f.bin", tmp_path / "other.bin"
    f.write_bytes(b"a")
    other.write_bytes(b"b")
    cufile = fake_gpu.FakeKvikio().CuFile
    monkeypatch.setattr(kv, "CuFile", lambda path, flags: cufile(other, flags))  # kvikio opening the wrong file
    before = open_fds()
    with pytest.raises(SentryError, match=r"^.*f\.bin was opened for GPU reads as another file$"):
        kio.DeviceFileSource(f)
    assert open_fds() == before


@pytest.mark.parametrize("fault, message", [("short", r"ended early: read short at byte 4095 of the 4096 bytes expected from offset 0"),
                                            ("error", r"^cannot read .*f\.bin: POSIX error on pread: EOF$")])
def test_short_reads_and_read_errors_are_one_sentence(fakes, tmp_path, fault, message):
    _, kv = fakes
    (tmp_path / "f.bin").write_bytes(os.urandom(8192))
    kv.short, kv.error = (1, None) if fault == "short" else (0, "POSIX error on pread: EOF")
    with kio.DeviceFileSource(tmp_path / "f.bin") as src:
        with pytest.raises(SentryError, match=message):
            src.read_device(0, fake_gpu.FakeCupy().empty(4096, np.uint8))


def buffer_index(reader, block) -> int:
    (i,) = [i for i, b in enumerate(reader._buffers) if np.shares_memory(b, block)]
    return i


def test_reader_keeps_the_next_reads_in_flight_and_rotates_its_buffers(fakes, tmp_path):
    _, kv = fakes
    data = os.urandom(5 * 4096 + 17)
    (tmp_path / "f.bin").write_bytes(data)
    with kio.DeviceFileReader(tmp_path / "f.bin", block_bytes=4096, depth=3) as reader:
        got, seen = [], []
        for offset, block in reader.blocks():
            seen.append((offset, block.nbytes, buffer_index(reader, block), kv.in_flight()))
            got.append(block.tobytes())
        assert b"".join(got) == data
        # block k is in buffer k % 3 and, while it is hashed, the reads of the next two are in flight
        assert seen == [(0, 4096, 0, 2), (4096, 4096, 1, 2), (8192, 4096, 2, 2), (12288, 4096, 0, 2),
                        (16384, 4096, 1, 1), (20480, 17, 2, 0)]
        inner = b"".join(b.tobytes() for _, b in reader.blocks(4000, 9000))
        assert inner == data[4000:13000]
        with pytest.raises(SentryError, match="too short for 5 bytes at offset 20495"):
            next(reader.blocks(20495, 5))


def test_reader_left_early_waits_for_its_reads_and_a_changed_file_is_an_error(fakes, tmp_path):
    _, kv = fakes
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(4 * 4096))
    with kio.DeviceFileReader(f, block_bytes=4096, depth=2) as reader:
        blocks = reader.blocks()
        next(blocks)
        assert kv.in_flight() == 1
        blocks.close()
        assert kv.in_flight() == 0  # nothing writes into the buffers any more
        with pytest.raises(SentryError, match="changed while it was being hashed"):
            for _, _ in reader.blocks():
                os.utime(f, ns=(1, 1))


def test_reader_needs_two_buffers(fakes, tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(SentryError, match="at least 2 device buffers"):
        kio.DeviceFileReader(tmp_path / "f", depth=1)


@pytest.mark.gpu
@pytest.mark.parametrize("size", [0, 1, 4097, (3 << 20) + 5])
def test_device_blocks_match_pread_with_two_buffers_in_flight(tmp_path, size):
    pytest.importorskip("kvikio")
    cupy = pytest.importorskip("cupy")
    if cupy.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("needs a CUDA GPU")
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with kio.DeviceFileReader(path, block_bytes=1 << 20, depth=2) as reader:
        got = b"".join(cupy.asnumpy(buf).tobytes() for _, buf in reader.blocks())
    assert got == data
    if size >= 2:  # an inner range, three buffers
        with kio.DeviceFileReader(path, block_bytes=1 << 20, depth=3) as reader:
            assert b"".join(cupy.asnumpy(b).tobytes() for _, b in reader.blocks(1, size - 2)) == data[1:-1]


@pytest.mark.parametrize("default_compat, opens_direct, gds", [(True, True, False), (False, False, False), (False, True, True)],
                         ids=["compat-by-default", "file-without-o_direct", "gds"])
def test_each_file_says_whether_kvikio_reads_it_through_gds(fakes, monkeypatch, tmp_path, default_compat, opens_direct, gds):
    """kvikio's default is not the answer for every file: one that cannot be opened with O_DIRECT
    (tmpfs, some overlay file systems) is read in compatibility mode even when the default is GDS."""
    _, kv = fakes
    kv.defaults.is_compat_mode_preferred = lambda: default_compat
    real_open = os.open

    def open_(path, flags, *args):
        if flags & os.O_DIRECT:
            if not opens_direct:
                raise OSError(22, "Invalid argument")
            flags &= ~os.O_DIRECT  # whatever this machine's file system allows
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_)
    (tmp_path / "f").write_bytes(b"x" * 10)
    before = open_fds()
    with kio.DeviceFileSource(tmp_path / "f") as src:
        assert src.gds is gds
    assert open_fds() == before  # the O_DIRECT probe's descriptor too
    assert kio.gds_enabled() is not default_compat
