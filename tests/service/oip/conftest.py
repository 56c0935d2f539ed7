"""Fixtures for the Open Inference Protocol tests (helpers are in oip_helpers.py)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def http_target(server: Any) -> str:
    """host:port, as tritonclient.http wants it (no scheme)."""
    return server.http_url.removeprefix("http://")
