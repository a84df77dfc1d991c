from __future__ import annotations

import os

import pytest

os.environ.setdefault("ECOTONE_TEST_RUN_ID", f"p{os.getpid()}")


@pytest.fixture(autouse=True)
def _reset_clock():
    from ecotone_django.clock import clock

    yield
    clock.reset()
