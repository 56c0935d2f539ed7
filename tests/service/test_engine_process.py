"""`sora serve`'s default: each model's engine in a process of its own. HTTP and gRPC on
one core process give the same outputs as an in-process engine, share its batches,
stream, report metrics and errors, and a cancelled client frees the core's rows."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import parse_sse, wait_for

from service.engine.core_client import CoreClient
from tests.service.conftest import RunningServer, grpc_available, launch

TEXTS = ["Hello world.", "The quick brown fox.", "Bonjour le monde.", "Ciao.", "你好，世界"]
OPTIONS = {"max_new_tokens": 12}


@pytest.fixture(scope="module")
def core_server(service_checkpoint: Path) -> Any:
    running = launch(service_checkpoint, engine_process=True)
    yield running
    running.stop()
    engine = running.registry.engines()[0]
    assert engine._process.returncode == 0  # the core exited with the server


def samples(srv: RunningServer, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(srv.http_url + "/metrics").text
    return {tuple(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.name == name}


def translate(url: str, text: str) -> dict[str, Any]:
    r = httpx.post(url + "/v1/translate", json={"text": text, "target_lang": "de",
                                                "options": OPTIONS}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["results"][0]  # type: ignore[no-any-return]


def test_the_registry_serves_from_a_core_process(core_server: RunningServer) -> None:
    engine = core_server.registry.engines()[0]
    assert isinstance(engine, CoreClient) and engine.ready
    models = httpx.get(core_server.http_url + "/v1/models").json()["models"]
    assert models[0]["name"] == "tiny" and models[0]["device"] == "cpu"


async def test_http_and_grpc_share_the_core_and_match_in_process(
    core_server: RunningServer, server: RunningServer
) -> None:
    expected = [translate(server.http_url, t)["text"] for t in TEXTS]
    async with httpx.AsyncClient(base_url=core_server.http_url, timeout=60) as c:
        calls = [c.post("/v1/translate", json={"text": t, "target_lang": "de",
                                               "options": OPTIONS}) for t in TEXTS]
        grpc_call = _grpc_translate(core_server) if grpc_available() else None
        replies = await asyncio.gather(*calls, *([grpc_call] if grpc_call else []))
    http_texts = [r.json()["results"][0]["text"] for r in replies[: len(TEXTS)]]
    assert http_texts == expected
    if grpc_call is not None:
        assert replies[-1] == expected
    requests = samples(core_server, "sora_requests_total")
    protocols = {dict(k)["protocol"] for k in requests}
    assert "http" in protocols and (not grpc_available() or "grpc" in protocols)
    decode = samples(core_server, "sora_batch_size_sum")
    steps = samples(core_server, "sora_batch_size_count")
    key = (("kind", "decode"), ("model", "tiny"))
    assert decode[key] > steps[key]  # steps with more than one row


async def _grpc_translate(srv: RunningServer) -> list[str]:
    import grpc

    from proto.sora.v1 import sora_pb2, sora_pb2_grpc

    async with grpc.aio.insecure_channel(srv.grpc_target) as channel:
        reply = await sora_pb2_grpc.SoraStub(channel).Translate(sora_pb2.TranslateRequest(
            texts=TEXTS, target_lang="de",
            options=sora_pb2.DecodingOptions(max_new_tokens=12)))
    return [r.text for r in reply.results]


def test_sse_stream_equals_the_unary_result(core_server: RunningServer) -> None:
    unary = translate(core_server.http_url, TEXTS[1])
    r = httpx.post(core_server.http_url + "/v1/translate", timeout=60, json={
        "text": TEXTS[1], "target_lang": "de", "options": OPTIONS, "stream": True})
    events = parse_sse(r.text)
    pieces = "".join(data["text"] for kind, data in events if kind == "message")
    assert pieces == unary["text"] and events[-1][0] == "done"


def test_bad_input_is_a_400_naming_the_field(core_server: RunningServer) -> None:
    r = httpx.post(core_server.http_url + "/v1/translate",
                   json={"text": "Hi", "target_lang": "xx"})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "target_lang"


def test_a_client_disconnect_cancels_the_request_in_the_core(
    core_server: RunningServer,
) -> None:
    body = {"text": "Hello", "target_lang": "de", "stream": True,
            "options": {"max_new_tokens": 250, "ignore_eos": True}}
    with httpx.stream("POST", core_server.http_url + "/v1/translate", json=body,
                      timeout=60) as r:
        next(r.iter_lines())  # generation has started; now the client goes away
    wait_for(lambda: core_server.running() == 0, "the cancelled row to leave the batch")
    wait_for(lambda: any(dict(k)["reason"] == "cancelled" for k in
                         samples(core_server, "sora_request_failures_total")),
             "the cancellation to be counted")


def test_a_dead_core_fails_liveness_and_readiness_until_replaced(
    service_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.engine.registry.RESTART_DELAYS_S", (600.0,))
    srv = launch(service_checkpoint, engine_process=True, grpc_enabled=False)
    try:
        engine = srv.registry.engines()[0]
        assert httpx.get(srv.http_url + "/health/live").status_code == 200
        os.kill(engine._process.pid, signal.SIGKILL)
        wait_for(lambda: httpx.get(srv.http_url + "/health/live").status_code == 503,
                 "liveness to fail")
        ready = httpx.get(srv.http_url + "/health/ready")
        assert ready.status_code == 503 and "tiny" in ready.json()["error"]["message"]
        r = httpx.post(srv.http_url + "/v1/translate", json={"text": "Hi", "target_lang": "de"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    finally:
        srv.stop()  # cancels the pending restart


def test_a_dead_core_is_replaced_and_counted(service_checkpoint: Path) -> None:
    srv = launch(service_checkpoint, engine_process=True, grpc_enabled=False)
    try:
        dead = srv.registry.engines()[0]
        os.kill(dead._process.pid, signal.SIGKILL)
        wait_for(lambda: srv.registry.engines()[0] is not dead and srv.registry.ready,
                 "a new engine process", limit_s=120)
        assert srv.registry.engines()[0]._process.pid != dead._process.pid
        assert httpx.get(srv.http_url + "/health/live").status_code == 200
        r = httpx.post(srv.http_url + "/v1/translate", json={"text": "Hi", "target_lang": "de"})
        assert r.status_code == 200
        restarts = samples(srv, "sora_engine_restarts_total")
        assert restarts == {(("model", "tiny"),): 1.0}
    finally:
        srv.stop()


def test_nbest_candidates_cross_the_process_boundary(
    core_server: RunningServer, server: RunningServer
) -> None:
    body = {"text": TEXTS[0], "target_lang": "de", "source_lang": "en",
            "options": {"strategy": "beam", "num_return_sequences": 3, "max_new_tokens": 8}}
    results = [httpx.post(s.http_url + "/v1/translate", json=body, timeout=60).json()
               for s in (core_server, server)]
    core, local = (r["results"][0]["candidates"] for r in results)
    assert [c["text"] for c in core] == [c["text"] for c in local] and len(core) == 3
    assert [c["score"] for c in core] == pytest.approx([c["score"] for c in local])
