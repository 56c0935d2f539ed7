"""The gRPC transport (sora.v1.Sora stubs): requests, replies and error statuses.

The call's remaining deadline becomes the gRPC deadline, which the server passes to
its engine; the API key travels as `authorization: Bearer KEY` metadata.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any

import grpc

from proto.sora.v1 import sora_pb2 as pb
from proto.sora.v1 import sora_pb2_grpc
from sora_client.errors import from_grpc
from sora_client.types import (
    Candidate,
    DecodingOptions,
    DetectedLanguage,
    ModelCard,
    Result,
    StreamPiece,
    TaskCall,
    TaskResult,
    Usage,
)

STRATEGIES = {
    "greedy": pb.DecodingOptions.STRATEGY_GREEDY,
    "sample": pb.DecodingOptions.STRATEGY_SAMPLE,
    "beam": pb.DecodingOptions.STRATEGY_BEAM,
}
TASKS = {"translate": pb.TASK_TRANSLATE, "summarize": pb.TASK_SUMMARIZE,
         "answer": pb.TASK_ANSWER}
FINISH_REASONS = {pb.FINISH_REASON_EOS: "eos", pb.FINISH_REASON_LENGTH: "length"}
METHODS = {"translate": "Translate", "summarize": "Summarize", "answer": "Answer"}


def decoding_options(options: DecodingOptions) -> pb.DecodingOptions | None:
    given = options.given()
    if not given:
        return None
    strategy = given.pop("strategy", None)
    message = pb.DecodingOptions(**given)
    if strategy is not None:
        if strategy not in STRATEGIES:
            raise ValueError(f"options.strategy must be one of {sorted(STRATEGIES)}")
        message.strategy = STRATEGIES[strategy]
    return message


def request_message(call: TaskCall) -> Any:
    common: dict[str, Any] = {"model": call.model or ""}
    if (options := decoding_options(call.options)) is not None:
        common["options"] = options
    if call.task == "translate":
        return pb.TranslateRequest(texts=call.texts, target_lang=call.target_lang or "",
                                   source_lang=call.source_lang or "", **common)
    if call.task == "summarize":
        return pb.SummarizeRequest(texts=call.texts, **common)
    question = pb.Question(question=call.texts[0], context=call.context or "")
    return pb.AnswerRequest(questions=[question], **common)


def stream_message(call: TaskCall) -> pb.GenerateStreamRequest:
    message = pb.GenerateStreamRequest(
        task=TASKS[call.task], text=call.texts[0], target_lang=call.target_lang or "",
        source_lang=call.source_lang or "", context=call.context or "",
        model=call.model or "",
    )
    if (options := decoding_options(call.options)) is not None:
        message.options.CopyFrom(options)
    return message


def _usage(u: pb.Usage) -> Usage:
    return Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens)


def _detected(r: pb.Result) -> DetectedLanguage | None:
    # Stubs generated before language detection have no such field: none was detected.
    if "detected_language" not in r.DESCRIPTOR.fields_by_name or not r.HasField(
        "detected_language"
    ):
        return None
    d = r.detected_language
    return DetectedLanguage(d.language, d.confidence)


def _result(r: pb.Result) -> Result:
    return Result(
        r.text, FINISH_REASONS.get(r.finish_reason, "unspecified"), _usage(r.usage),
        candidates=[Candidate(c.text, c.score) for c in getattr(r, "candidates", ())],
        detected_language=_detected(r),
    )


def task_result(reply: Any) -> TaskResult:
    return TaskResult(
        model=reply.model, version=reply.version, usage=_usage(reply.usage),
        results=[_result(r) for r in reply.results],
    )


def languages(reply: Any) -> list[DetectedLanguage]:
    return [DetectedLanguage(d.language, d.confidence) for d in reply.languages]


def detect_message(text: str, top: int | None) -> Any:
    return pb.DetectRequest(text=text, top=top or 0)


def stream_piece(m: pb.GenerateStreamResponse) -> StreamPiece:
    if m.finish_reason == pb.FINISH_REASON_UNSPECIFIED:
        return StreamPiece(m.text)
    return StreamPiece(m.text, finish_reason=FINISH_REASONS[m.finish_reason],
                       usage=_usage(m.usage), model=m.model, version=m.version)


def model_cards(reply: pb.ListModelsResponse) -> list[ModelCard]:
    return [
        ModelCard(name=m.name, version=m.version, tasks=list(m.tasks),
                  languages=list(m.languages), device=m.device, dtype=m.dtype,
                  parameters=m.parameters, max_source_tokens=m.max_source_tokens,
                  max_new_tokens=m.max_new_tokens, status=m.state,
                  architecture=m.architecture,
                  language_pairs=[(p.source, p.target) for p in m.language_pairs] or None)
        for m in reply.models
    ]


def metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key is not None else ()


def credentials(root_certificates: bytes | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


class GrpcTransport:
    """Blocking calls over one channel."""

    def __init__(self, target: str, api_key: str | None, *, tls: bool,
                 root_certificates: bytes | None = None) -> None:
        self._channel = (grpc.secure_channel(target, credentials(root_certificates)) if tls
                         else grpc.insecure_channel(target))
        self._stub = sora_pb2_grpc.SoraStub(self._channel)
        self._metadata = metadata(api_key)

    def task(self, call: TaskCall, left: float | None) -> TaskResult:
        method = getattr(self._stub, METHODS[call.task])
        try:
            return task_result(method(request_message(call), timeout=left,
                                      metadata=self._metadata))
        except grpc.RpcError as e:
            raise from_grpc(e) from None

    def models(self, left: float | None) -> list[ModelCard]:
        try:
            return model_cards(self._stub.ListModels(pb.ListModelsRequest(), timeout=left,
                                                     metadata=self._metadata))
        except grpc.RpcError as e:
            raise from_grpc(e) from None

    def detect(self, text: str, top: int | None, left: float | None) -> list[DetectedLanguage]:
        try:
            return languages(self._stub.Detect(
                detect_message(text, top), timeout=left, metadata=self._metadata))
        except grpc.RpcError as e:
            raise from_grpc(e) from None

    def stream(self, call: TaskCall, left: float | None) -> Generator[StreamPiece, None, None]:
        replies = self._stub.GenerateStream(stream_message(call), timeout=left,
                                            metadata=self._metadata)
        try:
            for m in replies:
                yield stream_piece(m)
        except grpc.RpcError as e:
            raise from_grpc(e) from None
        finally:
            replies.cancel()  # a no-op when finished; frees the server's rows otherwise

    def close(self) -> None:
        self._channel.close()


class AsyncGrpcTransport:
    """GrpcTransport for asyncio (grpc.aio)."""

    def __init__(self, target: str, api_key: str | None, *, tls: bool,
                 root_certificates: bytes | None = None) -> None:
        self._open = lambda: (
            grpc.aio.secure_channel(target, credentials(root_certificates)) if tls
            else grpc.aio.insecure_channel(target)
        )
        self._channel: grpc.aio.Channel | None = None  # opened in the caller's event loop
        self._stub_for_channel: sora_pb2_grpc.SoraStub | None = None
        self._metadata = metadata(api_key)

    @property
    def _stub(self) -> sora_pb2_grpc.SoraStub:
        if self._stub_for_channel is None:
            self._channel = self._open()
            self._stub_for_channel = sora_pb2_grpc.SoraStub(self._channel)
        return self._stub_for_channel

    async def task(self, call: TaskCall, left: float | None) -> TaskResult:
        method = getattr(self._stub, METHODS[call.task])
        try:
            return task_result(await method(request_message(call), timeout=left,
                                            metadata=self._metadata))
        except grpc.RpcError as e:
            raise from_grpc(e) from None

    async def models(self, left: float | None) -> list[ModelCard]:
        try:
            return model_cards(await self._stub.ListModels(
                pb.ListModelsRequest(), timeout=left, metadata=self._metadata))
        except grpc.RpcError as e:
            raise from_grpc(e) from None

    async def detect(
        self, text: str, top: int | None, left: float | None
    ) -> list[DetectedLanguage]:
        try:
            return languages(await self._stub.Detect(
                detect_message(text, top), timeout=left, metadata=self._metadata))
        except grpc.RpcError as e:
            raise from_grpc(e) from None

    async def stream(self, call: TaskCall, left: float | None) -> AsyncGenerator[StreamPiece, None]:
        replies = self._stub.GenerateStream(stream_message(call), timeout=left,
                                            metadata=self._metadata)
        try:
            async for m in replies:
                yield stream_piece(m)
        except grpc.RpcError as e:
            raise from_grpc(e) from None
        finally:
            replies.cancel()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
