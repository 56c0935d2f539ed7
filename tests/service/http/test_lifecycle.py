"""Health transitions (loading -> ready -> draining), 503 while loading and draining,
accepted requests finishing through a drain, and client disconnects cancelling work in
the engine."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import httpx
from support import Gate, wait_for, wait_until

from service.config import Settings
from service.engine.registry import ModelRegistry
from service.http.app import new_registry

BODY = {"text": "Hello world", "target_lang": "de", "options": {"max_new_tokens": 4}}
LONG = {"text": "Hello world", "target_lang": "de",
        "options": {"max_new_tokens": 250, "ignore_eos": True}}




def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=30)


class HeldRegistry(ModelRegistry):
    """Loads only once `release` is set: the server is up but not ready."""

    release: threading.Event

    async def load_all(self) -> None:
        await asyncio.to_thread(self.release.wait, 60)
        await super().load_all()


def test_not_ready_until_models_are_warm(service_checkpoint: Path, launcher: Any) -> None:
    settings = Settings(model_repository=service_checkpoint)
    registry = HeldRegistry.__new__(HeldRegistry)
    registry.__dict__.update(new_registry(settings).__dict__)
    registry.release = threading.Event()
    srv = launcher(service_checkpoint, wait_ready=False, registry=registry, grpc_enabled=False)
    try:
        wait_for(lambda: srv.server.http_port is not None, "the HTTP port")
        wait_for(lambda: _ok(srv.http_url + "/health/live"), "liveness")
        ready = get(srv.http_url + "/health/ready")
        assert ready.status_code == 503 and ready.headers["retry-after"]
        assert ready.json()["error"]["code"] == "unavailable"
        early = httpx.post(srv.http_url + "/v1/translate", json=BODY)
        assert early.status_code == 503 and early.headers["retry-after"]
        assert get(srv.http_url + "/v1/models").json() == {"models": []}
        registry.release.set()
        assert srv.server.ready.wait(60)
        assert get(srv.http_url + "/health/ready").status_code == 200
        assert httpx.post(srv.http_url + "/v1/translate", json=BODY).status_code == 200
    finally:
        registry.release.set()
        assert srv.stop() == 0


def _ok(url: str) -> bool:
    try:
        return get(url).status_code == 200
    except httpx.TransportError:
        return False


def test_drain_refuses_new_work_and_finishes_accepted(start_server: Any) -> None:
    srv = start_server(grpc_enabled=False)
    url = srv.http_url
    results: list[httpx.Response] = []
    stream_text: list[str] = []

    def call() -> None:
        results.append(httpx.post(url + "/v1/translate", json=LONG, timeout=60))

    def stream() -> None:
        r = httpx.post(url + "/v1/translate", json={**LONG, "stream": True}, timeout=60)
        stream_text.append(r.text)

    with srv.paused() as gate:
        threads = [threading.Thread(target=call), threading.Thread(target=call),
                   threading.Thread(target=stream)]
        for t in threads:
            t.start()
        wait_for(lambda: srv.accepted() == 3, "three requests accepted")
        assert get(url + "/health/ready").status_code == 200
        srv.server.request_stop()
        wait_for(lambda: get(url + "/health/ready").status_code == 503, "not ready")
        refused = httpx.post(url + "/v1/translate", json=BODY)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "unavailable"
        assert refused.headers["retry-after"]
        assert get(url + "/health/live").status_code == 200
        gate.set()
        for t in threads:
            t.join()
    assert [r.status_code for r in results] == [200, 200]
    assert all(r.json()["results"][0]["usage"]["completion_tokens"] == 250 for r in results)
    assert "event: done" in stream_text[0]
    srv.thread.join(60)
    assert srv.exit_code == 0


async def _raw_post(port: int, body: dict[str, Any]) -> tuple[asyncio.StreamReader,
                                                              asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(
        b"POST /v1/translate HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode() + data
    )
    await writer.drain()
    return reader, writer


def _cancelled_in_batch(srv: Any) -> bool:
    """The running request has been cancelled (it leaves the batch at the next step)."""
    return any(s.job.cancelled for e in srv.registry.engines() if e._batch is not None
               for s in e._batch.unique_seqs())


def _cancelled_count(srv: Any) -> float:
    value = srv.metrics.registry.get_sample_value(
        "sora_requests_total",
        {"model": "tiny", "task": "translate", "protocol": "http", "outcome": "cancelled"},
    )
    return value or 0.0


async def test_client_disconnect_cancels_the_request(start_server: Any) -> None:
    srv = start_server(grpc_enabled=False)
    with srv.paused():
        _, writer = await _raw_post(srv.server.http_port, LONG)
        await wait_until(lambda: srv.running() == 1, "the request running")
        writer.close()  # the client goes away mid-generation
        await wait_until(lambda: _cancelled_in_batch(srv), "the server to cancel it")
    await wait_until(lambda: not srv.running() and _cancelled_count(srv) >= 1,
                     "the cancelled row to leave the batch")
    assert _cancelled_count(srv) == 1
    async with httpx.AsyncClient(base_url=srv.http_url) as c:
        exposition = (await c.get("/metrics")).text
    assert 'sora_running_requests{model="tiny"} 0.0' in exposition
    assert 'sora_waiting_requests{model="tiny"} 0.0' in exposition


async def test_client_disconnect_cancels_a_stream(start_server: Any) -> None:
    srv = start_server(grpc_enabled=False)
    [engine] = srv.registry.engines()
    # Decode steps wait once 8 tokens are out (the stream has sent text by then), so the
    # request is still running when the client goes away.
    with Gate(engine.runner, "step", lambda b: int(b.n_generated.max()) >= 8):
        reader, writer = await _raw_post(srv.server.http_port, {**LONG, "stream": True})
        head = await reader.readuntil(b"data:")  # a first token arrived: it is running
        assert b"200 OK" in head
        writer.close()
    # A stream learns of the disconnect when it writes its next token; 242 are left.
    await wait_until(lambda: not srv.running() and _cancelled_count(srv) >= 1,
                     "the cancelled row to leave the batch")
    assert _cancelled_count(srv) == 1
