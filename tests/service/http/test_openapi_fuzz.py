"""Schemathesis over the OpenAPI spec of the endpoints that detect languages and speak
LibreTranslate's API: generated bodies (JSON and form-encoded, valid and not) never
get a 5xx, and every error has the endpoint's documented shape.

Cases come from schemathesis' Hypothesis strategies, run with Hypothesis directly
(schemathesis' pytest plugin does not run under this pytest)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

OPERATIONS = [
    ("/translate", "POST"), ("/detect", "POST"), ("/languages", "GET"),
    ("/frontend/settings", "GET"), ("/v1/detect", "POST"), ("/v1/translate", "POST"),
]


CASES = [
    (path, method, mode) for path, method in OPERATIONS for mode in schemathesis.GenerationMode
    # An operation without parameters or body has no invalid request to generate.
    if method == "POST" or mode is schemathesis.GenerationMode.POSITIVE
]


@pytest.mark.parametrize(("path", "method", "mode"), CASES)
def test_no_server_errors(
    server: Any, path: str, method: str, mode: schemathesis.GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(server.http_url + "/openapi.json")
    operation = schema[path][method]
    seen: list[tuple[int, str]] = []

    @settings(max_examples=30, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode))
    def check(case: Any) -> None:
        response = case.call(base_url=server.http_url, timeout=60)
        assert response.status_code < 500, (case.body, response.text)
        seen.append((response.status_code, case.media_type or ""))
        if response.status_code >= 400:
            error = response.json()["error"]
            if path.startswith("/v1/"):
                assert error["code"] and error["message"], error
            else:
                assert isinstance(error, str) and error, error  # LibreTranslate's shape

    check()
    assert seen  # cases ran
    if path in ("/translate", "/detect"):
        assert {m for _, m in seen} >= {"application/json",
                                         "application/x-www-form-urlencoded"}, seen
