"""LibreTranslate's API on the same registry, engines and batching as /v1, so its
clients and front ends work against Sora unchanged:

    POST /translate          q (text or, in JSON, a list), source (code or auto), target,
                             format (text|html), alternatives, api_key
    POST /detect             q -> [{"confidence": 0-100, "language"}], best first
    GET  /languages          [{"code", "name", "targets"}] (open, as in LibreTranslate)
    GET  /frontend/settings  what LibreTranslate's web front end reads (open)

Bodies are JSON or form-encoded (plus query parameters, as Flask's `request.values`).
Errors are LibreTranslate's `{"error": "message"}` with its statuses: 400 for bad
input and a missing API key, 403 for a wrong one, 429 ("Slowdown: ...") when
overloaded. The API key may come in the body (`api_key`) or our headers.

Deliberate differences from LibreTranslate's code (its bugs): a non-numeric
`alternatives` in JSON is a 400, not a 500; with `source: auto` each text of a batch is
detected on its own rather than the batch as one; a detected language no model serves
is a 400 naming it (LibreTranslate names "auto", and its /detect answers "en" with
confidence 0); deadlines give 504, loading or draining 503.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from model.sampling import DecodingParams
from service.engine.autodetect import AUTO, detect, route, served_languages
from service.engine.errors import EngineError
from service.engine.request import Completion, TaskInput
from service.http.deps import (
    CallContext,
    call_context,
    get_metrics,
    get_registry,
    get_settings,
    key_accepted,
    presented_key,
    serving_registry,
)
from service.http.errors import CLIENT_CLOSED_REQUEST, ApiError, from_engine_error
from service.http.jobs import ClientDisconnected, submit_all, wait_all
from service.http.lt_schemas import (
    ERRORS,
    LtDetection,
    LtDetectRequest,
    LtLanguage,
    LtTranslateRequest,
    LtTranslateResponse,
    request_body,
)
from service.langdetect import Detection
from service.pieces import plan

PROTOCOL = "libretranslate"
LANGUAGE_NAMES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "zh": "Chinese",
    "it": "Italian", "pt": "Portuguese", "nl": "Dutch", "ru": "Russian", "ja": "Japanese",
}
# LibreTranslate's --alternatives-limit: n alternatives take a beam of n + 1 (up to 16).
MAX_ALTERNATIVES = 3
FRONTEND_TIMEOUT_MS = 500  # LibreTranslate's default


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class LibreTranslateRoute(APIRoute):
    """Renders every failure of these routes in LibreTranslate's shape, and counts the
    ones the engine never saw as rejected requests of protocol `libretranslate`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        task = "detect" if self.path == "/detect" else "translate"

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except (ApiError, EngineError, RequestValidationError,
                    StarletteHTTPException) as e:
                status, code, message, headers = _describe(e)
                if not getattr(request.state, "accepted", False) and request.method == "POST":
                    get_metrics(request).request_rejected(
                        getattr(request.state, "model", None), task, PROTOCOL, code
                    )
                return _error(status, message, headers)

        return run


def _describe(e: Exception) -> tuple[int, str, str, dict[str, str]]:
    if isinstance(e, EngineError):
        e = from_engine_error(e)
    if isinstance(e, ApiError):
        message = f"Slowdown: {e.message}" if e.status == 429 else e.message
        return e.status, e.code, message, e.headers
    if isinstance(e, StarletteHTTPException):
        code = "payload_too_large" if e.status_code == 413 else "invalid_argument"
        return e.status_code, code, str(e.detail), dict(e.headers or {})
    return 400, "invalid_argument", "Invalid request", {}


router = APIRouter(tags=["libretranslate"], route_class=LibreTranslateRoute)


def _bad(message: str, code: str = "invalid_argument") -> ApiError:
    return ApiError(400, code, message)


