"""The error taxonomy: each failure raises its kind (under the two exit-code classes), and lower
layers name API settings, which the CLI words as its options."""
from __future__ import annotations

import pickle

import pytest
from support import make_keys

import sentry
from sentry import cli
from sentry.errors import (
    BadSignature,
    ContentMismatch,
    InvalidBundle,
    InvalidInput,
    Remedy,
    SentryError,
    UnsupportedFormat,
    VerificationError,
)


def test_kinds_sit_under_the_two_exit_codes():
    for kind in (InvalidBundle, BadSignature, UnsupportedFormat, ContentMismatch):
        assert issubclass(kind, VerificationError) and kind.exit_code == 1
    assert issubclass(InvalidInput, ValueError) and InvalidInput.exit_code == 2
    assert issubclass(sentry.MissingDependency, ImportError) and sentry.MissingDependency.exit_code == 2


def test_a_remedy_is_worded_for_python_and_for_the_command_line():
    exc = SentryError("m is a symbolic link", remedy=Remedy("allow_symlinks", purpose="to hash what it points to"))
    assert str(exc) == "m is a symbolic link; pass allow_symlinks=True to hash what it points to"
    assert cli.error_message(exc) == "m is a symbolic link; pass --allow-symlinks to hash what it points to"
    device = SentryError("cannot hash on CUDA", remedy=Remedy("device", "'cpu'"))
    assert cli.error_message(device) == "cannot hash on CUDA; pass --device cpu"
    copied = pickle.loads(pickle.dumps(exc))  # DataLoader workers send errors across processes
    assert type(copied) is SentryError and str(copied) == str(exc)


def test_every_remedy_a_library_raises_has_a_command_line_wording():
    import re
    from pathlib import Path

    settings = set()
    for path in Path(sentry.__file__).parent.rglob("*.py"):
        settings |= set(re.findall(r'Remedy\(\s*"(\w+)"', path.read_text()))
    assert settings and settings <= set(cli._REMEDY_OPTIONS) | {"dataset", "password", "image"}


def test_no_library_message_names_a_command_line_option():
    import re
    from pathlib import Path

    root = Path(sentry.__file__).parent
    for path in root.rglob("*.py"):
        if path.name == "cli.py":
            continue
        for line in path.read_text().splitlines():
            if re.search(r'(raise|Error\().*"[^"#]*--[a-z]', line):
                pytest.fail(f"{path.relative_to(root)}: {line.strip()}")


@pytest.fixture
def signed_model(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(b"weights" * 1000)
    priv, pub = make_keys(tmp_path)
    sentry.sign_model(model, key=priv)
    return model, pub, tmp_path


def test_a_changed_file_is_a_content_mismatch_with_its_report(signed_model):
    model, pub, _ = signed_model
    (model / "w.bin").write_bytes(b"WEIGHTS" * 1000)
    with pytest.raises(ContentMismatch) as err:
        sentry.verify_model(model, public_key=pub)
    assert [c.label for c in err.value.report.changed] == ["file w.bin"]


def test_another_key_is_a_bad_signature(signed_model):
    model, _, tmp_path = signed_model
    (tmp_path / "other").mkdir()
    with pytest.raises(BadSignature):
        sentry.verify_model(model, public_key=make_keys(tmp_path / "other")[1])


def test_a_garbled_bundle_is_an_invalid_bundle(signed_model):
    model, pub, tmp_path = signed_model
    (tmp_path / "m.sig").write_text('{"mediaType": 5}')
    with pytest.raises(InvalidBundle):
        sentry.verify_model(model, public_key=pub)
