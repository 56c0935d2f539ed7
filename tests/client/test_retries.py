"""Retries: against the real server's admission limit (a full queue answers 429 /
RESOURCE_EXHAUSTED with Retry-After), and against a scripted HTTP server for replies
the real one gives only in states hard to hold (503 while loading, a proxy's 502)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from support import wait_for

from sora_client import (
    NO_RETRIES,
    AsyncClient,
    Client,
    DecodingOptions,
    Overloaded,
    RetryPolicy,
    ServerError,
    SoraError,
    Unavailable,
)

SHORT = DecodingOptions(max_new_tokens=4)
OK_BODY = {
    "model": "m", "version": "1", "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                            "total_tokens": 5},
    "results": [{"text": "Hallo", "finish_reason": "eos",
                 "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}],
}


class Retries:
    """A RetryPolicy's on_retry hook that records each retry and signals the first."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, SoraError, float]] = []
        self.first = threading.Event()

    def __call__(self, n: int, error: SoraError, wait: float) -> None:
        self.seen.append((n, error, wait))
        self.first.set()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_full_queue_is_retried_after_retry_after(start_server: Any, protocol: str) -> None:
    running = start_server(max_waiting=1)
    if protocol == "grpc" and running.grpc_target is None:
        pytest.skip("the gRPC front end is not available")
    address = running.http_url if protocol == "http" else f"grpc://{running.grpc_target}"
    retries = Retries()
    outcome: list[Any] = []
    with running.paused("step") as gate:
        # One request holds the queue's only place while the engine is held.
        holder = threading.Thread(target=lambda: httpx.post(
            running.http_url + "/v1/translate", timeout=60,
            json={"text": "Hello", "target_lang": "de", "options": {"max_new_tokens": 4}}))
        holder.start()
        wait_for(lambda: running.waiting() == 1, "the holder to be queued")
        with Client(address, retry=RetryPolicy(attempts=30, on_retry=retries)) as c:
            caller = threading.Thread(
                target=lambda: outcome.append(c.translate("Hi", "fr", options=SHORT)))
            caller.start()
            assert retries.first.wait(60), "the client was never refused"
            gate.set()  # the queue drains; a retry gets in
            caller.join(60)
        holder.join(60)
    (result,) = outcome
    assert result.usage.completion_tokens == 4
    n, error, wait = retries.seen[0]
    assert n == 1 and isinstance(error, Overloaded) and error.code == "overloaded"
    assert error.status in (429, "RESOURCE_EXHAUSTED")
    assert error.retry_after is not None and error.retry_after >= 1
    assert wait == error.retry_after  # the server's hint, not the client's backoff


class Scripted:
    """A real HTTP server answering POSTs with scripted (status, headers, body) replies,
    the last one repeated; `hits` counts the requests."""

    def __init__(self, replies: list[tuple[int, dict[str, str], Any]]) -> None:
        self.replies, self.hits = replies, 0
        self.seen_headers: list[dict[str, str]] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                script.seen_headers.append(dict(self.headers))
                status, headers, body = script.replies[min(script.hits, len(script.replies)
                                                           - 1)]
                script.hits += 1
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def scripted() -> Iterator[Any]:
    servers: list[Scripted] = []

    def make(*replies: tuple[int, dict[str, str], Any]) -> Scripted:
        servers.append(Scripted(list(replies)))
        return servers[-1]

    yield make
    for s in servers:
        s.httpd.shutdown()
        s.httpd.server_close()


def _unavailable(headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
    return 503, headers, {"error": {"code": "unavailable", "message": "models are loading"}}


def test_503_waits_retry_after_then_succeeds(scripted: Any) -> None:
    server = scripted(_unavailable({"Retry-After": "1"}), (200, {}, OK_BODY))
    retries = Retries()
    with Client(server.url, retry=RetryPolicy(on_retry=retries), api_key="k") as c:
        assert c.translate("Hello", "de").text == "Hallo"
    assert server.hits == 2
    ((n, error, wait),) = retries.seen
    assert n == 1
    assert isinstance(error, Unavailable) and error.status == 503 and wait == 1.0
    assert error.message == "models are loading"
    assert all(h["Authorization"] == "Bearer k" for h in server.seen_headers)
    # Each attempt tells the server how long is left of the deadline.
    first, second = (float(h["X-Request-Timeout"]) for h in server.seen_headers)
    assert 0 < second < first <= 60


async def test_async_client_retries_too(scripted: Any) -> None:
    server = scripted(_unavailable({"Retry-After": "1"}), (200, {}, OK_BODY))
    async with AsyncClient(server.url) as c:
        assert (await c.translate("Hello", "de")).usage.total_tokens == 5
    assert server.hits == 2


def test_a_retry_after_beyond_the_deadline_is_not_waited_for(scripted: Any) -> None:
    server = scripted((429, {"Retry-After": "30"},
                       {"error": {"code": "overloaded", "message": "queue full"}}))
    with Client(server.url, timeout=5) as c, pytest.raises(Overloaded) as e:
        c.translate("Hello", "de")
    assert server.hits == 1 and e.value.retry_after == 30


def test_without_retry_after_the_client_backs_off_and_gives_up(scripted: Any) -> None:
    server = scripted(_unavailable({}))
    retries = Retries()
    policy = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.02, on_retry=retries)
    with Client(server.url, retry=policy) as c, pytest.raises(Unavailable):
        c.summarize("Hello")
    assert server.hits == 3
    assert [n for n, _, _ in retries.seen] == [1, 2]
    assert all(0 <= wait <= 0.02 for _, _, wait in retries.seen)


def test_no_retries_and_foreign_error_bodies(scripted: Any) -> None:
    server = scripted(_unavailable({"Retry-After": "1"}))
    with Client(server.url, retry=NO_RETRIES) as c, pytest.raises(Unavailable):
        c.translate("Hello", "de")
    assert server.hits == 1
    proxy = scripted((502, {"Content-Type": "text/html"}, "<html>Bad Gateway</html>"))
    with Client(proxy.url) as c, pytest.raises(ServerError) as e:
        c.answer("What?")
    assert e.value.status == 502 and proxy.hits == 1  # a 502 is not retried


def test_an_unreachable_server_is_unavailable() -> None:
    policy = RetryPolicy(attempts=2, backoff_s=0.01)
    with Client("http://127.0.0.1:9", retry=policy) as c, pytest.raises(Unavailable) as e:
        c.models()
    assert "cannot reach" in e.value.message
