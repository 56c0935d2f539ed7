"""inference.GRPCInferenceService through tritonclient.grpc (an independent client,
which sends BYTES tensors as length-prefixed raw_input_contents) and through our own
stubs (bytes_contents): health, metadata, every task equal to the /v1 API's outputs,
status codes and messages, reflection, API keys."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
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

from proto.inference import grpc_service_pb2 as pb
from proto.inference import grpc_service_pb2_grpc as pb_grpc
from service.oip.tensors import decode_bytes_elements

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client(server: Any) -> Iterator[Any]:
    if server.grpc_target is None:
        pytest.skip("the gRPC front end is not available")
    c = grpcclient.InferenceServerClient(url=server.grpc_target)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(server: Any) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def bytes_input(name: str, values: list[str], shape: tuple[int, ...] | None = None) -> Any:
    arr = texts_array(values, shape)
    tensor = grpcclient.InferInput(name, list(arr.shape), "BYTES")
    tensor.set_data_from_numpy(arr)
    return tensor


def params(**values: Any) -> dict[str, pb.InferParameter]:
    out = {}
    for key, v in values.items():
        if isinstance(v, str):
            out[key] = pb.InferParameter(string_param=v)
        else:
            out[key] = pb.InferParameter(int64_param=v)
    return out


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("nope")
    server_meta = client.get_server_metadata()
    assert server_meta.name == "sora" and "binary_tensor_data" in server_meta.extensions
    meta = client.get_model_metadata(MODEL, as_json=True)
    assert (meta["name"], meta["versions"], meta["platform"]) == (MODEL, ["1"], "sora")
    inputs = {t["name"]: t for t in meta["inputs"]}
    assert inputs["text"] == {"name": "text", "datatype": "BYTES", "shape": ["-1"]}
    assert [o["name"] for o in meta["outputs"]] == ["text", "finish_reason"]


def test_translate_batch_over_raw_contents_equals_v1(client: Any, server: Any) -> None:
    result = queued_together(server, lambda: client.infer(
        MODEL, [bytes_input("text", TEXTS)], request_id="r-1",
        parameters={"task": "translate", "target_lang": "de", **OPTIONS},
    ), len(TEXTS))
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (MODEL, "1", "r-1")
    assert len(response.raw_output_contents) == len(response.outputs) == 2
    text = result.as_numpy("text")
    assert text.shape == (len(TEXTS),)
    assert decoded(text) == v1_texts(server, "translate", {"texts": TEXTS,
                                                           "target_lang": "de"})
    assert set(decoded(result.as_numpy("finish_reason"))) <= {"eos", "length"}


def test_summarize_single_keeps_the_shape(client: Any, server: Any) -> None:
    result = client.infer(MODEL, [bytes_input("text", TEXTS[1:2], (1, 1))],
                          outputs=[grpcclient.InferRequestedOutput("text")],
                          parameters={"task": "summarize", **OPTIONS})
    assert [o.name for o in result.get_response().outputs] == ["text"]
    text = result.as_numpy("text")
    assert text.shape == (1, 1)
    assert decoded(text) == v1_texts(server, "summarize", {"text": TEXTS[1]})


def test_answer_with_question_and_context(client: Any, server: Any) -> None:
    pairs = [("What is it?", "It is a small tool."), ("Who wrote it?", "Ann wrote it.")]
    result = client.infer(MODEL, [bytes_input("question", [q for q, _ in pairs]),
                                  bytes_input("context", [c for _, c in pairs])],
                          parameters=OPTIONS)
    assert decoded(result.as_numpy("text")) == v1_answers(server, pairs)


def test_bytes_contents_path(stub: pb_grpc.GRPCInferenceServiceStub, server: Any) -> None:
    request = pb.ModelInferRequest(
        model_name=MODEL, id="by-hand",
        parameters=params(task="translate", target_lang="fr", **OPTIONS),
        inputs=[pb.ModelInferRequest.InferInputTensor(
            name="text", datatype="BYTES", shape=[len(TEXTS)],
            contents=pb.InferTensorContents(bytes_contents=[t.encode() for t in TEXTS]),
        )],
    )
    reply = stub.ModelInfer(request, timeout=60)
    assert reply.id == "by-hand"
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [
        ("text", "BYTES", [len(TEXTS)]), ("finish_reason", "BYTES", [len(TEXTS)])]
    texts = [v.decode() for v in decode_bytes_elements("text", reply.raw_output_contents[0])]
    assert texts == v1_texts(server, "translate", {"texts": TEXTS, "target_lang": "fr"})


def _status(e: pytest.ExceptionInfo[InferenceServerException]) -> tuple[str, str]:
    return str(e.value.status()), e.value.message()


def test_errors_map_to_status_codes(client: Any) -> None:
    summarize = {"task": "summarize"}
    with pytest.raises(InferenceServerException) as e:
        client.infer("nope", [bytes_input("text", ["x"])], parameters=summarize)
    assert _status(e) == ("StatusCode.NOT_FOUND", "model 'nope' not found; serving tiny")

    fp32 = grpcclient.InferInput("text", [1], "FP32")
    fp32.set_data_from_numpy(np.array([1.5], dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [fp32], parameters=summarize)
    assert _status(e) == ("StatusCode.INVALID_ARGUMENT",
                          "input 'text': datatype FP32 is not supported; expected BYTES")

    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [bytes_input("context", ["x"])], parameters=summarize)
    assert _status(e)[0] == "StatusCode.INVALID_ARGUMENT"
    assert _status(e)[1].startswith("input 'text': missing")

    with pytest.raises(InferenceServerException) as e:
        client.infer(MODEL, [bytes_input("text", ["x"])], parameters={"task": "poem"})
    assert _status(e)[1].startswith("parameter 'task': unknown task 'poem'")

    with pytest.raises(InferenceServerException) as e:  # refused by the engine itself
        client.infer(MODEL, [bytes_input("text", ["fine", " "])], parameters=summarize)
    assert _status(e) == ("StatusCode.INVALID_ARGUMENT",
                          "input 'text' element 1: text must be a non-empty string")

    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata(MODEL, "9")
    assert _status(e)[0] == "StatusCode.NOT_FOUND"


def test_wrong_shape_is_invalid_argument(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = pb.ModelInferRequest(
        model_name=MODEL, parameters=params(task="summarize"),
        inputs=[pb.ModelInferRequest.InferInputTensor(
            name="text", datatype="BYTES", shape=[3],
            contents=pb.InferTensorContents(bytes_contents=[b"a", b"b"]),
        )],
    )
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(request, timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "input 'text': shape [3] holds 3 elements but the data has 2"
    request.ClearField("inputs")
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(b"\x09\x00\x00\x00abc")  # claims 9 bytes
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(request, timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "raw BYTES data is malformed" in (e.value.details() or "")


def test_reflection_describes_the_inference_service(server: Any) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        [listed, described, sora] = list(stub.ServerReflectionInfo(iter([
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="inference.GRPCInferenceService"),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="sora.v1.Sora"),
        ]), timeout=30))
    names = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "sora.v1.Sora"} <= names
    assert described.file_descriptor_response.file_descriptor_proto
    assert sora.file_descriptor_response.file_descriptor_proto


def test_api_keys_protect_inference(start_server: Any) -> None:
    running = start_server(api_keys=["k1"])
    if running.grpc_target is None:
        pytest.skip("the gRPC front end is not available")
    c = grpcclient.InferenceServerClient(url=running.grpc_target)
    try:
        with pytest.raises(InferenceServerException) as e:
            c.infer(MODEL, [bytes_input("text", ["x"])], parameters={"task": "summarize"})
        assert _status(e)[0] == "StatusCode.UNAUTHENTICATED"
        result = c.infer(MODEL, [bytes_input("text", ["x"])], headers={"x-api-key": "k1"},
                         parameters={"task": "summarize", "max_new_tokens": 2})
        assert result.as_numpy("text").shape == (1,)
    finally:
        c.close()
