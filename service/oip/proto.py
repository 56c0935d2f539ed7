"""The gRPC (protobuf) encoding of inference requests and responses.

Input data may come in `contents.<type>_contents` or in `raw_input_contents` (one
entry per input, in order; tritonclient sends raw by default), never both in one
request. Outputs always go in `raw_output_contents`, as Triton answers: that is what
tritonclient's `InferResult.as_numpy` reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from proto.inference import grpc_service_pb2 as pb
from service.engine.errors import InvalidRequest
from service.oip.infer import InferRequest, Scalar
from service.oip.metadata import ModelMetadata, ServerMetadata, TensorSpec
from service.oip.tensors import Tensor, from_raw, from_values, to_raw

# Datatype -> the InferTensorContents field that carries it (BF16/FP16: raw only).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_value(param: pb.InferParameter) -> Scalar | None:
    """The value an InferParameter holds (None when no choice is set)."""
    choice = param.WhichOneof("parameter_choice")
    return None if choice is None else getattr(param, choice)


def _tensor(spec: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> Tensor:
    name = spec.name
    if not name:
        raise InvalidRequest("every input needs a name")
    if raw is not None:
        if spec.HasField("contents"):
            raise InvalidRequest(f"input '{name}': data given both in contents and in "
                                 "raw_input_contents")
        return from_raw(name, spec.datatype, list(spec.shape), raw)
    field_name = CONTENTS_FIELDS.get(spec.datatype)
    if field_name is None:  # unknown datatype, or one that only travels raw
        return from_raw(name, spec.datatype, list(spec.shape), b"")
    return from_values(name, spec.datatype, list(spec.shape),
                       list(getattr(spec.contents, field_name)))


def parse_infer_request(request: pb.ModelInferRequest) -> InferRequest:
    """Decode a ModelInferRequest. Raises InvalidRequest naming what is wrong."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(f"raw_input_contents has {len(raw)} entries for "
                             f"{len(request.inputs)} inputs; give one per input, in order")
    inputs = [
        _tensor(spec, raw[i] if raw else None) for i, spec in enumerate(request.inputs)
    ]
    params: dict[str, Scalar] = {}
    for key, param in request.parameters.items():
        value = parameter_value(param)
        if value is None:
            raise InvalidRequest(f"parameter '{key}' has no value")
        params[key] = value
    return InferRequest(
        model_name=request.model_name,
        model_version=request.model_version or None,
        id=request.id,
        parameters=params,
        inputs=inputs,
        outputs=[o.name for o in request.outputs],
    )


def infer_response(
    request: InferRequest, model: str, version: str, outputs: Sequence[Tensor]
) -> pb.ModelInferResponse:
    return pb.ModelInferResponse(
        model_name=model,
        model_version=version,
        id=request.id,
        outputs=[
            pb.ModelInferResponse.InferOutputTensor(
                name=t.name, datatype=t.datatype, shape=list(t.shape)
            )
            for t in outputs
        ],
        raw_output_contents=[to_raw(t) for t in outputs],
    )


def _spec(t: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=t.name, datatype=t.datatype, shape=list(t.shape)
    )


def server_metadata_response(meta: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(
        name=meta.name, version=meta.version, extensions=list(meta.extensions)
    )


def model_metadata_response(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=meta.name,
        versions=list(meta.versions),
        platform=meta.platform,
        inputs=[_spec(t) for t in meta.inputs],
        outputs=[_spec(t) for t in meta.outputs],
        parameters={k: pb.InferParameter(string_param=v) for k, v in meta.parameters.items()},
    )
