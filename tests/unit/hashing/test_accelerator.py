import os

import pytest

from sentry.hashing import cpu


@pytest.mark.skipif(not os.environ.get("SENTRY_REQUIRE_ACCELERATOR"), reason="SENTRY_REQUIRE_ACCELERATOR not set")
def test_c_accelerator_is_built():
    """CI sets SENTRY_REQUIRE_ACCELERATOR: a silently missing C path would only show as slowness."""
    assert cpu.ACCELERATED
