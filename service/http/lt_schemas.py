"""The bodies of the LibreTranslate-compatible endpoints, as LibreTranslate documents
them (its `/spec`): for the OpenAPI schema only. The routes read JSON or form bodies
themselves, as LibreTranslate does, so a form field and a JSON field behave alike."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class LtTranslateRequest(BaseModel):
    q: str | list[str] = Field(description="text(s) to translate (a list only in JSON)")
    source: str = Field(description="source language code, or `auto` to detect it")
    target: str = Field(description="target language code")
    format: str = Field(default="text", description="`text` or `html`")
    alternatives: int = Field(default=0, description="alternative translations wanted")
    api_key: str | None = Field(default=None, description="API key (or the headers)")


class LtDetectRequest(BaseModel):
    q: str | list[str] = Field(description="text to detect")
    api_key: str | None = None


class LtDetection(BaseModel):
    confidence: float = Field(description="0-100")
    language: str


class LtTranslateResponse(BaseModel):
    translatedText: str | list[str]
    detectedLanguage: LtDetection | list[LtDetection] | None = None
    alternatives: list[str] | list[list[str]] | None = None


class LtLanguage(BaseModel):
    code: str
    name: str
    targets: list[str]


class LtError(BaseModel):
    error: str


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting `model` as a JSON or form-encoded body."""
    schema = model.model_json_schema()
    content = {
        "application/json": {"schema": schema},
        "application/x-www-form-urlencoded": {"schema": schema},
    }
    return {"requestBody": {"required": True, "content": content}}


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": LtError, "description": text}
    for code, text in {
        400: "invalid request, missing API key, unsupported language",
        403: "invalid API key", 413: "body too large", 429: "overloaded (see Retry-After)",
        503: "loading or shutting down (see Retry-After)", 504: "deadline exceeded",
    }.items()
}
