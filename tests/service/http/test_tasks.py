"""The REST task endpoints against a running server: results, batching, streaming,
request ids, models, docs, CORS."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
from support import parse_sse, wait_for

# Varied output from a random-weight model: never repeat a token.
VARIED = {"no_repeat_ngram_size": 1, "max_new_tokens": 24}


def client(server: Any, **kw: Any) -> httpx.Client:
    return httpx.Client(base_url=server.http_url, timeout=60, **kw)




def test_translate_returns_text_usage_and_request_id(server: Any) -> None:
    with client(server) as c:
        r = c.post("/v1/translate", json={"text": "Hello world", "target_lang": "de",
                                          "options": VARIED})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny" and body["version"] == "1"
    [result] = body["results"]
    assert result["text"]
    assert result["finish_reason"] in ("eos", "length")
    usage = result["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["usage"] == usage
    assert len(r.headers["x-request-id"]) == 32  # generated


def test_request_id_is_echoed_on_success_and_error(server: Any) -> None:
    with client(server) as c:
        ok = c.post("/v1/translate", headers={"X-Request-ID": "trace-42"},
                    json={"text": "Hello", "target_lang": "fr", "options": {"max_new_tokens": 2}})
        bad = c.post("/v1/translate", headers={"X-Request-ID": "trace-43"}, json={})
        missing = c.get("/no/such/route", headers={"X-Request-ID": "trace-44"})
    assert ok.headers["x-request-id"] == "trace-42"
    assert bad.headers["x-request-id"] == "trace-43"
    assert missing.headers["x-request-id"] == "trace-44"


def test_texts_match_single_requests(server: Any) -> None:
    texts = ["Hello world", "How are you today?", "The quick brown fox."]
    with client(server) as c:
        batch = c.post("/v1/translate", json={"texts": texts, "target_lang": "de",
                                              "options": VARIED})
        singles = [c.post("/v1/translate", json={"text": t, "target_lang": "de",
                                                 "options": VARIED}) for t in texts]
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r["text"] for r in results] == [s.json()["results"][0]["text"] for s in singles]
    assert batch.json()["usage"]["completion_tokens"] == sum(
        r["usage"]["completion_tokens"] for r in results
    )


def test_texts_are_decoded_together(server: Any) -> None:
    """The texts of one request are admitted in one prefill step."""
    reg = server.metrics.registry
    labels = {"model": "tiny", "kind": "prefill"}

    def prefill() -> tuple[float, float]:
        return (reg.get_sample_value("sora_batch_size_count", labels) or 0.0,
                reg.get_sample_value("sora_batch_size_sum", labels) or 0.0)

    result: dict[str, httpx.Response] = {}
    with server.paused("step") as gate, client(server) as c:

        def call() -> None:
            result["r"] = c.post("/v1/summarize", json={
                "texts": ["one text", "two text", "three text"],
                "options": {"max_new_tokens": 3}})

        t = threading.Thread(target=call)
        t.start()
        wait_for(lambda: server.waiting() == 3, "three waiting sequences")
        before = prefill()
        gate.set()
        t.join()
    assert result["r"].status_code == 200
    assert len(result["r"].json()["results"]) == 3
    after = prefill()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 3)


def test_summarize_and_answer(server: Any) -> None:
    with client(server) as c:
        s = c.post("/v1/summarize", json={"text": "A long text about budgets and hiring.",
                                          "max_length": 5})
        a = c.post("/v1/answer", json={"question": "What is it?", "context": "It is a tool.",
                                       "options": {"max_new_tokens": 4}})
        a2 = c.post("/v1/answer", json={"question": "What is the capital of France?",
                                        "options": {"max_new_tokens": 4}})
    assert s.status_code == 200, s.text
    assert s.json()["results"][0]["usage"]["completion_tokens"] <= 5
    assert a.status_code == 200, a.text
    assert a2.status_code == 200, a2.text


def test_stream_equals_non_stream_for_greedy(server: Any) -> None:
    body = {"text": "Hello world, how are you?", "target_lang": "es", "options": VARIED}
    with client(server) as c:
        plain = c.post("/v1/translate", json=body).json()
        r = c.post("/v1/translate", json={**body, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    name, done = events[-1]
    assert name == "done"
    pieces = [data for name, data in events[:-1]]
    assert all(name == "message" for name, _ in events[:-1])
    assert len(pieces) > 1  # token by token
    assert {p["index"] for p in pieces} == {0}
    assert "".join(p["text"] for p in pieces) == plain["results"][0]["text"]
    assert done["results"][0]["finish_reason"] == plain["results"][0]["finish_reason"]
    assert done["results"][0]["usage"] == plain["results"][0]["usage"]
    assert done["usage"] == plain["usage"] and done["model"] == "tiny"


def test_stream_several_texts_by_index(server: Any) -> None:
    texts = ["Hello world", "Good morning"]
    with client(server) as c:
        plain = c.post("/v1/translate", json={"texts": texts, "target_lang": "it",
                                              "options": VARIED}).json()
        r = c.post("/v1/translate", json={"texts": texts, "target_lang": "it",
                                          "options": VARIED, "stream": True})
    events = parse_sse(r.text)
    assert events[-1][0] == "done"
    for i in range(2):
        text = "".join(d["text"] for n, d in events[:-1] if d["index"] == i)
        assert text == plain["results"][i]["text"]
    assert [x["index"] for x in events[-1][1]["results"]] == [0, 1]


def test_models_listing(server: Any) -> None:
    with client(server) as c:
        r = c.get("/v1/models")
        one = c.get("/v1/models/tiny")
        missing = c.get("/v1/models/nope")
    [m] = r.json()["models"]
    assert m["name"] == "tiny" and m["version"] == "1" and m["status"] == "ready"
    assert set(m["tasks"]) == {"translate", "summarize", "answer"}
    assert "de" in m["languages"] and m["device"] == "cpu"
    assert one.json() == m
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_openapi_docs(server: Any) -> None:
    with client(server) as c:
        docs = c.get("/docs")
        spec = c.get("/openapi.json").json()
    assert docs.status_code == 200
    for path in ("/v1/translate", "/v1/summarize", "/v1/answer", "/v1/models",
                 "/health/ready", "/metrics"):
        assert path in spec["paths"]


def test_cors(start_server: Any) -> None:
    srv = start_server(cors_origins=["https://app.example"], grpc_enabled=False)
    with client(srv) as c:
        r = c.options("/v1/translate", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        other = c.get("/health/live", headers={"Origin": "https://evil.example"})
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


async def test_concurrent_requests_share_batches(server: Any) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as c:
        rs = await asyncio.gather(*(
            c.post("/v1/translate", json={"text": f"Hello {i}", "target_lang": "de",
                                          "options": {"max_new_tokens": 8}})
            for i in range(16)
        ))
    assert all(r.status_code == 200 for r in rs)


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_api_key_accepted(server: Any, header: str) -> None:
    value = "Bearer k1" if header == "Authorization" else "k1"
    with server.api_keys("k0", "k1"), client(server) as c:
        r = c.post("/v1/translate", headers={header: value},
                   json={"text": "Hi", "target_lang": "de", "options": {"max_new_tokens": 2}})
    assert r.status_code == 200, r.text


def test_num_return_sequences_returns_the_n_best(server: Any) -> None:
    options = {"strategy": "beam", "beam_size": 4, "num_return_sequences": 3,
               "max_new_tokens": 8}
    with client(server) as c:
        r = c.post("/v1/translate", json={"texts": ["Hello world", "Good morning"],
                                          "target_lang": "de", "options": options})
        alone = c.post("/v1/translate", json={"text": "Hello world", "target_lang": "de",
                                              "options": {**options,
                                                          "num_return_sequences": 1}})
        bad = c.post("/v1/translate", json={"text": "Hello", "target_lang": "de",
                                            "options": {"num_return_sequences": 2}})
    assert r.status_code == 200, r.text
    for result in r.json()["results"]:
        candidates = result["candidates"]
        assert len(candidates) == 3
        assert candidates[0]["text"] == result["text"]
        assert len({c["text"] for c in candidates}) == 3
        scores = [c["score"] for c in candidates]
        assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)
    # The best of the n equals the single beam answer; no candidates without n-best.
    assert alone.json()["results"][0]["text"] == r.json()["results"][0]["text"]
    assert "candidates" not in alone.json()["results"][0]
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "options.num_return_sequences"
