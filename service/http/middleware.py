"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streams and hide
disconnects).

- RequestContextMiddleware: the request id (echoed from `X-Request-ID` or generated) on
  the response and in every log line; one access-log line and one
  `sora_http_requests_total` count per response; an unexpected exception becomes a 500
  in the common error shape rather than a bare traceback page.
- BodyLimitMiddleware: refuses bodies over `max_body_bytes` with 413, by Content-Length
  when given and by counting the bytes actually received otherwise (chunked uploads).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.errors import error_body
from service.http.logs import request_id_var
from service.metrics import Metrics

log = logging.getLogger("sora.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
REQUEST_ID_HEADER = b"x-request-id"
# LibreTranslate's endpoints (service/http/routes/libretranslate.py): `{"error": "..."}`.
PLAIN_ERROR_PATHS = frozenset({"/translate", "/detect", "/languages", "/frontend/settings"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_json(send: Send, status: int, body: dict[str, object]) -> None:
    data = json.dumps(body).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode())],
    })
    await send({"type": "http.response.body", "body": data})


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = _header(scope, REQUEST_ID_HEADER)
        request_id = sent if sent and _VALID_ID.match(sent) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = False
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if not started:
                await send_with_id({
                    "type": "http.response.start", "status": 500,
                    "headers": [(b"content-type", b"application/json")],
                })
                await send_with_id({
                    "type": "http.response.body",
                    "body": json.dumps(error_body("internal", "internal server error")).encode(),
                })
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.http_request(template, status)
            log.info("%s %s %d %.1f ms", scope["method"], scope["path"], status,
                     (time.perf_counter() - t0) * 1000)
            request_id_var.reset(token)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            message = f"request body exceeds the limit of {self.limit} bytes"
            # Open Inference Protocol and LibreTranslate routes have their own error shape.
            path = scope.get("path", "")
            body: dict[str, object] = (
                {"error": message}
                if path.startswith("/v2") or path in PLAIN_ERROR_PATHS
                else error_body("payload_too_large", message)
            )
            await _send_json(send, 413, body)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI re-raises HTTPExceptions met while reading the body, so
                    # the app's handler renders this in the common error shape.
                    raise BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as e:
            if started:
                raise
            await _send_json(send, 413, error_body("payload_too_large", str(e.detail)))
