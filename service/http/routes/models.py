"""GET /v1/models and /v1/models/{name}: what is being served, and in what state."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.engine.engine import ModelInfo
from service.http.deps import get_registry, require_api_key
from service.http.schemas import ErrorResponse, ModelCard, ModelList

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(require_api_key)])


def card(info: ModelInfo) -> ModelCard:
    return ModelCard(
        name=info.name, version=info.version, architecture=info.architecture,
        tasks=list(info.tasks), languages=list(info.languages),
        language_pairs=None if info.language_pairs is None else list(info.language_pairs),
        device=info.device, dtype=info.dtype,
        parameters=info.parameters, max_source_tokens=info.max_source_tokens,
        max_new_tokens=info.max_new_tokens, status=info.state, can_rerank=info.can_rerank,
    )


@router.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """Every model served: name, version, architecture, tasks, languages (and language
    pairs), device and status."""
    return ModelList(models=[card(i) for i in get_registry(request).list()])


@router.get("/models/{name}", response_model=ModelCard, responses={404: {"model": ErrorResponse}})
async def get_model(name: str, request: Request) -> ModelCard:
    """One model (404 if it is not served)."""
    return card(get_registry(request).get(name).info())
