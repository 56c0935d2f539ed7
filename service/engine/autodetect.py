"""`source: auto`: detect each text's language over the languages the loaded models
serve, then pick the model that translates from the detected language into the
target. Shared by /v1/translate, LibreTranslate's /translate and gRPC Translate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.engine.errors import InvalidRequest
from service.engine.protocol import EngineClient
from service.engine.registry import ModelRegistry
from service.engine.request import TaskInput
from service.langdetect import Detection, UnservedLanguage, detector_for

AUTO = "auto"


@dataclass(frozen=True)
class Route:
    engine: EngineClient
    detections: list[Detection] | None  # per text, when the source was detected


def served_languages(registry: ModelRegistry) -> tuple[str, ...]:
    """Every language some loaded model translates, in first-seen order."""
    langs: dict[str, None] = {}
    for info in registry.list():
        if "translate" in info.tasks:
            langs.update(dict.fromkeys(info.languages))
    return tuple(langs)


def detect(
    registry: ModelRegistry, text: str, top: int = 3, field: str = "text"
) -> list[Detection]:
    """The most likely served languages of `text`; InvalidRequest (naming `field`) when
    it is in a language no model serves."""
    served = served_languages(registry)
    if not served:
        raise InvalidRequest("no loaded model translates", field=field)
    try:
        return detector_for(served).detect(text, top)
    except UnservedLanguage as e:
        raise InvalidRequest(str(e), field=field) from None


def route(
    registry: ModelRegistry,
    model: str | None,
    source: str | None,
    target: str,
    texts: Sequence[str],
    text_fields: Sequence[str],
) -> Route:
    """The engine for translating `texts` from `source` (None or "auto": detected per
    text) into `target`, chosen by the one routing rule (service/engine/routing.py)
    once the sources are known; a detected language no model can take names the text."""
    detections = None
    if source is None or source == AUTO:
        detections = [detect(registry, t, 1, f)[0] for t, f in zip(texts, text_fields, strict=True)]
        sources = [d.language for d in detections]
    else:
        sources = [source] * len(texts)
    inputs = [TaskInput("translate", t, target_lang=target, source_lang=s)
              for t, s in zip(texts, sources, strict=True)]
    if detections is None:
        return Route(registry.route(inputs, model), None)
    if model is not None:
        engine = registry.get(model)
        langs = set(engine.info().languages)
        for d, field in zip(detections, text_fields, strict=True):
            if d.language not in langs:
                raise InvalidRequest(
                    f"detected language {d.language!r} is not served by model {engine.name}",
                    field=field,
                )
        return Route(registry.route(inputs, model), detections)
    try:
        return Route(registry.route(inputs), detections)
    except InvalidRequest:
        if target not in served_languages(registry):
            raise  # the rule's refusal names target_lang and what is served
    for inp, d, field in zip(inputs, detections, text_fields, strict=True):
        try:
            registry.route([inp])
        except InvalidRequest:
            raise InvalidRequest(
                f"no model translates {d.language} (detected) into {target}", field=field
            ) from None
    # Each text has a model, but no one model serves them all.
    raise InvalidRequest(
        f"no one model translates {', '.join(sorted(set(sources)))} into {target}; "
        "send these texts in separate requests", field=text_fields[0],
    )
