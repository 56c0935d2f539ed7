"""Language detection (`detect`, `detected_language`) and n-best candidates through the
client, over HTTP and gRPC, compared with the raw REST API. Each test runs where the
server has the feature (its OpenAPI schema says so) and skips, saying why, elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proto.sora.v1 import sora_pb2
from sora_client import Client, DecodingOptions, InvalidArgument

GERMAN = "Dieses Paket enthält die Entwicklungsdateien und die Dokumentation."


def openapi(server: Any) -> dict[str, Any]:
    return httpx.get(server.http_url + "/openapi.json").json()


def need_detection(server: Any, protocol: str) -> None:
    if "/v1/detect" not in openapi(server)["paths"]:
        pytest.skip("this server has no POST /v1/detect")
    if protocol == "grpc" and not hasattr(sora_pb2, "DetectRequest"):
        pytest.skip("these gRPC stubs have no Detect rpc")


def need_candidates(server: Any, protocol: str) -> None:
    schemas = openapi(server)["components"]["schemas"]
    if "num_return_sequences" not in schemas["DecodingOptions"]["properties"]:
        pytest.skip("this server has no options.num_return_sequences")
    if protocol == "grpc" and not hasattr(sora_pb2, "Candidate"):
        pytest.skip("these gRPC stubs have no Result.candidates")


@pytest.fixture(params=["http", "grpc"])
def protocol(request: pytest.FixtureRequest, server: Any) -> str:
    if request.param == "grpc" and server.grpc_target is None:
        pytest.skip("the gRPC front end is not available")
    return str(request.param)


@pytest.fixture
def client(server: Any, protocol: str) -> Iterator[Client]:
    address = server.http_url if protocol == "http" else f"grpc://{server.grpc_target}"
    with Client(address) as c:
        yield c


def test_detect(server: Any, protocol: str, client: Client) -> None:
    need_detection(server, protocol)
    expected = httpx.post(server.http_url + "/v1/detect", json={"text": GERMAN}).json()
    found = client.detect(GERMAN)
    assert [d.language for d in found] == [d["language"] for d in expected["languages"]]
    assert found[0].language == "de"
    assert found[0].confidence == pytest.approx(expected["languages"][0]["confidence"],
                                                rel=1e-6)
    assert all(0 <= d.confidence <= 1 for d in found)
    assert [d.confidence for d in found] == sorted((d.confidence for d in found), reverse=True)
    (only,) = client.detect(GERMAN, top=1)
    assert only.language == "de"
    with pytest.raises(InvalidArgument) as empty:
        client.detect("")
    assert empty.value.field == "text"


def test_translate_reports_the_detected_language(
    server: Any, protocol: str, client: Client
) -> None:
    need_detection(server, protocol)
    options = DecodingOptions(max_new_tokens=4)
    detected = client.translate(GERMAN, "en", options=options).results[0].detected_language
    assert detected is not None and detected.language == "de" and detected.confidence > 0
    given = client.translate(GERMAN, "en", source_lang="de", options=options)
    assert given.results[0].detected_language is None


def test_n_best_candidates(server: Any, protocol: str, client: Client) -> None:
    need_candidates(server, protocol)
    beam = DecodingOptions(strategy="beam", beam_size=4, num_return_sequences=3,
                           max_new_tokens=8)
    result = client.translate("Hello world", "de", options=beam).results[0]
    expected = httpx.post(server.http_url + "/v1/translate", json={
        "text": "Hello world", "target_lang": "de",
        "options": {"strategy": "beam", "beam_size": 4, "num_return_sequences": 3,
                    "max_new_tokens": 8}}).json()["results"][0]["candidates"]
    assert [c.text for c in result.candidates] == [c["text"] for c in expected]
    assert len(result.candidates) == 3 and result.candidates[0].text == result.text
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True)
    plain = client.translate("Hello world", "de", options=DecodingOptions(max_new_tokens=8))
    assert plain.results[0].candidates == []
