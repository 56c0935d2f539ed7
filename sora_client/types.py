"""What the client sends and returns: plain dataclasses, the same for HTTP and gRPC."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Task = Literal["translate", "summarize", "answer"]


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode; a field left None takes the server's default (greedy decoding,
    the server's max_new_tokens). The meaning of each field is the API's `options`."""

    strategy: Literal["greedy", "sample", "beam"] | None = None
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    beam_size: int | None = None
    length_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    ignore_eos: bool | None = None
    num_return_sequences: int | None = None  # beam only: the n best in Result.candidates

    def given(self) -> dict[str, Any]:
        """The fields set, by name."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class DetectedLanguage:
    language: str  # a code: en, de, ...
    confidence: float  # probability in [0, 1] over the languages the server's models serve


@dataclass(frozen=True)
class Candidate:
    """One of a beam search's n best outputs."""

    text: str
    score: float  # log-probability / length ** length_penalty


@dataclass(frozen=True)
class Result:
    """The output for one input."""

    text: str
    finish_reason: str  # "eos" or "length"
    usage: Usage
    # options.num_return_sequences > 1: the n best outputs, best (= text) first.
    candidates: list[Candidate] = field(default_factory=list)
    # translate without source_lang: the language the server detected.
    detected_language: DetectedLanguage | None = None


@dataclass(frozen=True)
class TaskResult:
    """A translate/summarize/answer reply: one Result per input, in request order."""

    model: str
    version: str
    results: list[Result]
    usage: Usage

    @property
    def text(self) -> str:
        """The first (for a single input, the only) output's text."""
        return self.results[0].text


@dataclass(frozen=True)
class StreamPiece:
    """A piece of a streamed output. Joining every piece's `text` gives the output;
    the last piece has `finish_reason`, `usage`, `model` and `version` set."""

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class ModelCard:
    """A served model, as `GET /v1/models` and gRPC `ListModels` describe it."""

    name: str
    version: str
    tasks: list[str]
    languages: list[str]
    device: str
    dtype: str
    parameters: int
    max_source_tokens: int
    max_new_tokens: int
    status: str
    architecture: str = "sora"  # or the imported family ("marian", "bart", "t5", ...)
    # [source, target] directions served; None: any ordered pair of `languages`.
    language_pairs: list[tuple[str, str]] | None = None


def known_fields(cls: type[Any], data: dict[str, Any]) -> dict[str, Any]:
    """`data` less the keys `cls` has no field for: a newer server may send more."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class TaskCall:
    """One call, protocol-neutral; each transport encodes it."""

    task: Task
    texts: list[str]  # the inputs; for answer, the one question
    many: bool  # given as a list: the reply has one result per text
    target_lang: str | None = None
    source_lang: str | None = None
    context: str | None = None
    model: str | None = None
    options: DecodingOptions = field(default_factory=DecodingOptions)
