"""The REST (HTTP/JSON) encoding of inference requests and responses.

A body is a JSON object, optionally followed by raw tensor bytes (the protocol's
binary tensor data extension, which tritonclient uses by default): the
`Inference-Header-Content-Length` header gives the JSON part's length, and each input
whose `parameters.binary_data_size` is set takes that many bytes, in input order.
Outputs are returned the same way when the request asks for it (`binary_data_output`
request parameter, or `parameters.binary_data` on a requested output), else as JSON
`data` (BYTES elements as UTF-8 strings).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from service.engine.errors import InvalidRequest
from service.oip.infer import InferRequest, Scalar
from service.oip.metadata import ModelMetadata, ServerMetadata, TensorSpec
from service.oip.tensors import Tensor, from_raw, from_values, to_raw

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_SIZE = "binary_data_size"
BINARY_OUTPUT = "binary_data_output"


@dataclass
class RestInferRequest:
    request: InferRequest
    binary_default: bool = False  # `binary_data_output`: outputs as raw bytes
    binary: dict[str, bool] = field(default_factory=dict)  # per requested output

    def wants_binary(self, output: str) -> bool:
        return self.binary.get(output, self.binary_default)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    return value


def _parameters(value: Any, what: str) -> dict[str, Scalar]:
    params = _object(value if value is not None else {}, f"{what} 'parameters'")
    for name, v in params.items():
        if not isinstance(v, bool | int | float | str):
            raise InvalidRequest(f"parameter '{name}': {v!r} is not a boolean, number or "
                                 "string")
    return params


def _header_length(raw: str | None, body_size: int) -> int | None:
    if raw is None:
        return None
    if not raw.strip().isdigit() or int(raw) > body_size:
        raise InvalidRequest(f"{HEADER_LENGTH} must be an integer between 0 and the body's "
                             f"length ({body_size}), not {raw!r}")
    return int(raw)


def _input(spec: Any, index: int, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    """One input tensor and the binary offset after it."""
    obj = _object(spec, f"inputs[{index}]")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"inputs[{index}] needs a 'name' string")
    datatype, shape = obj.get("datatype"), obj.get("shape")
    if not isinstance(datatype, str):
        raise InvalidRequest(f"input '{name}': 'datatype' must be a string such as BYTES")
    if not isinstance(shape, list):
        raise InvalidRequest(f"input '{name}': 'shape' must be a list of integers")
    size = _parameters(obj.get("parameters"), f"input '{name}'").get(BINARY_SIZE)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidRequest(f"input '{name}': {BINARY_SIZE} must be a non-negative "
                                 "integer")
        if "data" in obj:
            raise InvalidRequest(f"input '{name}': give 'data' or {BINARY_SIZE}, not both")
        if offset + size > len(binary):
            raise InvalidRequest(f"input '{name}': {BINARY_SIZE} is {size} but only "
                                 f"{len(binary) - offset} binary bytes remain in the body")
        raw = bytes(binary[offset : offset + size])
        return from_raw(name, datatype, shape, raw), offset + size
    if "data" not in obj:
        raise InvalidRequest(f"input '{name}': 'data' is required (or binary data with "
                             f"parameters.{BINARY_SIZE})")
    return from_values(name, datatype, shape, obj["data"]), offset


def parse_infer_request(
    body: bytes, header_length: str | None, model: str, version: str | None
) -> RestInferRequest:
    """Decode a POST /v2/models/{model}[/versions/{version}]/infer body. Raises
    InvalidRequest naming what is wrong."""
    split = _header_length(header_length, len(body))
    head = body if split is None else body[:split]
    try:
        doc = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidRequest(f"malformed JSON request body: {e}") from None
    obj = _object(doc, "the request body")
    binary = memoryview(body)[len(head):]
    inputs_json = obj.get("inputs")
    if not isinstance(inputs_json, list) or not inputs_json:
        raise InvalidRequest("'inputs' must be a non-empty list of tensors")
    inputs: list[Tensor] = []
    offset = 0
    for i, spec in enumerate(inputs_json):
        tensor, offset = _input(spec, i, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidRequest(f"the body has {len(binary) - offset} binary bytes that no "
                             f"input claims with {BINARY_SIZE}")
    params = _parameters(obj.get("parameters"), "the request's")
    binary_default = params.pop(BINARY_OUTPUT, False)
    outputs_json = obj.get("outputs") or []
    if not isinstance(outputs_json, list):
        raise InvalidRequest("'outputs' must be a list")
    outputs: list[str] = []
    binary_outputs: dict[str, bool] = {}
    for i, spec in enumerate(outputs_json):
        out = _object(spec, f"outputs[{i}]")
        name = out.get("name")
        if not isinstance(name, str):
            raise InvalidRequest(f"outputs[{i}] needs a 'name' string")
        outputs.append(name)
        flag = _parameters(out.get("parameters"), f"output '{name}'").get("binary_data")
        if flag is not None:
            binary_outputs[name] = bool(flag)
    request_id = obj.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidRequest("'id' must be a string")
    request = InferRequest(model, version, request_id, params, inputs, outputs)
    return RestInferRequest(request, bool(binary_default), binary_outputs)


def _data(tensor: Tensor) -> list[Any]:
    if tensor.datatype == "BYTES":
        return [v.decode("utf-8", errors="replace") for v in tensor.data]
    return list(tensor.data)


def encode_infer_response(
    rest: RestInferRequest, model: str, version: str, outputs: Sequence[Tensor]
) -> tuple[bytes, int | None]:
    """(body, JSON header length, or None when the body is plain JSON)."""
    out_json: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype,
                                 "shape": list(tensor.shape)}
        if rest.wants_binary(tensor.name):
            raw = to_raw(tensor)
            entry["parameters"] = {BINARY_SIZE: len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _data(tensor)
        out_json.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": version}
    if rest.request.id:
        doc["id"] = rest.request.id
    doc["outputs"] = out_json
    head = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def _spec(t: TensorSpec) -> dict[str, Any]:
    return {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}


def server_metadata_json(meta: ServerMetadata) -> dict[str, Any]:
    return {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}


def model_metadata_json(meta: ModelMetadata) -> dict[str, Any]:
    return {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": [_spec(t) for t in meta.inputs],
        "outputs": [_spec(t) for t in meta.outputs],
        "parameters": dict(meta.parameters),
    }
