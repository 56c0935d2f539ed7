"""Open Inference Protocol tensors: datatypes, shapes, and the raw byte encoding.

A `Tensor` is the protocol-neutral form both front ends decode into: a name, a
datatype, a shape and the elements flattened in row-major order (`bytes` for BYTES,
`bool`/`int`/`float` otherwise). The REST side builds it from JSON `data` or from the
binary-data extension; the gRPC side from `contents.*_contents` or
`raw_input_contents`. Every constructor checks that the shape and the data agree, so
nothing below sees an inconsistent tensor.

Raw encoding (gRPC `raw_*_contents`, REST binary data): numbers little-endian, packed;
BYTES as each element's 4-byte little-endian length followed by its bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.engine.errors import InvalidRequest

# Datatype -> the numpy dtype of its raw (little-endian) encoding; BYTES has none.
RAW_DTYPES: dict[str, str | None] = {
    "BOOL": "?",
    "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
    "BYTES": None,
}
BF16 = "BF16"  # a protocol datatype numpy cannot hold; Sora has no BF16 inputs
DATATYPES = (*RAW_DTYPES, BF16)
INTEGER_TYPES = frozenset(t for t in RAW_DTYPES if t.startswith(("INT", "UINT")))
FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Tensor:
    """One input or output tensor; `data` is flat, row-major, len == element count."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list[Any]

    @property
    def count(self) -> int:
        return len(self.data)


def bad(name: str, why: str, kind: str = "input") -> InvalidRequest:
    """An INVALID_ARGUMENT / 400 naming the tensor: `input 'text': ...`."""
    return InvalidRequest(f"{kind} '{name}': {why}")


def element_count(name: str, shape: Sequence[int]) -> int:
    """The number of elements `shape` holds; every dimension must be >= 0 (a request
    gives concrete shapes: -1 only appears in model metadata)."""
    dims = list(shape)
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in dims):
        raise bad(name, f"shape {dims} must be a list of non-negative integers")
    return math.prod(dims)


def _check_count(name: str, shape: Sequence[int], given: int) -> tuple[int, ...]:
    expected = element_count(name, shape)
    if expected != given:
        raise bad(name, f"shape {list(shape)} holds {expected} elements but the data has "
                        f"{given}")
    return tuple(shape)


def _check_datatype(name: str, datatype: str) -> None:
    if datatype not in DATATYPES:
        raise bad(name, f"unknown datatype {datatype!r}; expected one of "
                        f"{', '.join(DATATYPES)}")


# -- raw bytes -------------------------------------------------------------------------


def decode_bytes_elements(name: str, raw: bytes) -> list[bytes]:
    """Split a raw BYTES tensor into its elements (4-byte LE length, then the bytes)."""
    out: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + _LENGTH.size > end:
            raise bad(name, f"raw BYTES data is malformed: {end - offset} trailing bytes "
                            "where a 4-byte length prefix was expected")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > end:
            raise bad(name, f"raw BYTES data is malformed: element {len(out)} claims "
                            f"{length} bytes but only {end - offset} remain")
        out.append(bytes(raw[offset : offset + length]))
        offset += length
    return out


def encode_bytes_elements(values: Sequence[bytes]) -> bytes:
    """The raw encoding of BYTES elements (each prefixed with its 4-byte LE length)."""
    return b"".join(_LENGTH.pack(len(v)) + v for v in values)


def from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> Tensor:
    """A tensor from its raw bytes (gRPC raw_input_contents, REST binary data)."""
    _check_datatype(name, datatype)
    if datatype == "BYTES":
        data: list[Any] = decode_bytes_elements(name, raw)
    elif datatype == BF16:
        raise bad(name, "datatype BF16 is not supported")
    else:
        dtype = np.dtype(RAW_DTYPES[datatype])
        if len(raw) % dtype.itemsize:
            raise bad(name, f"raw {datatype} data has {len(raw)} bytes, not a multiple of "
                            f"{dtype.itemsize}")
        data = np.frombuffer(raw, dtype=dtype).tolist()
    return Tensor(name, datatype, _check_count(name, shape, len(data)), data)


def to_raw(tensor: Tensor) -> bytes:
    """The raw bytes of a tensor (the inverse of `from_raw`)."""
    if tensor.datatype == "BYTES":
        return encode_bytes_elements(tensor.data)
    dtype = RAW_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise ValueError(f"cannot encode datatype {tensor.datatype}")
    return np.asarray(tensor.data, dtype=dtype).tobytes()


# -- typed values (JSON `data`, gRPC `contents`) ---------------------------------------


def _flatten(data: Any) -> list[Any]:
    """JSON `data` may be flat or nested row-major lists."""
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _typed(name: str, datatype: str, index: int, value: Any) -> Any:
    if datatype == "BYTES":
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, bytes | bytearray):
            return bytes(value)
    elif datatype == "BOOL":
        if isinstance(value, bool):
            return value
    elif datatype in INTEGER_TYPES:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif datatype in FLOAT_TYPES:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    else:  # BF16: only as raw bytes
        raise bad(name, f"datatype {datatype} is not supported as JSON data")
    raise bad(name, f"element {index} ({value!r}) is not a valid {datatype} value")


def from_values(name: str, datatype: str, shape: Sequence[int], values: Any) -> Tensor:
    """A tensor from typed elements: REST JSON `data` (flat or nested lists; BYTES
    elements are strings) or a gRPC `contents.*_contents` field."""
    _check_datatype(name, datatype)
    flat = _flatten(values) if isinstance(values, list) else list(values)
    data = [_typed(name, datatype, i, v) for i, v in enumerate(flat)]
    return Tensor(name, datatype, _check_count(name, shape, len(data)), data)


def bytes_tensor(name: str, shape: Sequence[int], values: Sequence[bytes]) -> Tensor:
    """An output BYTES tensor."""
    return Tensor(name, "BYTES", _check_count(name, shape, len(values)), list(values))
