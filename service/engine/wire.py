"""Messages between the server process and an engine-core process, as JSON.

A socket pair carries frames (a 4-byte big-endian length, then that many bytes), each
one JSON array: `[kind, ...]`. JSON, not pickle: nothing that
arrives can run code, and json is implemented in C, so a step's events cost one
`dumps` on the core side and one `loads` on the server side.

server -> core: ["requests", [request, ...]] | ["drain", timeout_s]
  a request:    ["submit", key, task, protocol, priority, deadline, arrival, stream,
                 params, sources, forced] | ["cancel", key]
  (forced: the token every output must start with or, mBART-cc25, starts from; or null)
core -> server: ["ready", info] | ["failed", message] | ["stopped"] | ["events", [...]]
  an event:     ["delta", key, index, text, tokens] | ["done", key, index, status,
                 token_ids, logprob, text, candidates] | ["error", key, code, message, field,
                 retry_after] | ["load", running, waiting] | ["compile", state]
                | ["request", {RequestStats}] | ["step", {StepStats}]

Deadlines and arrival times are `time.monotonic()` values: on Linux and macOS that
clock is shared by every process of the machine.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from typing import Any

from model.sampling import DecodingParams
from service.engine.errors import EngineError
from service.engine.stats import RequestStats, StepStats

HEADER = 4


def frame(message: list[Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return len(data).to_bytes(HEADER, "big") + data


def loads(data: bytes | bytearray) -> list[Any]:
    message = json.loads(data)
    if not isinstance(message, list) or not message:
        raise ValueError("engine-core message is not a JSON array")
    return message


def read_frame(sock: socket.socket) -> list[Any]:
    """The next message from a blocking socket; EOFError once the peer has gone."""
    size = int.from_bytes(_read_exactly(sock, HEADER), "big")
    return loads(_read_exactly(sock, size))


def _read_exactly(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise EOFError("engine-core peer closed the connection")
        got += k
    return buf


class FrameReader:
    """Splits a byte stream (asyncio `data_received` chunks) into messages."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[list[Any]]:
        buf = self._buf
        buf += data
        messages = []
        start = 0
        while len(buf) - start >= HEADER:
            size = int.from_bytes(buf[start : start + HEADER], "big")
            end = start + HEADER + size
            if len(buf) < end:
                break
            messages.append(loads(buf[start + HEADER : end]))
            start = end
        if start:
            del buf[:start]
        return messages


def params_to_dict(params: DecodingParams) -> dict[str, Any]:
    return dataclasses.asdict(params)


def params_from_dict(data: dict[str, Any]) -> DecodingParams:
    return DecodingParams(**data)


def error_event(key: int, error: EngineError) -> list[Any]:
    return ["error", key, error.code, error.message, error.field,
            getattr(error, "retry_after", None)]


def stats_event(record: RequestStats | StepStats) -> list[Any]:
    kind = "request" if isinstance(record, RequestStats) else "step"
    return [kind, dataclasses.asdict(record)]


def stats_from_event(kind: str, data: dict[str, Any]) -> RequestStats | StepStats:
    return RequestStats(**data) if kind == "request" else StepStats(**data)
