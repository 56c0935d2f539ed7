"""POST /v1/translate, /v1/summarize, /v1/answer: validate, submit to the engine, map
the result. `texts` are submitted together so the engine batches them; `stream: true`
answers with Server-Sent Events (see service/http/jobs.py for the event format)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from model.sampling import DecodingParams
from service.engine.autodetect import detect, route
from service.engine.protocol import EngineClient
from service.engine.request import TaskInput
from service.http.deps import (
    CallContext,
    call_context,
    get_settings,
    require_api_key,
    resolve_engine,
    serving_registry,
)
from service.http.errors import CLIENT_CLOSED_REQUEST, ApiError
from service.http.jobs import ClientDisconnected, sse_stream, submit_all, task_response, wait_all
from service.http.schemas import (
    AnswerRequest,
    DecodingOptions,
    DetectedLanguage,
    DetectRequest,
    DetectResponse,
    ErrorResponse,
    SummarizeRequest,
    TaskResponse,
    TranslateRequest,
)
from service.pieces import Plan, plan

router = APIRouter(prefix="/v1", tags=["tasks"], dependencies=[Depends(require_api_key)])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "invalid input (names the field)", 401: "missing or wrong API key",
        404: "unknown model", 413: "body too large", 422: "request does not match the schema",
        429: "overloaded (see Retry-After)", 503: "loading or shutting down (see Retry-After)",
        504: "deadline exceeded",
    }.items()
}
STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream"},
}


def _texts(
    body: TranslateRequest | SummarizeRequest, max_texts: int
) -> tuple[list[str], list[str]]:
    """The inputs and the REST field naming each one."""
    if (body.text is None) == (body.texts is None):
        raise ApiError(422, "invalid_argument", "give exactly one of text or texts", field="text")
    if body.texts is None:
        assert body.text is not None
        return [body.text], ["text"]
    if len(body.texts) > max_texts:
        raise ApiError(400, "invalid_argument",
                       f"{len(body.texts)} texts; the limit is {max_texts} per request",
                       field="texts")
    return body.texts, [f"texts[{i}]" for i in range(len(body.texts))]


def _params(
    options: DecodingOptions, engine: EngineClient, max_length: int | None = None
) -> DecodingParams:
    data = options.model_dump(exclude={"timeout"})
    if data["max_new_tokens"] is None:
        # The engine's default may exceed a small model's target length: clamp it.
        data["max_new_tokens"] = max_length or min(
            engine.config.default_max_new_tokens, engine.max_new_tokens
        )
    try:
        return DecodingParams(**data)
    except ValueError as e:
        field = getattr(e, "field", None)
        raise ApiError(400, "invalid_argument", str(e),
                       field=f"options.{field}" if field else "options") from None


def _timeout(ctx: CallContext, options: DecodingOptions, request: Request) -> float | None:
    given = [t for t in (ctx.timeout, options.timeout) if t is not None]
    if given:
        return min(given)
    return get_settings(request).request_timeout_s


async def _run(
    request: Request,
    ctx: CallContext,
    task: str,
    model: str | None,
    inputs: list[TaskInput],
    text_fields: list[str],
    options: DecodingOptions,
    stream: bool,
    max_length: int | None = None,
    engine: EngineClient | None = None,
    cut: Plan | None = None,
) -> Response | TaskResponse:
    engine = engine or resolve_engine(request, model, inputs)
    request.state.model = engine.name  # refusals from here on are counted per model
    params = _params(options, engine, max_length)
    jobs = submit_all(
        engine, inputs, params, timeout=_timeout(ctx, options, request), stream=stream,
        request_id=ctx.request_id, text_fields=text_fields,
    )
    request.state.accepted = True  # the engine reports the outcome from here on
    if stream:
        return StreamingResponse(
            sse_stream(engine, jobs),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        completions = await wait_all(request, jobs)
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    if cut is not None:
        completions = cut.join(completions)
    return task_response(engine, completions)


@router.post("/translate", response_model=TaskResponse, responses={**ERRORS, **STREAM_DOC},
             response_model_exclude_none=True)
async def translate(
    body: TranslateRequest, request: Request, ctx: CallContext = Depends(call_context)
) -> Response | TaskResponse:
    """Translate `text` (or each of `texts`) into `target_lang`; without `source_lang`
    (or with `auto`) each text's language is detected and reported."""
    texts, fields = _texts(body, get_settings(request).max_batch_texts)
    # html text nodes, then the text between glossary terms: each piece one input.
    cut = plan(texts, html=body.format == "html", glossary=body.glossary,
               stream=body.stream, text_field=fields[0])
    chosen = route(serving_registry(request), body.model, body.source_lang, body.target_lang,
                   cut.plain(), fields)
    owner = cut.owner
    detected = chosen.detections
    inputs = [TaskInput("translate", t, target_lang=body.target_lang,
                        source_lang=detected[i].language if detected else body.source_lang)
              for t, i in zip(cut.pieces, owner, strict=True)]
    response = await _run(request, ctx, "translate", body.model, inputs,
                          [fields[i] for i in owner], body.options, body.stream,
                          engine=chosen.engine, cut=cut)
    if detected and isinstance(response, TaskResponse):
        for result, d in zip(response.results, detected, strict=True):
            result.detected_language = DetectedLanguage(language=d.language,
                                                        confidence=d.confidence)
    return response


@router.post("/detect", response_model=DetectResponse, responses=ERRORS)
async def detect_language(body: DetectRequest, request: Request) -> DetectResponse:
    """The languages `text` is most likely in, over the languages the models serve."""
    registry = serving_registry(request)
    limit = get_settings(request).max_input_chars
    if len(body.text) > limit:
        raise ApiError(400, "input_too_long",
                       f"text has {len(body.text)} characters; the limit is {limit}", field="text")
    found = detect(registry, body.text, top=body.top)
    return DetectResponse(languages=[
        DetectedLanguage(language=d.language, confidence=d.confidence) for d in found
    ])


@router.post("/summarize", response_model=TaskResponse, responses={**ERRORS, **STREAM_DOC},
             response_model_exclude_none=True)
async def summarize(
    body: SummarizeRequest, request: Request, ctx: CallContext = Depends(call_context)
) -> Response | TaskResponse:
    """Summarize `text` (or each of `texts`); long documents are segmented."""
    texts, fields = _texts(body, get_settings(request).max_batch_texts)
    inputs = [TaskInput("summarize", t) for t in texts]
    return await _run(request, ctx, "summarize", body.model, inputs, fields, body.options,
                      body.stream, max_length=body.max_length)


@router.post("/answer", response_model=TaskResponse, responses={**ERRORS, **STREAM_DOC},
             response_model_exclude_none=True)
async def answer(
    body: AnswerRequest, request: Request, ctx: CallContext = Depends(call_context)
) -> Response | TaskResponse:
    """Answer `question`, from `context` when given."""
    inputs = [TaskInput("answer", body.question, context=body.context)]
    return await _run(request, ctx, "answer", body.model, inputs, ["question"], body.options,
                      body.stream)
