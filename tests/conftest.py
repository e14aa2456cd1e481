"""Fixtures shared by the test modules."""
import pytest

from support import make_keys


@pytest.fixture
def keys(tmp_path):
    """A fresh P-256 key pair (private, public) as PEM files in the test's directory."""
    return make_keys(tmp_path)
