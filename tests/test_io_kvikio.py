"""kvikio (GDS or compatibility mode) reads into device buffers: the same bytes as pread."""
from __future__ import annotations

import os

import pytest

from sentry.io import kvikio as kio


def test_cufile_json_is_used_unless_the_environment_names_one(monkeypatch, tmp_path):
    import json
    import re

    text = kio.DEFAULT_CONFIG.read_text()
    settings = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.M))  # cuFile allows // comments
    assert settings["properties"]["allow_compat_mode"] is True
    assert settings["properties"]["max_direct_io_size_kb"] * 1024 >= 16 << 20  # Sentry's largest block
    monkeypatch.delenv(kio.CONFIG_ENV, raising=False)
    assert kio.configure_cufile() == str(kio.DEFAULT_CONFIG)
    monkeypatch.setenv(kio.CONFIG_ENV, str(tmp_path / "mine.json"))
    assert kio.configure_cufile() == str(tmp_path / "mine.json")


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
