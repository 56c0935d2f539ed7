"""The REST transport (httpx): request bodies, replies and Server-Sent Events.

Each attempt sends the time left of the call's deadline as `X-Request-Timeout`, so the
server stops decoding when the client would stop waiting; the socket waits a little
longer than that, so the server's own 504 is what the caller sees.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Generator
from typing import Any

import httpx

from sora_client.errors import DeadlineExceeded, SoraError, Unavailable, from_http
from sora_client.types import (
    Candidate,
    DetectedLanguage,
    ModelCard,
    Result,
    StreamPiece,
    TaskCall,
    TaskResult,
    Usage,
    known_fields,
)

TIMEOUT_GRACE_S = 1.0


def request_body(call: TaskCall, stream: bool = False) -> tuple[str, dict[str, Any]]:
    """(path, JSON body) for `call`."""
    body: dict[str, Any] = {}
    if call.task == "answer":
        body["question"] = call.texts[0]
        if call.context is not None:
            body["context"] = call.context
    elif call.many:
        body["texts"] = call.texts
    else:
        body["text"] = call.texts[0]
    if call.task == "translate":
        body["target_lang"] = call.target_lang
        if call.source_lang:
            body["source_lang"] = call.source_lang
    if call.model:
        body["model"] = call.model
    if options := call.options.given():
        body["options"] = options
    if stream:
        body["stream"] = True
    return f"/v1/{call.task}", body


def headers(api_key: str | None, seconds_left: float | None) -> dict[str, str]:
    out = {"Accept": "application/json"}
    if api_key is not None:
        out["Authorization"] = f"Bearer {api_key}"
    if seconds_left is not None:
        out["X-Request-Timeout"] = f"{seconds_left:.3f}"
    return out


def socket_timeout(seconds_left: float | None) -> httpx.Timeout:
    return httpx.Timeout(None if seconds_left is None else seconds_left + TIMEOUT_GRACE_S)


def _usage(d: dict[str, Any]) -> Usage:
    return Usage(prompt_tokens=d["prompt_tokens"], completion_tokens=d["completion_tokens"])


def _result(r: dict[str, Any]) -> Result:
    detected = r.get("detected_language")
    return Result(
        r["text"], r["finish_reason"], _usage(r["usage"]),
        candidates=[Candidate(c["text"], c["score"]) for c in r.get("candidates") or ()],
        detected_language=DetectedLanguage(detected["language"], detected["confidence"])
        if detected else None,
    )


def task_result(body: dict[str, Any]) -> TaskResult:
    return TaskResult(
        model=body["model"], version=body["version"], usage=_usage(body["usage"]),
        results=[_result(r) for r in body["results"]],
    )


def detect_body(text: str, top: int | None) -> dict[str, Any]:
    return {"text": text} if top is None else {"text": text, "top": top}


def languages(body: dict[str, Any]) -> list[DetectedLanguage]:
    return [DetectedLanguage(d["language"], d["confidence"]) for d in body["languages"]]


def model_cards(body: dict[str, Any]) -> list[ModelCard]:
    cards = []
    for card in body["models"]:
        fields = known_fields(ModelCard, card)
        if fields.get("language_pairs") is not None:  # JSON arrays -> (source, target)
            fields["language_pairs"] = [(s, t) for s, t in fields["language_pairs"]]
        cards.append(ModelCard(**fields))
    return cards


def error_for(response: httpx.Response) -> SoraError:
    """The exception for an error reply whose body has been read."""
    try:
        body = response.json()
    except ValueError:
        body = None
    return from_http(response.status_code, body, response.headers,
                     response.headers.get("x-request-id"))


def transport_error(e: httpx.TransportError) -> SoraError:
    if isinstance(e, httpx.TimeoutException):
        return DeadlineExceeded(f"no reply within the deadline ({type(e).__name__})")
    return Unavailable(f"cannot reach the server: {e or type(e).__name__}")


class SseDecoder:
    """Server-Sent Events from lines: `feed(line)` returns a StreamPiece for a finished
    event (None otherwise) and raises the error an `event: error` carries."""

    def __init__(self) -> None:
        self._name = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> StreamPiece | None:
        if line.startswith("event:"):
            self._name = line[len("event:"):].strip()
        elif line.startswith("data:"):
            self._data.append(line[len("data:"):].strip())
        elif not line.strip() and self._data:
            name, data = self._name, json.loads("\n".join(self._data))
            self._name, self._data = "message", []
            return self._piece(name, data)
        return None

    @staticmethod
    def _piece(name: str, data: dict[str, Any]) -> StreamPiece:
        if name == "error":
            raise from_http(None, data, {})  # mid-stream: the status was 200
        if name == "done":
            result = data["results"][0]
            return StreamPiece("", finish_reason=result["finish_reason"],
                               usage=_usage(result["usage"]), model=data["model"],
                               version=data["version"])
        return StreamPiece(data["text"])


class HttpTransport:
    """Blocking calls over one httpx connection pool."""

    def __init__(self, base_url: str, api_key: str | None, **httpx_options: Any) -> None:
        self._api_key = api_key
        self._http = httpx.Client(base_url=base_url, **httpx_options)

    def _send(self, method: str, path: str, body: Any, left: float | None,
              stream: bool = False) -> httpx.Response:
        request = self._http.build_request(
            method, path, json=body, headers=headers(self._api_key, left),
            timeout=socket_timeout(left),
        )
        try:
            response = self._http.send(request, stream=stream)
            if response.status_code >= 400:
                response.read()
                response.close()
                raise error_for(response)
        except httpx.TransportError as e:
            raise transport_error(e) from None
        return response

    def task(self, call: TaskCall, left: float | None) -> TaskResult:
        path, body = request_body(call)
        return task_result(self._send("POST", path, body, left).json())

    def models(self, left: float | None) -> list[ModelCard]:
        return model_cards(self._send("GET", "/v1/models", None, left).json())

    def detect(self, text: str, top: int | None, left: float | None) -> list[DetectedLanguage]:
        return languages(self._send("POST", "/v1/detect", detect_body(text, top), left).json())

    def stream(self, call: TaskCall, left: float | None) -> Generator[StreamPiece, None, None]:
        path, body = request_body(call, stream=True)
        response = self._send("POST", path, body, left, stream=True)
        decoder = SseDecoder()
        try:
            for line in response.iter_lines():
                if (piece := decoder.feed(line)) is not None:
                    yield piece
            if (piece := decoder.feed("")) is not None:
                yield piece
        except httpx.TransportError as e:
            raise transport_error(e) from None
        finally:
            response.close()

    def close(self) -> None:
        self._http.close()


class AsyncHttpTransport:
    """HttpTransport for asyncio."""

    def __init__(self, base_url: str, api_key: str | None, **httpx_options: Any) -> None:
        self._api_key = api_key
        self._http = httpx.AsyncClient(base_url=base_url, **httpx_options)

    async def _send(self, method: str, path: str, body: Any, left: float | None,
                    stream: bool = False) -> httpx.Response:
        request = self._http.build_request(
            method, path, json=body, headers=headers(self._api_key, left),
            timeout=socket_timeout(left),
        )
        try:
            response = await self._http.send(request, stream=stream)
            if response.status_code >= 400:
                await response.aread()
                await response.aclose()
                raise error_for(response)
        except httpx.TransportError as e:
            raise transport_error(e) from None
        return response

    async def task(self, call: TaskCall, left: float | None) -> TaskResult:
        path, body = request_body(call)
        return task_result((await self._send("POST", path, body, left)).json())

    async def models(self, left: float | None) -> list[ModelCard]:
        return model_cards((await self._send("GET", "/v1/models", None, left)).json())

    async def detect(
        self, text: str, top: int | None, left: float | None
    ) -> list[DetectedLanguage]:
        reply = await self._send("POST", "/v1/detect", detect_body(text, top), left)
        return languages(reply.json())

    async def stream(self, call: TaskCall, left: float | None) -> AsyncGenerator[StreamPiece, None]:
        path, body = request_body(call, stream=True)
        response = await self._send("POST", path, body, left, stream=True)
        decoder = SseDecoder()
        try:
            async for line in response.aiter_lines():
                if (piece := decoder.feed(line)) is not None:
                    yield piece
            if (piece := decoder.feed("")) is not None:
                yield piece
        except httpx.TransportError as e:
            raise transport_error(e) from None
        finally:
            await response.aclose()

    async def close(self) -> None:
        await self._http.aclose()
