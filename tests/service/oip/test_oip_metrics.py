"""Requests through either Open Inference Protocol front end are labelled by protocol
in the Prometheus series (accepted ones and refusals alike)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from oip_helpers import MODEL

pytestmark = pytest.mark.timeout(120)


def text_input(data: list[str]) -> dict[str, Any]:
    return {"name": "text", "datatype": "BYTES", "shape": [len(data)], "data": data}


def test_metrics_label_oip_protocols(server: Any) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    import numpy as np

    url = f"{server.http_url}/v2/models/{MODEL}/infer"
    ok = httpx.post(url, json={"parameters": {"task": "summarize", "max_new_tokens": 2},
                               "inputs": [text_input(["Hello there."])]}, timeout=60)
    assert ok.status_code == 200, ok.text
    bad = httpx.post(url, json={"parameters": {"task": "summarize", "top_k": -1},
                                "inputs": [text_input(["x"])]}, timeout=60)
    assert bad.status_code == 400
    if server.grpc_target is not None:
        client = grpcclient.InferenceServerClient(url=server.grpc_target)
        tensor = grpcclient.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"Hello there."], dtype=np.object_))
        client.infer(MODEL, [tensor], parameters={"task": "translate", "target_lang": "de",
                                                  "max_new_tokens": 2})
        client.close()
    exposition = httpx.get(f"{server.http_url}/metrics", timeout=30).text
    lines = [ln for ln in exposition.splitlines() if ln.startswith("sora_requests_total{")]
    assert any('protocol="oip-http"' in ln and 'task="summarize"' in ln
               and 'outcome="invalid_argument"' in ln for ln in lines), lines
    assert any('protocol="oip-http"' in ln and 'outcome="invalid_argument"' not in ln
               for ln in lines), lines
    durations = [ln for ln in exposition.splitlines()
                 if ln.startswith("sora_request_duration_seconds_count{")]
    assert any('protocol="oip-http"' in ln for ln in durations), durations
    if server.grpc_target is not None:
        assert any('protocol="oip-grpc"' in ln and 'task="translate"' in ln for ln in lines)
