"""Refusals in the protocol's terms on both front ends: a full queue is 429 with
Retry-After / RESOURCE_EXHAUSTED with `retry-after`; a draining server is 503 /
UNAVAILABLE and reports not ready."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import httpx
import pytest
from oip_helpers import MODEL
from support import wait_for

from proto.inference import grpc_service_pb2 as pb
from proto.inference import grpc_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(120)

BODY = {"parameters": {"task": "summarize", "max_new_tokens": 4},
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["Hi."]}]}


def grpc_request() -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=MODEL,
        parameters={"task": pb.InferParameter(string_param="summarize"),
                    "max_new_tokens": pb.InferParameter(int64_param=4)},
        inputs=[pb.ModelInferRequest.InferInputTensor(
            name="text", datatype="BYTES", shape=[1],
            contents=pb.InferTensorContents(bytes_contents=[b"Hi."]))],
    )


def test_overloaded_then_draining(start_server: Any) -> None:
    srv = start_server(max_waiting=1, max_batch_sequences=1)
    if srv.grpc_target is None:
        pytest.skip("the gRPC front end is not available")
    url = f"{srv.http_url}/v2/models/{MODEL}/infer"
    results: list[httpx.Response] = []

    def call() -> None:
        results.append(httpx.post(url, json=BODY, timeout=60))

    channel = grpc.insecure_channel(srv.grpc_target)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        with srv.paused() as gate:
            callers = [threading.Thread(target=call) for _ in range(2)]
            callers[0].start()
            wait_for(lambda: srv.running() == 1, "the first request running")
            callers[1].start()
            wait_for(lambda: srv.accepted() == 2, "the second request waiting")

            full = httpx.post(url, json=BODY, timeout=60)
            assert full.status_code == 429, full.text
            assert set(full.json()) == {"error"} and "overloaded" in full.json()["error"]
            assert int(full.headers["retry-after"]) >= 1
            with pytest.raises(grpc.RpcError) as e:
                stub.ModelInfer(grpc_request(), timeout=30)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "retry-after" in dict(e.value.trailing_metadata() or ())

            srv.server.request_stop()  # graceful: accepted requests still finish
            wait_for(lambda: srv.server.state.draining, "the drain to begin")
            ready = httpx.get(f"{srv.http_url}/v2/health/ready", timeout=30)
            assert ready.status_code == 503 and "shutting down" in ready.json()["error"]
            assert httpx.get(f"{srv.http_url}/v2/health/live", timeout=30).status_code == 200
            refused = httpx.post(url, json=BODY, timeout=60)
            assert refused.status_code == 503 and set(refused.json()) == {"error"}
            wait_for(lambda: not stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready,
                     "gRPC readiness to turn off")
            wait_for(lambda: all(e.state.value == "draining" for e in srv.registry.engines()),
                     "the engines to drain")
            with pytest.raises(grpc.RpcError) as e:
                stub.ModelInfer(grpc_request(), timeout=30)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            gate.set()
            for t in callers:
                t.join()
    finally:
        channel.close()
    assert [r.status_code for r in results] == [200, 200]
