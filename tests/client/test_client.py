"""Client and AsyncClient against a real running server, over HTTP and gRPC: the same
answers as the raw API, typed results, errors mapped from the API's error shape, API
keys, streaming and deadlines."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import wait_for

from sora_client import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    DecodingOptions,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)

ROOT = Path(__file__).resolve().parents[2]
SHORT = DecodingOptions(max_new_tokens=6)
PROTOCOLS = ("http", "grpc")


def url(server: Any, protocol: str) -> str:
    if protocol == "http":
        return server.http_url
    if server.grpc_target is None:
        pytest.skip("the gRPC front end is not available")
    return f"grpc://{server.grpc_target}"


@pytest.fixture(params=PROTOCOLS)
def client(request: pytest.FixtureRequest, server: Any) -> Iterator[Client]:
    with Client(url(server, request.param), timeout=60) as c:
        yield c


def raw(server: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = httpx.post(server.http_url + path, json=body, timeout=60)
    reply.raise_for_status()
    return reply.json()


def test_translate_returns_what_the_api_returns(server: Any, client: Client) -> None:
    expected = raw(server, "/v1/translate", {"texts": ["Hello", "Good morning"],
                                             "target_lang": "fr",
                                             "options": {"max_new_tokens": 6}})
    got = client.translate(["Hello", "Good morning"], "fr", options=SHORT)
    assert [r.text for r in got.results] == [r["text"] for r in expected["results"]]
    assert [r.finish_reason for r in got.results] == [r["finish_reason"]
                                                      for r in expected["results"]]
    assert got.usage.prompt_tokens == expected["usage"]["prompt_tokens"]
    assert got.usage.total_tokens == expected["usage"]["total_tokens"]
    assert (got.model, got.version) == (expected["model"], expected["version"])
    single = client.translate("Hello", "fr", options=SHORT)
    assert len(single.results) == 1 and single.text == got.results[0].text


def test_summarize_and_answer(server: Any, client: Client) -> None:
    text = "The meeting covered budgets, hiring and the roadmap."
    summary = client.summarize(text, options=SHORT)
    assert summary.text == raw(server, "/v1/summarize", {
        "text": text, "options": {"max_new_tokens": 6}})["results"][0]["text"]
    answer = client.answer("What is it?", "It is a tool.", options=SHORT)
    assert answer.text == raw(server, "/v1/answer", {
        "question": "What is it?", "context": "It is a tool.",
        "options": {"max_new_tokens": 6}})["results"][0]["text"]
    assert answer.usage.completion_tokens == 6 and answer.results[0].finish_reason == "length"


def test_stream_pieces_join_to_the_unary_output(client: Client) -> None:
    pieces = list(client.stream("translate", "Hello world", target_lang="de",
                                options=DecodingOptions(max_new_tokens=12)))
    assert len(pieces) >= 3, pieces  # pieces arrive as they are decoded
    last = pieces[-1]
    assert last.finish_reason == "length" and last.usage is not None
    assert last.usage.completion_tokens == 12 and last.model == "tiny"
    assert all(p.finish_reason is None for p in pieces[:-1])
    unary = client.translate("Hello world", "de", options=DecodingOptions(max_new_tokens=12))
    assert "".join(p.text for p in pieces) == unary.text


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_leaving_a_stream_early_cancels_it_on_the_server(server: Any, protocol: str) -> None:
    client = Client(url(server, protocol))
    labels = {"model": "tiny", "task": "summarize", "protocol": protocol,
              "outcome": "cancelled"}

    def cancelled() -> float:
        return server.metrics.registry.get_sample_value("sora_requests_total", labels) or 0.0

    before = cancelled()
    long = DecodingOptions(max_new_tokens=256, ignore_eos=True)
    pieces = client.stream("summarize", "Hello", options=long)
    with server.stepwise() as (steps, _):  # the stream cannot finish on its own meanwhile
        first = threading.Thread(target=lambda: next(pieces))
        first.start()
        while first.is_alive():  # one decode step at a time until the first piece
            steps.release()
            first.join(0.005)
        pieces.close()  # what leaving a for loop over it does
    wait_for(lambda: cancelled() == before + 1, "the server to count the stream cancelled")
    wait_for(lambda: server.accepted() == 0, "the rows to be freed")
    client.close()


def test_models(client: Client) -> None:
    (card,) = client.models()
    assert card.name == "tiny" and card.status == "ready"
    assert set(card.tasks) == {"translate", "summarize", "answer"} and "de" in card.languages
    assert card.parameters > 0 and card.max_new_tokens > 0
    assert card.architecture == "sora" and card.language_pairs is None  # any pair


def test_errors_name_the_field(client: Client) -> None:
    with pytest.raises(InvalidArgument) as bad:
        client.translate("Hello", "de", options=DecodingOptions(max_new_tokens=0))
    assert bad.value.field == "options.max_new_tokens" and bad.value.code == "invalid_argument"
    with pytest.raises(NotFound) as missing:
        client.translate("Hello", "de", model="no-such-model")
    assert "no-such-model" in missing.value.message and missing.value.code == "not_found"
    with pytest.raises(InvalidArgument) as empty:
        client.summarize([], options=SHORT)
    assert empty.value.field in ("texts", "texts[0]")


def test_a_stream_error_is_raised_before_any_piece(client: Client) -> None:
    with pytest.raises(InvalidArgument) as bad:
        next(iter(client.stream("translate", "Hello", target_lang="de",
                                options=DecodingOptions(top_p=2.0))))
    assert bad.value.field == "options.top_p"


def test_http_errors_carry_status_and_request_id(server: Any) -> None:
    with Client(server.http_url) as c, pytest.raises(InvalidArgument) as bad:
        c.translate("", "de")
    assert bad.value.status == 400 and bad.value.request_id


def test_http_api_key(server: Any) -> None:
    with server.api_keys("k1"):
        with Client(server.http_url) as c, pytest.raises(Unauthenticated) as missing:
            c.models()
        assert missing.value.status == 401 and "missing" in missing.value.message
        with Client(server.http_url, api_key="wrong") as c, pytest.raises(Unauthenticated) as e:
            c.translate("Hello", "de", options=SHORT)
        assert "invalid" in e.value.message
        with Client(server.http_url, api_key="k1") as c:
            assert c.translate("Hello", "de", options=SHORT).usage.completion_tokens == 6
            assert "".join(p.text for p in c.stream("summarize", "Hello", options=SHORT))


def test_grpc_api_key(start_server: Any) -> None:
    running = start_server(api_keys=["k1"])
    target = url(running, "grpc")
    with Client(target) as c, pytest.raises(Unauthenticated) as missing:
        c.translate("Hello", "de", options=SHORT)
    assert missing.value.status == "UNAUTHENTICATED"
    with Client(target, api_key="wrong") as c, pytest.raises(Unauthenticated):
        list(c.stream("translate", "Hello", target_lang="de", options=SHORT))
    with Client(target, api_key="k1") as c:
        assert c.models()[0].name == "tiny"
        assert c.answer("What?", "A tool.", options=SHORT).usage.completion_tokens == 6


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_deadline_reaches_the_server(start_server: Any, protocol: str) -> None:
    running = start_server()
    with running.paused("step") as gate, Client(url(running, protocol)) as c:
        with pytest.raises(DeadlineExceeded):
            c.translate("Hello", "de", timeout=0.3)
        gate.set()
        assert c.translate("Hello", "de", options=SHORT).usage.completion_tokens == 6


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_async_client_matches_the_blocking_one(server: Any, protocol: str) -> None:
    address = url(server, protocol)
    with Client(address) as sync:
        expected = sync.translate(["Hello", "Good morning"], "de", options=SHORT)
        expected_answer = sync.answer("What is it?", "It is a tool.", options=SHORT)
    async with AsyncClient(address) as sora:
        got = await sora.translate(["Hello", "Good morning"], "de", options=SHORT)
        assert got == expected
        assert (await sora.answer("What is it?", "It is a tool.", options=SHORT)) == (
            expected_answer)
        assert (await sora.summarize("Hello", options=SHORT)).usage.completion_tokens == 6
        pieces = [p async for p in sora.stream("translate", "Hello", target_lang="de",
                                                options=SHORT)]
        assert "".join(p.text for p in pieces) == expected.results[0].text
        assert pieces[-1].finish_reason == "length"
        assert [m.name for m in await sora.models()] == ["tiny"]
        with pytest.raises(InvalidArgument) as bad:
            await sora.translate("Hello", "de", options=DecodingOptions(top_k=-1))
        assert bad.value.field == "options.top_k"


def test_http_and_grpc_agree(server: Any) -> None:
    if server.grpc_target is None:
        pytest.skip("the gRPC front end is not available")
    beam = DecodingOptions(strategy="beam", beam_size=3, max_new_tokens=8)
    with Client(server.http_url) as h, Client(f"grpc://{server.grpc_target}") as g:
        over_http = h.translate(["Hello", "Bonjour"], "de", options=beam)
        over_grpc = g.translate(["Hello", "Bonjour"], "de", options=beam)
        assert (over_http.model, over_http.version, over_http.usage) == (
            over_grpc.model, over_grpc.version, over_grpc.usage)
        for a, b in zip(over_http.results, over_grpc.results, strict=True):
            assert (a.text, a.finish_reason, a.usage) == (b.text, b.finish_reason, b.usage)
            if a.detected_language is not None:  # gRPC sends a float32 confidence
                assert b.detected_language is not None
                assert a.detected_language.language == b.detected_language.language
                assert a.detected_language.confidence == pytest.approx(
                    b.detected_language.confidence, rel=1e-6)
        assert h.models() == g.models()


def test_the_client_imports_neither_torch_nor_the_server() -> None:
    code = ("import sys, sora_client\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'service', 'model', 'numpy', 'fastapi'))\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_bad_urls_are_refused() -> None:
    with pytest.raises(ValueError, match="grpc://"):
        Client("localhost:8000")
