"""The /v2 REST endpoints through tritonclient.http (an independent Open Inference
Protocol client): health, metadata, inference for every task (JSON and binary tensor
data) equal to the /v1 API's outputs, and the protocol's error shape and codes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from oip_helpers import (
    MODEL,
    OPTIONS,
    TEXTS,
    decoded,
    queued_together,
    texts_array,
    v1_answers,
    v1_texts,
)

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client(http_target: str) -> Iterator[Any]:
    c = httpclient.InferenceServerClient(url=http_target, network_timeout=60.0)
    yield c
    c.close()


def bytes_input(name: str, values: list[str], shape: tuple[int, ...] | None = None,
                binary: bool = True) -> Any:
    arr = texts_array(values, shape)
    tensor = httpclient.InferInput(name, list(arr.shape), "BYTES")
    tensor.set_data_from_numpy(arr, binary_data=binary)
    return tensor


def test_health_and_server_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "sora"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_ready_and_metadata(client: Any) -> None:
    assert client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("nope")
    assert not client.is_model_ready(MODEL, "7")
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"] and meta["platform"] == "sora"
    inputs = {t["name"]: t for t in meta["inputs"]}
    assert inputs["text"] == {"name": "text", "datatype": "BYTES", "shape": [-1]}
    assert {"question", "context", "target_lang", "task", "max_new_tokens"} <= set(inputs)
    assert [o["name"] for o in meta["outputs"]] == ["text", "finish_reason"]
    assert client.get_model_metadata(MODEL, "1") == meta


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_translate_batch_equals_v1(http_target: str, server: Any, binary: bool) -> None:
    outputs = [httpclient.InferRequestedOutput("text", binary_data=binary),
               httpclient.InferRequestedOutput("finish_reason", binary_data=binary)]

    def call() -> Any:  # a client of its own: gevent clients stay on their thread
        own = httpclient.InferenceServerClient(url=http_target, network_timeout=60.0)
        try:
            return own.infer(MODEL, [bytes_input("text", TEXTS, binary=binary)],
                             outputs=outputs, request_id="req-7",
                             parameters={"task": "translate", "target_lang": "de", **OPTIONS})
        finally:
            own.close()

    result = queued_together(server, call, len(TEXTS))
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        MODEL, "1", "req-7")
    text = result.as_numpy("text")
    assert text.shape == (len(TEXTS),)
    assert decoded(text) == v1_texts(server, "translate", {"texts": TEXTS,
                                                           "target_lang": "de"})
    assert set(decoded(result.as_numpy("finish_reason"))) <= {"eos", "length"}


def test_single_summarize_keeps_a_two_dimensional_shape(client: Any, server: Any) -> None:
    result = client.infer(MODEL, [bytes_input("text", TEXTS[:1], (1, 1))],
                          parameters={"task": "summarize", **OPTIONS})
    text = result.as_numpy("text")
    assert text.shape == (1, 1)
    assert decoded(text) == v1_texts(server, "summarize", {"text": TEXTS[0]})


def test_answer_with_question_and_context_inputs(client: Any, server: Any) -> None:
    pairs = [("What is it?", "It is a small tool."), ("Who wrote it?", "Ann wrote it.")]
    inputs = [bytes_input("question", [q for q, _ in pairs]),
              bytes_input("context", [c for _, c in pairs])]
    outputs = [httpclient.InferRequestedOutput("text")]
    result = client.infer(MODEL, inputs, outputs=outputs, parameters=OPTIONS)
    assert result.as_numpy("finish_reason") is None  # only what was asked for
    assert decoded(result.as_numpy("text")) == v1_answers(server, pairs)


def test_options_as_inputs_and_languages_per_element(client: Any, server: Any) -> None:
    max_new = httpclient.InferInput("max_new_tokens", [1], "INT32")
    max_new.set_data_from_numpy(np.array([OPTIONS["max_new_tokens"]], dtype=np.int32))
    result = client.infer(MODEL, [
        bytes_input("text", TEXTS[:2]), bytes_input("task", ["translate"]),
        bytes_input("target_lang", ["de", "fr"]), max_new,
    ], parameters={"no_repeat_ngram_size": 1})
    expected = [v1_texts(server, "translate", {"text": TEXTS[0], "target_lang": "de"})[0],
                v1_texts(server, "translate", {"text": TEXTS[1], "target_lang": "fr"})[0]]
    assert decoded(result.as_numpy("text")) == expected


def test_curl_style_json_body(server: Any) -> None:
    body = {"id": "42", "parameters": {"task": "summarize", **OPTIONS},
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                        "data": [TEXTS[0]]}]}
    r = httpx.post(f"{server.http_url}/v2/models/{MODEL}/versions/1/infer", json=body,
                   timeout=60)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "42" and doc["model_version"] == "1"
    [text, reason] = doc["outputs"]
    assert text == {"name": "text", "datatype": "BYTES", "shape": [1],
                    "data": v1_texts(server, "summarize", {"text": TEXTS[0]})}
    assert reason["name"] == "finish_reason"


def _error(exc: pytest.ExceptionInfo[InferenceServerException]) -> tuple[str, str]:
    return str(exc.value.status()), exc.value.message()


def test_errors_follow_the_protocol(client: Any) -> None:
    params = {"task": "summarize"}
    with pytest.raises(InferenceServerException) as e:
        client.infer("nope", [bytes_input("text", ["x"])], parameters=params)
    assert _error(e) == ("404", "model 'nope' not found; serving tiny")
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [bytes_input("text", ["x"])], model_version="9",
                     parameters=params)
    assert _error(e)[0] == "404" and "version '9'" in _error(e)[1]

    fp32 = httpclient.InferInput("text", [1], "FP32")
    fp32.set_data_from_numpy(np.array([1.5], dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [fp32], parameters=params)
    assert _error(e) == ("400", "input 'text': datatype FP32 is not supported; "
                                "expected BYTES")

    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [bytes_input("question", ["Why?"])], parameters=params)
    assert _error(e) == ("400", "input 'text': missing: a BYTES tensor with one element "
                                "per text is required")

    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [bytes_input("text", ["x"])],
                     parameters={"task": "summarize", "top_p": 3.0})
    assert _error(e) == ("400", "parameter 'top_p': must be in (0, 1]")

    with pytest.raises(InferenceServerException) as e:  # refused by the engine itself
        client.infer(MODEL, [bytes_input("text", ["x"])], parameters={"task": "translate"})
    assert _error(e) == ("400", "parameter 'target_lang': target_lang is required for "
                                "translate")


def test_wrong_shape_and_malformed_bodies_get_400(server: Any) -> None:
    url = f"{server.http_url}/v2/models/{MODEL}/infer"
    wrong_shape = {"parameters": {"task": "summarize"},
                   "inputs": [{"name": "text", "datatype": "BYTES", "shape": [3],
                               "data": ["a", "b"]}]}
    r = httpx.post(url, json=wrong_shape, timeout=60)
    assert r.status_code == 400
    assert r.json() == {"error": "input 'text': shape [3] holds 3 elements but the data "
                                 "has 2"}
    r = httpx.post(url, content=b"{not json", timeout=60)
    assert r.status_code == 400 and r.json()["error"].startswith("malformed JSON")
    r = httpx.get(f"{server.http_url}/v2/no/such/thing", timeout=60)
    assert r.status_code == 404 and set(r.json()) == {"error"}


def test_api_key_applies_but_health_stays_open(server: Any, http_target: str) -> None:
    with server.api_keys("k1"):
        c = httpclient.InferenceServerClient(url=http_target)
        try:
            assert c.is_server_live() and c.is_server_ready()
            with pytest.raises(InferenceServerException) as e:
                c.get_model_metadata(MODEL)
            assert _error(e) == ("401", "missing API key")
            meta = c.get_model_metadata(MODEL, headers={"Authorization": "Bearer k1"})
            assert meta["name"] == MODEL
        finally:
            c.close()
