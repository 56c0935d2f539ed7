"""Language identification for `source: auto`, /v1/detect, /detect and gRPC Detect.

py3langid (a naive Bayes classifier over byte n-grams, 97 languages) ships its model
inside its package as numpy arrays (no pickle, nothing downloaded). It scores over every
language it knows; the served languages' probabilities are renormalized into the
confidences we report, and a text whose probability mass on the served languages is
tiny is refused naming the language it is written in, instead of being forced onto the
nearest served one (Japanese read as Chinese, Dutch as German).

Accuracy on the committed eval sources: see README ("Language detection") and
benchmarks/langdetect_accuracy.py.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any

# Probability mass on the served languages below which the text is taken to be in
# another language. The eval sources' smallest mass is 0.043 (a 2-word German
# fragment); Dutch, Russian or Japanese sentences score below 0.001.
MIN_SERVED_MASS = 0.01
# Detection reads at most this many characters: n-gram statistics settle long before,
# and it runs on the event loop (py3langid walks the text byte by byte in Python:
# ~0.15 ms for a 70-character text here, about the same at this cap).
MAX_DETECT_CHARS = 500


@dataclass(frozen=True)
class Detection:
    language: str
    confidence: float  # 0..1, over the served languages


class UnservedLanguage(ValueError):
    """The text is in a language no loaded model serves."""

    def __init__(self, language: str, confidence: float, served: tuple[str, ...]) -> None:
        super().__init__(
            f"detected language {language!r} (confidence {confidence:.2f}) is not served; "
            f"served languages: {', '.join(served)}"
        )
        self.language = language
        self.confidence = confidence


_loading = threading.Lock()


def identifier() -> Any:
    """py3langid's model over all its languages, loaded once (~1 s: an xz-compressed
    npz); `service.main` loads it at start-up, off the event loop, before the models."""
    with _loading:  # a second caller waits for the first load rather than repeating it
        return _load()


@functools.cache
def _load() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


class LanguageDetector:
    """Ranks the served `languages` for a text; get one with `detector_for()`."""

    def __init__(self, languages: tuple[str, ...]) -> None:
        self._identifier = identifier()
        known = set(self._identifier.labels)
        self.languages = tuple(lang for lang in languages if lang in known)
        if not self.languages:
            raise ValueError(f"the detector knows none of the languages {languages}")

    def detect(self, text: str, top: int = 3) -> list[Detection]:
        """The `top` most likely served languages, best first. Raises UnservedLanguage
        when the text is not in any of them."""
        ranked = self._identifier.rank(text[:MAX_DETECT_CHARS])
        served = set(self.languages)
        mass = sum(p for lang, p in ranked if lang in served)
        if mass < MIN_SERVED_MASS:
            lang, p = ranked[0]
            raise UnservedLanguage(lang, p, self.languages)
        return [
            Detection(lang, p / mass) for lang, p in ranked if lang in served
        ][: max(1, top)]


@functools.lru_cache(maxsize=8)
def detector_for(languages: tuple[str, ...]) -> LanguageDetector:
    """One detector per set of served languages (all share one model)."""
    return LanguageDetector(tuple(sorted(set(languages))))
