"""Every error status, for real, in the one error shape: 400/422 naming the field, 401,
404, 405, 413, 429, 504. (503 while loading/draining: test_lifecycle.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support import queue_full


def post(server: Any, path: str, body: Any = None, **kw: Any) -> httpx.Response:
    with httpx.Client(base_url=server.http_url, timeout=60) as c:
        return c.post(path, json=body, **kw) if body is not None else c.post(path, **kw)


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    return body["error"]




TR = {"text": "Hello", "target_lang": "de"}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"text": 3, "target_lang": "de"}, 422, "text"),
        ({"text": "Hello"}, 422, "target_lang"),
        ({**TR, "options": {"temperature": 0}}, 422, "options.temperature"),
        ({**TR, "options": {"top_p": 2}}, 422, "options.top_p"),
        ({**TR, "options": {"strategy": "magic"}}, 422, "options.strategy"),
        ({**TR, "options": {"bogus": 1}}, 422, "options.bogus"),
        ({**TR, "options": {"max_new_tokens": "many"}}, 422, "options.max_new_tokens"),
        ({**TR, "options": {"max_new_tokens": 100000}}, 400, "options.max_new_tokens"),
        ({**TR, "options": {"min_new_tokens": 9, "max_new_tokens": 3}}, 400,
         "options.min_new_tokens"),
        ({**TR, "options": {"timeout": -1}}, 422, "options.timeout"),
        ({**TR, "unknown_field": 1}, 422, "unknown_field"),
        ({"text": "Hello", "texts": ["a"], "target_lang": "de"}, 422, "text"),
        ({"target_lang": "de"}, 422, "text"),
        ({"texts": [], "target_lang": "de"}, 422, "texts"),
        ({"texts": ["ok", 5], "target_lang": "de"}, 422, "texts[1]"),
        ({"text": "Hello", "target_lang": "xx"}, 400, "target_lang"),
        ({"text": "Hello", "target_lang": "de", "source_lang": "klingon"}, 400, "source_lang"),
        ({"text": "   ", "target_lang": "de"}, 400, "text"),
        ({"texts": ["fine", ""], "target_lang": "de"}, 400, "texts[1]"),
        ({"text": "x" * 100_001, "target_lang": "de"}, 400, "text"),
        ({"texts": ["a"] * 65, "target_lang": "de"}, 400, "texts"),
        ({**TR, "model": "nope"}, 404, "model"),
    ],
)
def test_bad_translate_input_names_the_field(
    server: Any, body: dict[str, Any], status: int, field: str
) -> None:
    r = post(server, "/v1/translate", body)
    assert r.status_code == status, r.text
    err = error_of(r)
    assert err["field"] == field, err


def test_bad_answer_and_summarize_input(server: Any) -> None:
    r = post(server, "/v1/answer", {"question": ""})
    assert (r.status_code, error_of(r)["field"]) == (400, "question")
    r = post(server, "/v1/answer", {"context": "no question"})
    assert (r.status_code, error_of(r)["field"]) == (422, "question")
    r = post(server, "/v1/summarize", {"text": "x", "max_length": 0})
    assert (r.status_code, error_of(r)["field"]) == (422, "max_length")


def test_too_long_is_input_too_long(server: Any) -> None:
    r = post(server, "/v1/summarize", {"text": "word " * 30_000})
    assert r.status_code == 400
    assert error_of(r)["code"] == "input_too_long"


@pytest.mark.parametrize("raw", [b"{not json", b'{"text": "a",}', b"\xff\xfe", b"["])
def test_malformed_json_is_400(server: Any, raw: bytes) -> None:
    r = post(server, "/v1/translate", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert error_of(r)["code"] == "invalid_json"


@pytest.mark.parametrize("raw", [b"", b"[]", b'"text"', b"null"])
def test_body_of_the_wrong_shape_is_422(server: Any, raw: bytes) -> None:
    r = post(server, "/v1/translate", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert error_of(r)["code"] == "invalid_argument"


def test_unknown_route_and_method(server: Any) -> None:
    with httpx.Client(base_url=server.http_url) as c:
        r = c.post("/v1/paraphrase", json=TR)
        m = c.get("/v1/translate")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    assert m.status_code == 405 and error_of(m)["code"] == "method_not_allowed"


def test_api_keys(server: Any) -> None:
    body = {**TR, "options": {"max_new_tokens": 2}}
    with server.api_keys("secret-1"), httpx.Client(base_url=server.http_url) as c:
        none = c.post("/v1/translate", json=body)
        wrong = c.post("/v1/translate", json=body, headers={"Authorization": "Bearer nope"})
        wrong2 = c.post("/v1/translate", json=body, headers={"X-API-Key": "nope"})
        basic = c.post("/v1/translate", json=body, headers={"Authorization": "Basic c2VjcmV0"})
        models = c.get("/v1/models")
        ok = c.post("/v1/translate", json=body, headers={"Authorization": "Bearer secret-1"})
        # Probes and metrics stay open.
        live, ready, metrics = c.get("/health/live"), c.get("/health/ready"), c.get("/metrics")
    for r in (none, wrong, wrong2, basic, models):
        assert r.status_code == 401, r.text
        assert error_of(r)["code"] == "unauthenticated"
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert "secret-1" not in wrong.text
    assert ok.status_code == 200
    assert live.status_code == ready.status_code == metrics.status_code == 200


def test_body_too_large_by_content_length(server: Any) -> None:
    r = post(server, "/v1/translate", {"text": "x" * (1 << 20), "target_lang": "de"})
    assert r.status_code == 413
    assert error_of(r)["code"] == "payload_too_large"
    assert r.headers["x-request-id"]


def test_body_too_large_when_streamed_without_length(server: Any) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"target_lang": "de", "text": "'
        for _ in range(64):
            yield b"y" * 32_768
        yield b'"}'

    with httpx.Client(base_url=server.http_url, timeout=60) as c:
        r = c.post("/v1/translate", content=chunks(),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert error_of(r)["code"] == "payload_too_large"


def test_bad_timeout_header(server: Any) -> None:
    for value in ("soon", "-1", "0", "nan", "inf"):
        r = post(server, "/v1/translate", TR, headers={"X-Request-Timeout": value})
        assert r.status_code == 400, value
        assert error_of(r)["field"] == "X-Request-Timeout"


LONG = {"strategy": "greedy", "max_new_tokens": 250, "ignore_eos": True}


def test_deadline_from_header_is_504(server: Any) -> None:
    r = post(server, "/v1/translate", {**TR, "options": LONG},
             headers={"X-Request-Timeout": "0.001"})
    assert r.status_code == 504, r.text
    assert error_of(r)["code"] == "deadline_exceeded"


def test_deadline_from_options_is_504(server: Any) -> None:
    r = post(server, "/v1/summarize", {"text": "Some text", "options": {**LONG, "timeout": 0.001}})
    assert r.status_code == 504, r.text


def test_deadline_in_a_stream_ends_with_an_error_event(server: Any) -> None:
    from support import parse_sse

    r = post(server, "/v1/translate", {**TR, "options": LONG, "stream": True},
             headers={"X-Request-Timeout": "0.001"})
    assert r.status_code == 200
    name, data = parse_sse(r.text)[-1]
    assert name == "error" and data["error"]["code"] == "deadline_exceeded"


def test_overloaded_is_429_with_retry_after(start_server: Any) -> None:
    srv = start_server(max_waiting=1, max_batch_sequences=1, grpc_enabled=False)
    body = {**TR, "options": {"max_new_tokens": 4}}
    results: list[httpx.Response] = []

    def call() -> None:
        results.append(post(srv, "/v1/translate", body))

    with queue_full(srv, call):
        rejected = post(srv, "/v1/translate", body)
        # A request whose texts do not all fit is refused whole.
        rejected_batch = post(srv, "/v1/translate", {**body, "text": None, "texts": ["a", "b"]})
    assert rejected.status_code == 429, rejected.text
    assert error_of(rejected)["code"] == "overloaded"
    assert int(rejected.headers["retry-after"]) >= 1
    assert rejected_batch.status_code == 429
    assert [r.status_code for r in results] == [200, 200]
    assert srv.waiting() == 0


async def test_many_concurrent_requests_some_get_429(start_server: Any) -> None:
    srv = start_server(max_waiting=3, max_batch_sequences=1, grpc_enabled=False)
    body = {**TR, "options": {"max_new_tokens": 4}}
    with srv.paused("step") as gate:
        async with httpx.AsyncClient(base_url=srv.http_url, timeout=60) as c:
            calls = [asyncio.create_task(c.post("/v1/translate", json=body)) for _ in range(12)]
            # Steps are held: 3 wait (the queue limit); every other one is refused at once.
            while sum(t.done() for t in calls) < 9:
                await asyncio.sleep(0.01)
            gate.set()
            rs = await asyncio.gather(*calls)
    codes = sorted(r.status_code for r in rs)
    assert codes == [200] * 3 + [429] * 9
    assert all("retry-after" in r.headers for r in rs if r.status_code == 429)
