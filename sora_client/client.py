"""`Client` and `AsyncClient`: one API over REST or gRPC, chosen by the URL's scheme
(`http://`, `https://`, `grpc://` plaintext, `grpcs://` TLS).

Every call has a deadline (the call's `timeout`, else the client's), shared by all its
attempts; overloaded and unavailable replies are retried per the client's RetryPolicy.
A stream is retried only until its first piece arrives: after that, a retry would
repeat output the caller already has.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any
from urllib.parse import urlsplit

from sora_client.grpc_transport import AsyncGrpcTransport, GrpcTransport
from sora_client.http import AsyncHttpTransport, HttpTransport
from sora_client.retry import Deadline, RetryPolicy, with_retries, with_retries_async
from sora_client.types import (
    DecodingOptions,
    DetectedLanguage,
    ModelCard,
    StreamPiece,
    Task,
    TaskCall,
    TaskResult,
)

DEFAULT_TIMEOUT_S = 60.0
Pieces = Generator[StreamPiece, None, None]  # what stream() returns
AsyncPieces = AsyncGenerator[StreamPiece, None]
_TASKS = ("translate", "summarize", "answer")


def task_call(
    task: Task,
    text: str | Sequence[str],
    *,
    target_lang: str | None = None,
    source_lang: str | None = None,
    context: str | None = None,
    model: str | None = None,
    options: DecodingOptions | None = None,
) -> TaskCall:
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, not {task!r}")
    texts = [text] if isinstance(text, str) else list(text)
    return TaskCall(task=task, texts=texts, many=not isinstance(text, str),
                    target_lang=target_lang, source_lang=source_lang, context=context,
                    model=model, options=options or DecodingOptions())


def _endpoint(url: str) -> tuple[str, str]:
    """(scheme, address): the base URL for HTTP, host:port for gRPC."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return parts.scheme, url.rstrip("/")
    if parts.scheme in ("grpc", "grpcs") and parts.netloc:
        return parts.scheme, parts.netloc
    raise ValueError(f"url must start with http://, https://, grpc:// or grpcs://, not {url!r}")


class _Base:
    _transports: tuple[type[Any], type[Any]]  # (HTTP, gRPC) transport classes

    def __init__(
        self,
        url: str = "http://localhost:8000",
        *,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        root_certificates: bytes | None = None,
        **httpx_options: Any,
    ) -> None:
        """`timeout`: default deadline per call in seconds (None: none);
        `root_certificates`: PEM roots for grpcs:// (default: the system's);
        `httpx_options` go to httpx's client (e.g. `verify=` for https://)."""
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        scheme, address = _endpoint(url)
        http, grpc = self._transports
        self._transport = (
            http(address, api_key, **httpx_options) if scheme.startswith("http")
            else grpc(address, api_key, tls=scheme == "grpcs",
                      root_certificates=root_certificates)
        )

    def _deadline(self, timeout: float | None) -> Deadline:
        return Deadline(timeout if timeout is not None else self.timeout)


