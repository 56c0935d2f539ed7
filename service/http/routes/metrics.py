"""GET /metrics: Prometheus text exposition (open without an API key)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.http.deps import get_metrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    m = get_metrics(request)
    return Response(m.render(), media_type=m.content_type)