async def _values(request: Request) -> tuple[dict[str, Any], bool]:
    """The request's fields and whether they came as JSON: LibreTranslate reads JSON
    bodies as such and everything else as query plus form values (query first)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            data = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise _bad("Invalid JSON format", "invalid_json") from None
        if not isinstance(data, dict):
            raise _bad("Invalid JSON format", "invalid_json")
        return data, True
    values: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        values.setdefault(key, value)
    if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await request.form()
        except (ValueError, AssertionError, KeyError) as e:
            raise _bad(f"Invalid form body: {e}") from None
        for key, item in form.multi_items():
            if isinstance(item, UploadFile):
                raise _bad(f"Invalid request: {key} must be text, not a file")
            values.setdefault(key, item)
    return values, False


def _authorize(request: Request, values: dict[str, Any]) -> None:
    """LibreTranslate's rules over our keys: a wrong key is a 403, a missing one a 400."""
    keys = get_settings(request).api_key_values()
    if not keys:
        return
    given = values.get("api_key")
    presented = given if isinstance(given, str) and given else presented_key(request)
    if presented is None:
        raise _bad("Please contact the server operator to get an API key", "unauthenticated")
    if not key_accepted(presented, keys):
        raise ApiError(403, "unauthenticated", "Invalid API key")


def _text_list(q: Any, limit: int, max_chars: int) -> tuple[list[str], bool]:
    """The texts of `q` and whether it was a list."""
    if not q:
        raise _bad("Invalid request: missing q parameter")
    batch = isinstance(q, list)
    texts = q if batch else [q]
    if not all(isinstance(t, str) for t in texts):
        raise _bad("Invalid request: q must be a string or a list of strings")
    if batch and len(texts) > limit:
        raise _bad(f"Invalid request: request ({len(texts)}) exceeds text limit ({limit})")
    for text in texts:
        if len(text) > max_chars:
            raise _bad(f"Invalid request: request ({len(text)}) exceeds text limit ({max_chars})")
    return texts, batch