class Client(_Base):
    """A blocking client. Use as a context manager, or call close().

    >>> with Client("http://localhost:8000", api_key="KEY") as sora:
    ...     sora.translate("Hello world", "de").text
    """

    _transports = (HttpTransport, GrpcTransport)
    _transport: HttpTransport | GrpcTransport

    def translate(
        self, text: str | Sequence[str], target_lang: str, *, source_lang: str | None = None,
        model: str | None = None, options: DecodingOptions | None = None,
        timeout: float | None = None,
    ) -> TaskResult:
        """Translate `text` (or each of a list of texts, batched) into `target_lang`."""
        return self._task(task_call("translate", text, target_lang=target_lang,
                                    source_lang=source_lang, model=model, options=options),
                          timeout)

    def summarize(
        self, text: str | Sequence[str], *, model: str | None = None,
        options: DecodingOptions | None = None, timeout: float | None = None,
    ) -> TaskResult:
        """Summarize `text` (or each of a list of texts)."""
        return self._task(task_call("summarize", text, model=model, options=options), timeout)

    def answer(
        self, question: str, context: str | None = None, *, model: str | None = None,
        options: DecodingOptions | None = None, timeout: float | None = None,
    ) -> TaskResult:
        """Answer `question`, from `context` when given."""
        return self._task(task_call("answer", question, context=context, model=model,
                                    options=options), timeout)

    def stream(
        self, task: Task, text: str, *, target_lang: str | None = None,
        source_lang: str | None = None, context: str | None = None, model: str | None = None,
        options: DecodingOptions | None = None, timeout: float | None = None,
    ) -> Pieces:
        """The output for one input, piece by piece as it is decoded. Leaving the loop
        early (or close()) ends the call, and the server stops decoding it."""
        call = task_call(task, text, target_lang=target_lang, source_lang=source_lang,
                         context=context, model=model, options=options)
        deadline = self._deadline(timeout)

        def first(left: float | None) -> tuple[StreamPiece | None, Pieces]:
            pieces = self._transport.stream(call, left)
            return next(pieces, None), pieces

        piece, rest = with_retries(first, self.retry, deadline)
        try:
            if piece is not None:
                yield piece
                yield from rest
        finally:
            rest.close()  # a caller that stops early ends the call: the server stops decoding

    def models(self, *, timeout: float | None = None) -> list[ModelCard]:
        """Every model the server serves."""
        return with_retries(self._transport.models, self.retry, self._deadline(timeout))

    def detect(
        self, text: str, *, top: int | None = None, timeout: float | None = None
    ) -> list[DetectedLanguage]:
        """The languages `text` is most likely in (`top` of them, server default 3),
        most likely first, over the languages the server's models serve."""
        return with_retries(lambda left: self._transport.detect(text, top, left), self.retry,
                            self._deadline(timeout))

    def _task(self, call: TaskCall, timeout: float | None) -> TaskResult:
        return with_retries(lambda left: self._transport.task(call, left), self.retry,
                            self._deadline(timeout))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """Client for asyncio: the same methods, awaited (`stream` is an async iterator).

    >>> async with AsyncClient("grpc://localhost:50051") as sora:
    ...     (await sora.summarize("A long text.")).text
    """

    _transports = (AsyncHttpTransport, AsyncGrpcTransport)
    _transport: AsyncHttpTransport | AsyncGrpcTransport

    async def translate(
        self, text: str | Sequence[str], target_lang: str, *, source_lang: str | None = None,
        model: str | None = None, options: DecodingOptions | None = None,
        timeout: float | None = None,
    ) -> TaskResult:
        """Translate `text` (or each of a list of texts, batched) into `target_lang`."""
        return await self._task(task_call("translate", text, target_lang=target_lang,
                                          source_lang=source_lang, model=model,
                                          options=options), timeout)

    async def summarize(
        self, text: str | Sequence[str], *, model: str | None = None,
        options: DecodingOptions | None = None, timeout: float | None = None,
    ) -> TaskResult:
        """Summarize `text` (or each of a list of texts)."""
        return await self._task(task_call("summarize", text, model=model, options=options),
                                timeout)

    async def answer(
        self, question: str, context: str | None = None, *, model: str | None = None,
        options: DecodingOptions | None = None, timeout: float | None = None,
    ) -> TaskResult:
        """Answer `question`, from `context` when given."""
        return await self._task(task_call("answer", question, context=context, model=model,
                                          options=options), timeout)

    async def stream(
        self, task: Task, text: str, *, target_lang: str | None = None,
        source_lang: str | None = None, context: str | None = None, model: str | None = None,
        options: DecodingOptions | None = None, timeout: float | None = None,
    ) -> AsyncPieces:
        """The output for one input, piece by piece as it is decoded; aclose() ends it."""
        call = task_call(task, text, target_lang=target_lang, source_lang=source_lang,
                         context=context, model=model, options=options)
        deadline = self._deadline(timeout)

        async def first(
            left: float | None,
        ) -> tuple[StreamPiece | None, AsyncPieces]:
            pieces = self._transport.stream(call, left)
            return await anext(pieces, None), pieces

        piece, rest = await with_retries_async(first, self.retry, deadline)
        try:
            if piece is not None:
                yield piece
                async for piece in rest:
                    yield piece
        finally:
            await rest.aclose()

    async def models(self, *, timeout: float | None = None) -> list[ModelCard]:
        """Every model the server serves."""
        return await with_retries_async(self._transport.models, self.retry,
                                        self._deadline(timeout))

    async def detect(
        self, text: str, *, top: int | None = None, timeout: float | None = None
    ) -> list[DetectedLanguage]:
        """The languages `text` is most likely in, most likely first."""
        return await with_retries_async(lambda left: self._transport.detect(text, top, left),
                                        self.retry, self._deadline(timeout))

    async def _task(self, call: TaskCall, timeout: float | None) -> TaskResult:
        return await with_retries_async(lambda left: self._transport.task(call, left),
                                        self.retry, self._deadline(timeout))

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
