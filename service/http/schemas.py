"""Request and response bodies of the REST API (also the OpenAPI schema at /docs).

Unknown fields are rejected (`extra="forbid"`), so a misspelt option is an error that
names it rather than a silently ignored setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

_FORBID = ConfigDict(extra="forbid")


class DecodingOptions(BaseModel):
    """How to decode. Defaults: greedy, the server's default max_new_tokens."""

    model_config = _FORBID

    strategy: Literal["greedy", "sample", "beam"] = "greedy"
    max_new_tokens: int | None = Field(default=None, ge=1, description="default: server setting")
    min_new_tokens: int = Field(default=0, ge=0)
    temperature: float = Field(default=1.0, gt=0, description="sample only")
    top_k: int = Field(default=0, ge=0, description="sample only; 0 = off")
    top_p: float = Field(default=1.0, gt=0, le=1, description="sample only; 1 = off")
    seed: int | None = Field(default=None, description="sample only: reproducible draws")
    beam_size: int = Field(default=4, ge=1, le=16, description="beam only")
    length_penalty: float = Field(default=1.0, description="beam only")
    early_stopping: bool = Field(default=True, description="beam only")
    ignore_eos: bool = Field(default=False, description="always generate max_new_tokens")
    no_repeat_ngram_size: int = Field(default=0, ge=0)
    num_return_sequences: int = Field(
        default=1, ge=1, le=16, description="beam only: return the n best outputs "
        "(`results[].candidates`), at most beam_size"
    )
    rerank: bool = Field(
        default=False, description="order the n best (num_return_sequences > 1) by the "
        "checkpoint's discriminator and return its score per candidate; only models whose "
        "`can_rerank` is true (GET /v1/models)"
    )
    timeout: float | None = Field(
        default=None, gt=0, description="deadline in seconds (as the X-Request-Timeout header)"
    )


class _TaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(
        default=None, description="model name (default: the server's default)"
    )
    options: DecodingOptions = Field(default_factory=lambda: DecodingOptions())
    stream: bool = Field(
        default=False, description="Server-Sent Events: one `data` event per piece of text, "
        "then `event: done` with finish reasons and usage"
    )


class _TextsRequest(_TaskRequest):
    text: str | None = Field(default=None, description="one input; or give `texts`")
    texts: list[str] | None = Field(
        default=None, min_length=1, description="several inputs, decoded concurrently in one batch"
    )


class TranslateRequest(_TextsRequest):
    target_lang: str = Field(description="language code, e.g. de")
    source_lang: str | None = Field(
        default=None, description="the texts' language; omitted or `auto`: detected"
    )
    format: Literal["text", "html"] = Field(
        default="text", description="html: translate the text nodes, keep the markup as is"
    )
    glossary: dict[str, str] | None = Field(
        default=None, description="{source term: target term}: each term's translation is "
        "the given one (whole words, case-insensitive)"
    )


class SummarizeRequest(_TextsRequest):
    max_length: int | None = Field(
        default=None, ge=1, description="summary length in tokens (same as options.max_new_tokens)"
    )


class AnswerRequest(_TaskRequest):
    question: str
    context: str | None = Field(default=None, description="the passage to answer from")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class DetectedLanguage(BaseModel):
    language: str
    confidence: float = Field(description="0..1 over the served languages")


class DetectRequest(BaseModel):
    model_config = _FORBID

    text: str = Field(min_length=1, description="at most the server's max_input_chars")
    top: int = Field(default=3, ge=1, le=10, description="how many languages to return")


class DetectResponse(BaseModel):
    languages: list[DetectedLanguage] = Field(description="most likely first")


class Candidate(BaseModel):
    text: str
    score: float = Field(description="log-probability / length ** length_penalty")
    discriminator_score: float | None = Field(
        default=None, description="rerank: the discriminator's log P(reference), by which "
        "the candidates are ordered"
    )


class Result(BaseModel):
    text: str
    finish_reason: Literal["eos", "length"]
    usage: Usage
    candidates: list[Candidate] | None = Field(
        default=None, description="num_return_sequences > 1: the n best outputs, best first"
    )
    detected_language: DetectedLanguage | None = Field(
        default=None, description="when the source language was detected"
    )


class TaskResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: str
    version: str
    results: list[Result]
    usage: Usage


class ModelCard(BaseModel):
    name: str
    version: str
    architecture: str = Field(description='"sora", or the imported family ("marian", '
                              '"bart", "mbart", "m2m100", "nllb", "t5")')
    tasks: list[str]
    languages: list[str]
    language_pairs: list[tuple[str, str]] | None = Field(
        description="[source, target] directions served; null: any ordered pair of "
                    "`languages`")
    device: str
    dtype: str
    parameters: int
    max_source_tokens: int
    max_new_tokens: int
    status: str
    can_rerank: bool = Field(description="the checkpoint carries a discriminator: `rerank` works")


class ModelList(BaseModel):
    models: list[ModelCard]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str
    # /health/ready: each model's compile state (compiled, compiling, off, failed); a
    # model is served (eagerly) whether or not its compiled steps are in use yet.
    compile: dict[str, str] | None = None