def _string(values: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = values.get(name)
    if value is None or value == "":
        if required:
            raise _bad(f"Invalid request: missing {name} parameter")
        return None
    if not isinstance(value, str):
        raise _bad(f"Invalid request: {name} must be a string")
    return value


def _alternatives(values: dict[str, Any]) -> int:
    raw = values.get("alternatives", 0)
    try:
        if isinstance(raw, bool | float | list | dict):
            raise ValueError
        n = max(0, int(raw or 0))
    except ValueError:
        raise _bad("Invalid request: alternatives parameter is not a number") from None
    if n > MAX_ALTERNATIVES:
        raise _bad(f"Invalid request: alternatives parameter must be <= {MAX_ALTERNATIVES}")
    return n


def _lt_detection(d: Detection) -> dict[str, Any]:
    return {"confidence": round(d.confidence * 100, 2), "language": d.language}


@router.post(
    "/translate", response_model=LtTranslateResponse, responses=ERRORS,
    openapi_extra=request_body(LtTranslateRequest),
)
async def translate(request: Request, ctx: CallContext = Depends(call_context)) -> Response:
    """Translate `q` from `source` (or `auto`) into `target`."""
    values, is_json = await _values(request)
    _authorize(request, values)
    settings = get_settings(request)
    q = values.get("q")
    source = _string(values, "source")
    target = _string(values, "target")
    assert source is not None and target is not None
    if isinstance(q, str) and not is_json:
        q = "\n".join(q.splitlines())  # as LibreTranslate: LF line ends for form bodies
    texts, batch = _text_list(q, settings.max_batch_texts, settings.max_input_chars)
    text_format = _string(values, "format", required=False) or "text"
    if text_format not in ("text", "html"):
        raise _bad(f"{text_format} format is not supported")
    n_alt = _alternatives(values)
    registry = serving_registry(request)  # 503 while loading or draining
    served = served_languages(registry)
    for lang in (source, target):
        if lang not in served and not (lang == source == AUTO):
            raise _bad(f"{lang} is not supported")
    fields = [f"q[{i}]" for i in range(len(texts))] if batch else ["q"]
    # One input per text, or per text node of each html document; all submitted together.
    cut = plan(texts, html=text_format == "html", glossary=None, stream=False,
               text_field=fields[0])
    owner = cut.owner
    chosen = route(registry, None, source, target, cut.plain(), fields)
    engine = chosen.engine
    request.state.model = engine.name
    sources = chosen.detections or []
    inputs = [TaskInput("translate", text, target_lang=target,
                        source_lang=sources[i].language if sources else source)
              for text, i in zip(cut.pieces, owner, strict=True)]
    input_fields = [fields[i] for i in owner]
    max_new = min(engine.config.default_max_new_tokens, engine.max_new_tokens)
    wants_nbest = n_alt > 0 and not cut.splits  # none for html, as LibreTranslate
    params = DecodingParams(
        strategy="beam", beam_size=max(4, n_alt + 1), num_return_sequences=n_alt + 1,
        max_new_tokens=max_new,
    ) if wants_nbest else DecodingParams(max_new_tokens=max_new)
    timeout = ctx.timeout if ctx.timeout is not None else settings.request_timeout_s
    jobs = submit_all(engine, inputs, params, timeout=timeout, stream=False,
                      request_id=ctx.request_id, text_fields=input_fields, protocol=PROTOCOL)
    request.state.accepted = True
    try:
        completions = await wait_all(request, jobs)
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    completions = cut.join(completions)
    translated = [c.text for c in completions]
    result: dict[str, Any] = {"translatedText": translated if batch else translated[0]}
    if source == AUTO:
        detected = [_lt_detection(d) for d in sources]
        result["detectedLanguage"] = detected if batch else detected[0]
    if n_alt > 0:
        others = [_alternatives_of(c) for c in completions] if wants_nbest else [[]] * len(texts)
        result["alternatives"] = others if batch else others[0]
    return JSONResponse(result)


def _alternatives_of(completion: Completion) -> list[str]:
    """The n-best after the first, without repeats of it or each other, or empties."""
    seen = {completion.text, ""}
    out = []
    for c in (completion.candidates or [])[1:]:
        if c.text not in seen:
            seen.add(c.text)
            out.append(c.text)
    return out


@router.post(
    "/detect", response_model=list[LtDetection], responses=ERRORS,
    openapi_extra=request_body(LtDetectRequest),
)
async def detect_language(request: Request) -> Response:
    """The languages `q` may be in, most likely first, with confidence 0-100."""
    values, _ = await _values(request)
    _authorize(request, values)
    settings = get_settings(request)
    texts, _ = _text_list(values.get("q"), settings.max_batch_texts, settings.max_input_chars)
    detections = detect(serving_registry(request), "\n".join(texts), top=3, field="q")
    return JSONResponse([_lt_detection(d) for d in detections])


@router.get("/languages", response_model=list[LtLanguage])
async def languages(request: Request) -> list[LtLanguage]:
    """Every served language and the languages it translates into."""
    infos = [i for i in get_registry(request).list() if "translate" in i.tasks]
    out = []
    for code in served_languages(get_registry(request)):
        targets = sorted({t for i in infos if code in i.languages for t in i.languages} - {code})
        out.append(LtLanguage(code=code, name=LANGUAGE_NAMES.get(code, code), targets=targets))
    return out


@router.get("/frontend/settings")
async def frontend_settings(request: Request) -> dict[str, Any]:
    """What LibreTranslate's web front end reads at start-up."""
    settings = get_settings(request)
    served = served_languages(get_registry(request))
    target = served[1] if len(served) > 1 else (served[0] if served else "en")
    keyed = bool(settings.api_key_values())
    return {
        "charLimit": settings.max_input_chars,
        "frontendTimeout": FRONTEND_TIMEOUT_MS,
        "apiKeys": keyed,
        "keyRequired": keyed,
        "suggestions": False,
        "filesTranslation": False,
        "supportedFilesFormat": [],
        "language": {
            "source": {"code": AUTO, "name": "Auto Detect"},
            "target": {"code": target, "name": LANGUAGE_NAMES.get(target, target)},
        },
    }
