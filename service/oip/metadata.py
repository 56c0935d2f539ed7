"""Server and model metadata in the protocol's terms, as plain data both front ends
render (REST as JSON, gRPC as ServerMetadataResponse / ModelMetadataResponse)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import metadata as package_metadata

from service.engine.engine import ModelInfo
from service.engine.protocol import EngineClient
from service.oip.infer import SETTINGS

SERVER_NAME = "sora"
PLATFORM = "sora"
# binary_tensor_data: REST bodies may carry tensors as raw bytes after the JSON header.
EXTENSIONS = ("binary_tensor_data", "parameters")
VARIABLE = -1  # a dimension of any size


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # What the model serves (architecture, tasks, languages, language_pairs): strings,
    # lists comma-separated, since the protocol's parameters hold only scalars.
    parameters: dict[str, str]


_SETTING_DATATYPES = {str: "BYTES", int: "INT64", float: "FP32", bool: "BOOL"}

# The items and their per-item companions take any shape (its element count is the
# number of requests); settings are single elements. Listed in the order a reader
# needs them: the text, the answer task's inputs, languages, then decoding options.
INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("text", "BYTES", (VARIABLE,)),
    TensorSpec("question", "BYTES", (VARIABLE,)),
    TensorSpec("context", "BYTES", (VARIABLE,)),
    TensorSpec("target_lang", "BYTES", (VARIABLE,)),
    TensorSpec("source_lang", "BYTES", (VARIABLE,)),
    *(
        TensorSpec(name, _SETTING_DATATYPES[kind], (1,))
        for name, kind in SETTINGS.items()
        if name not in ("target_lang", "source_lang")
    ),
)
OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("text", "BYTES", (VARIABLE,)),
    TensorSpec("finish_reason", "BYTES", (VARIABLE,)),
)


@cache
def server_version() -> str:
    try:
        return package_metadata.version("sora")
    except package_metadata.PackageNotFoundError:  # running from a source tree
        return "unknown"


def server_metadata() -> ServerMetadata:
    return ServerMetadata(SERVER_NAME, server_version(), EXTENSIONS)


def model_parameters(info: ModelInfo) -> dict[str, str]:
    params = {"architecture": info.architecture, "tasks": ",".join(info.tasks),
              "languages": ",".join(info.languages)}
    if info.language_pairs is not None:
        params["language_pairs"] = ",".join(f"{s}-{t}" for s, t in info.language_pairs)
    return params


def model_metadata(engine: EngineClient) -> ModelMetadata:
    """One served version per model: the registry serves the newest."""
    return ModelMetadata(engine.name, (engine.version,), PLATFORM, INPUTS, OUTPUTS,
                         model_parameters(engine.info()))
