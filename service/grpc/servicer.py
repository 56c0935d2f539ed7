"""The `sora.v1.Sora` service: validate, call the engine, map the result or error.

Every input of a unary call is submitted to the same engine before any is awaited, so
they join the running batch together (with everyone else's work). The client's deadline
becomes the engine timeout; a cancelled or expired call cancels its jobs, which frees
their batch rows at the engine's next step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import grpc

from model.sampling import DecodingParams
from proto.sora.v1 import sora_pb2, sora_pb2_grpc
from service.engine.autodetect import detect, route
from service.engine.engine import ModelInfo
from service.engine.errors import DeadlineExceeded, EngineError, InvalidRequest
from service.engine.protocol import EngineClient
from service.engine.registry import ModelRegistry
from service.engine.request import Completion, Job, TaskInput
from service.grpc.errors import to_grpc
from service.langdetect import Detection
from service.pieces import plan

log = logging.getLogger(__name__)

PROTOCOL = "grpc"

STRATEGIES = {
    sora_pb2.DecodingOptions.STRATEGY_UNSPECIFIED: "greedy",
    sora_pb2.DecodingOptions.STRATEGY_GREEDY: "greedy",
    sora_pb2.DecodingOptions.STRATEGY_SAMPLE: "sample",
    sora_pb2.DecodingOptions.STRATEGY_BEAM: "beam",
}
TASKS = {
    sora_pb2.TASK_TRANSLATE: "translate",
    sora_pb2.TASK_SUMMARIZE: "summarize",
    sora_pb2.TASK_ANSWER: "answer",
}
FINISH_REASONS = {"eos": sora_pb2.FINISH_REASON_EOS, "length": sora_pb2.FINISH_REASON_LENGTH}
# DecodingOptions fields with presence, copied to DecodingParams only when set.
OPTIONAL_FIELDS = (
    "max_new_tokens", "temperature", "top_k", "top_p", "seed", "beam_size", "length_penalty",
    "no_repeat_ngram_size", "min_new_tokens", "num_return_sequences",
)
# Engine field names that are decoding options in the request.
OPTION_FIELDS = {*OPTIONAL_FIELDS, "strategy", "ignore_eos", "rerank"}

# Maps an engine error's field name to the request field's path.
FieldPath = Callable[[str | None], str | None]


class RejectionRecorder(Protocol):
    """What the servicer needs from service.metrics.Metrics."""

    def request_rejected(
        self, model: str | None, task: str, protocol: str, reason: str
    ) -> None: ...


def _field_path(prefix: str, own: dict[str, str]) -> FieldPath:
    """Engine field -> request path: own input fields under `prefix`, options under
    `options.`, the deadline as `deadline`, anything else (target_lang, model) as is."""

    def path(field: str | None) -> str | None:
        if field is None:
            return None
        if field in own:
            return f"{prefix}{own[field]}"
        if field in OPTION_FIELDS:
            return f"options.{field}"
        if field == "timeout":
            return "deadline"
        return field

    return path


def decoding_params(
    options: sora_pb2.DecodingOptions | None, engine: EngineClient
) -> DecodingParams | None:
    """The request's DecodingParams, or None for the engine's defaults. Raises
    InvalidRequest naming `options.<field>`."""
    if options is None:
        return None
    strategy = STRATEGIES.get(options.strategy)
    if strategy is None:
        raise InvalidRequest(f"unknown strategy {options.strategy}", field="options.strategy")
    kwargs: dict[str, Any] = {"strategy": strategy, "ignore_eos": options.ignore_eos,
                              "rerank": options.rerank}
    for name in OPTIONAL_FIELDS:
        if options.HasField(name):
            kwargs[name] = getattr(options, name)
    kwargs.setdefault("max_new_tokens", engine.config.default_max_new_tokens)
    try:
        return DecodingParams(**kwargs)
    except ValueError as e:
        field = getattr(e, "field", None)
        raise InvalidRequest(str(e), field=f"options.{field}" if field else "options") from e


def _usage(c: Completion) -> sora_pb2.Usage:
    return sora_pb2.Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens)


def _result(c: Completion) -> sora_pb2.Result:
    return sora_pb2.Result(
        text=c.text,
        finish_reason=FINISH_REASONS.get(c.finish_reason, sora_pb2.FINISH_REASON_UNSPECIFIED),
        usage=_usage(c),
        candidates=[sora_pb2.Candidate(text=k.text, score=k.score,
                                       discriminator_score=k.discriminator_score)
                    for k in c.candidates or ()],
    )


def _score(d: Detection) -> sora_pb2.LanguageScore:
    return sora_pb2.LanguageScore(language=d.language, confidence=d.confidence)


def _model_info(info: ModelInfo) -> sora_pb2.ModelInfo:
    return sora_pb2.ModelInfo(
        name=info.name,
        version=info.version,
        tasks=list(info.tasks),
        languages=list(info.languages),
        device=info.device,
        dtype=info.dtype,
        parameters=info.parameters,
        max_source_tokens=info.max_source_tokens,
        max_new_tokens=info.max_new_tokens,
        state=info.state,
        architecture=info.architecture,
        language_pairs=[sora_pb2.LanguagePair(source=s, target=t)
                        for s, t in info.language_pairs or ()],
        can_rerank=info.can_rerank,
    )


class SoraServicer(sora_pb2_grpc.SoraServicer):
    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_batch_texts: int = 64,
        default_timeout: float | None = None,
        metrics: RejectionRecorder | None = None,
    ) -> None:
        self.registry = registry
        self.max_batch_texts = max_batch_texts
        self.default_timeout = default_timeout  # seconds, when the client sets no deadline
        self.metrics = metrics

    # -- rpcs --------------------------------------------------------------------------

    async def Translate(
        self, request: sora_pb2.TranslateRequest, context: grpc.aio.ServicerContext
    ) -> sora_pb2.TranslateResponse:
        texts = list(request.texts)
        fields = [f"texts[{i}]" for i in range(len(texts))]
        engine, detected, cut = None, None, plan(texts, html=False, glossary=None,
                                                 stream=False, text_field="texts")
        if 0 < len(texts) <= self.max_batch_texts and request.target_lang:
            try:  # source_lang empty or "auto": detect, and route to a model serving it
                cut = plan(texts, html=request.format == sora_pb2.TEXT_FORMAT_HTML,
                           glossary=dict(request.glossary), stream=False,
                           text_field=fields[0])
                chosen = route(self.registry, request.model or None,
                               request.source_lang or None, request.target_lang,
                               cut.plain(), fields)
            except EngineError as e:
                await self._reject(context, e, e.field, None, "translate")
                raise AssertionError("unreachable: abort raises") from None
            engine, detected = chosen.engine, chosen.detections
        owner = cut.owner
        inputs = [
            TaskInput(
                "translate", text, target_lang=request.target_lang or None,
                source_lang=detected[i].language if detected else request.source_lang or None,
            )
            for text, i in zip(cut.pieces, owner, strict=True)
        ]
        paths = [_field_path(fields[i], {"text": ""}) for i in owner]
        results, model, version = await self._unary(
            "translate", "texts", inputs, paths, request, context,
            engine=None if request.model else engine, items=len(texts),
        )
        out = [_result(c) for c in cut.join(results)]
        for result, d in zip(out, detected or [], strict=False):
            result.detected_language.CopyFrom(_score(d))
        return sora_pb2.TranslateResponse(
            results=out, model=model, version=version, usage=_total_usage(results),
        )

    async def Detect(
        self, request: sora_pb2.DetectRequest, context: grpc.aio.ServicerContext
    ) -> sora_pb2.DetectResponse:
        try:
            limit = self.registry.config.max_input_chars
            if not request.text:
                raise InvalidRequest("text must be a non-empty string", field="text")
            if len(request.text) > limit:
                raise InvalidRequest(
                    f"text has {len(request.text)} characters; the limit is {limit}",
                    field="text",
                )
            if not 0 <= request.top <= 10:
                raise InvalidRequest("top must be between 1 and 10 (0: 3)", field="top")
            found = detect(self.registry, request.text, top=request.top or 3)
        except EngineError as e:
            await self._reject(context, e, e.field, None, "detect")
            raise AssertionError("unreachable: abort raises") from None
        return sora_pb2.DetectResponse(languages=[_score(d) for d in found])

    async def Summarize(
        self, request: sora_pb2.SummarizeRequest, context: grpc.aio.ServicerContext
    ) -> sora_pb2.SummarizeResponse:
        inputs = [TaskInput("summarize", text) for text in request.texts]
        paths = [_field_path(f"texts[{i}]", {"text": ""}) for i in range(len(inputs))]
        results, model, version = await self._unary("summarize", "texts", inputs, paths,
                                                     request, context)
        return sora_pb2.SummarizeResponse(
            results=[_result(c) for c in results], model=model, version=version,
            usage=_total_usage(results),
        )

    async def Answer(
        self, request: sora_pb2.AnswerRequest, context: grpc.aio.ServicerContext
    ) -> sora_pb2.AnswerResponse:
        inputs = [
            TaskInput("answer", q.question, context=q.context or None) for q in request.questions
        ]
        own = {"question": ".question", "context": ".context", "text": ".question"}
        paths = [_field_path(f"questions[{i}]", own) for i in range(len(inputs))]
        results, model, version = await self._unary("answer", "questions", inputs, paths,
                                                     request, context)
        return sora_pb2.AnswerResponse(
            results=[_result(c) for c in results], model=model, version=version,
            usage=_total_usage(results),
        )

    async def GenerateStream(
        self, request: sora_pb2.GenerateStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[sora_pb2.GenerateStreamResponse]:
        task = TASKS.get(request.task)
        path = _field_path("", {"question": "text", "context": "context", "text": "text"})
        engine: EngineClient | None = None
        try:
            if task is None:
                raise InvalidRequest("task must be translate, summarize or answer", field="task")
            inp = TaskInput(
                task, request.text, target_lang=request.target_lang or None,
                source_lang=request.source_lang or None, context=request.context or None,
            )
            engine = self.registry.route([inp], request.model or None, request.version or None)
            params = decoding_params(
                request.options if request.HasField("options") else None, engine
            )
            job = engine.submit(
                inp, params, priority=request.priority, timeout=self._timeout(context),
                protocol=PROTOCOL, stream=True,
            )
        except EngineError as e:
            await self._reject(context, e, path(e.field), engine, task or "unknown")
            return
        try:
            async for delta in job.deltas():
                if delta.text or delta.tokens:
                    yield sora_pb2.GenerateStreamResponse(text=delta.text, tokens=delta.tokens)
            completion = await job.result()
        except EngineError as e:
            job.cancel()
            await _abort(context, e, path(e.field))
            return
        except BaseException:  # cancelled or expired call, or the client went away
            job.cancel()
            raise
        yield sora_pb2.GenerateStreamResponse(
            finish_reason=FINISH_REASONS.get(
                completion.finish_reason, sora_pb2.FINISH_REASON_UNSPECIFIED
            ),
            usage=_usage(completion),
            model=completion.model,
            version=completion.version,
        )

    async def ListModels(
        self, request: sora_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> sora_pb2.ListModelsResponse:
        return sora_pb2.ListModelsResponse(
            models=[_model_info(i) for i in self.registry.list()],
            default_model=self.registry.default_model or "",
        )

    # -- shared ------------------------------------------------------------------------

    async def _unary(
        self,
        task: str,
        list_field: str,
        inputs: list[TaskInput],
        paths: list[FieldPath],
        request: Any,
        context: grpc.aio.ServicerContext,
        engine: EngineClient | None = None,
        items: int | None = None,
    ) -> tuple[list[Completion], str, str]:
        """Submit every input, then wait for all; (completions, model, version). `engine`
        given: the one routing chose, else the request's model. `items`: the request's
        item count when its inputs are pieces of them (html text nodes, glossary)."""
        count = len(inputs) if items is None else items
        jobs: list[Job] = []
        path: FieldPath = _field_path("", {})
        try:
            if not count:
                raise InvalidRequest(f"{list_field} must hold at least one item",
                                     field=list_field)
            if count > self.max_batch_texts:
                raise InvalidRequest(
                    f"{list_field} holds {count} items; the limit is "
                    f"{self.max_batch_texts}",
                    field=list_field,
                )
            if engine is None:
                engine = self.registry.route(inputs, request.model or None,
                                             request.version or None)
            elif request.version:
                engine = self.registry.get(engine.name, request.version)
            params = decoding_params(
                request.options if request.HasField("options") else None, engine
            )
            timeout = self._timeout(context)
            for inp, input_path in zip(inputs, paths, strict=True):
                path = input_path  # errors from here on name this input's fields
                jobs.append(engine.submit(
                    inp, params, priority=request.priority, timeout=timeout, protocol=PROTOCOL,
                ))
        except EngineError as e:
            _cancel(jobs)
            await self._reject(context, e, path(e.field), engine, task)
            raise AssertionError("unreachable: abort raises") from None
        try:
            results = await asyncio.gather(*(job.outcome() for job in jobs))
        except EngineError as e:
            _cancel(jobs)
            index = next((i for i, j in enumerate(jobs) if j.error is e), None)
            field = paths[index](e.field) if index is not None else e.field
            await _abort(context, e, field)
            raise AssertionError("unreachable: abort raises") from None
        except BaseException:  # cancelled or expired call: free the rows
            _cancel(jobs)
            raise
        return list(results), engine.name, engine.version

    def _timeout(self, context: grpc.aio.ServicerContext) -> float | None:
        """Seconds left of the client's deadline (else the server default)."""
        remaining = context.time_remaining()
        if remaining is None:
            return self.default_timeout
        if remaining <= 0:
            raise DeadlineExceeded("the call's deadline passed before it was scheduled")
        return float(remaining)

    async def _reject(
        self,
        context: grpc.aio.ServicerContext,
        error: EngineError,
        field: str | None,
        engine: EngineClient | None,
        task: str,
    ) -> None:
        """A request the engine never accepted: count it, then abort the call."""
        if self.metrics is not None:
            try:
                self.metrics.request_rejected(
                    engine.name if engine else None, task, PROTOCOL, error.code
                )
            except Exception:
                log.exception("metrics: recording a rejection failed")
        await _abort(context, error, field)


def _total_usage(results: Sequence[Completion]) -> sora_pb2.Usage:
    return sora_pb2.Usage(
        prompt_tokens=sum(c.prompt_tokens for c in results),
        completion_tokens=sum(c.completion_tokens for c in results),
    )


def _cancel(jobs: Sequence[Job]) -> None:
    for job in jobs:
        job.cancel()


async def _abort(
    context: grpc.aio.ServicerContext, error: EngineError, field: str | None
) -> None:
    status = to_grpc(error, field)
    await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)
