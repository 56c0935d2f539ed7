"""Every log line of a request carries its request id; JSON or text format; request
bodies and API keys are not logged."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
from starlette.types import Message

from service.http.logs import JsonFormatter, RequestIdFilter, request_id_var
from service.http.middleware import RequestContextMiddleware
from service.metrics import Metrics


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_request_lines_carry_the_request_id(server: Any) -> None:
    # No waiting: the middleware writes the access line before the response's last byte.
    handler = Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with server.api_keys("key-must-not-leak"):
            httpx.post(server.http_url + "/v1/translate", json={
                "text": "secret text body", "target_lang": "de",
                "options": {"max_new_tokens": 2}},
                headers={"X-Request-ID": "rid-7", "X-API-Key": "key-must-not-leak"})
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    mine = [r for r in handler.records if r.request_id == "rid-7"]  # type: ignore[attr-defined]
    assert any("POST /v1/translate 200" in r.getMessage() for r in mine)
    text = "\n".join(r.getMessage() for r in handler.records)
    assert "secret text body" not in text and "key-must-not-leak" not in text


async def test_access_line_and_count_come_before_the_last_body_chunk() -> None:
    """So a client holding the whole response finds both: no test (or user) has to wait."""
    metrics = Metrics()
    handler = Collect()
    access = logging.getLogger("sora.access")
    old_level = access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    seen: list[tuple[bool, int, float | None]] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            count = metrics.registry.get_sample_value(
                "sora_http_requests_total", {"route": "unmatched", "code": "201"})
            seen.append((message.get("more_body", False), len(handler.records), count))

    try:
        await RequestContextMiddleware(app, metrics)(
            {"type": "http", "method": "GET", "path": "/x", "headers": []}, receive, send)
    finally:
        access.removeHandler(handler)
        access.setLevel(old_level)
    assert seen == [(True, 0, None), (False, 1, 1.0)]
    assert handler.records[0].getMessage().startswith("GET /x 201 ")


def test_json_format() -> None:
    token = request_id_var.set("abc")
    try:
        record = logging.LogRecord("sora.x", logging.INFO, __file__, 1, "hello %s", ("w",),
                                   None)
        RequestIdFilter().filter(record)
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hello w" and line["request_id"] == "abc"
    assert line["level"] == "INFO" and line["logger"] == "sora.x" and "time" in line
