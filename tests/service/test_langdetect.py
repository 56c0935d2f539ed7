"""The detector: served languages only, confidences, refusal of other languages."""

from __future__ import annotations

import pytest

from service.langdetect import LanguageDetector, UnservedLanguage, detector_for

SERVED = ("en", "de", "fr", "es", "zh", "it")


@pytest.mark.parametrize(("text", "lang"), [
    ("The cat is sleeping on the sofa because it is raining.", "en"),
    ("Die Katze schläft auf dem Sofa, weil es regnet.", "de"),
    ("Le chat dort sur le canapé parce qu'il pleut.", "fr"),
    ("El gato duerme en el sofá porque está lloviendo.", "es"),
    ("猫在沙发上睡觉，因为外面在下雨。", "zh"),
    ("Il gatto dorme sul divano perché piove.", "it"),
])
def test_detects_served_languages(text: str, lang: str) -> None:
    found = detector_for(SERVED).detect(text, top=3)
    assert found[0].language == lang
    assert len(found) == 3
    assert 0.5 < found[0].confidence <= 1.0
    assert found[0].confidence >= found[1].confidence >= found[2].confidence


def test_other_languages_are_named_not_forced_onto_a_served_one() -> None:
    with pytest.raises(UnservedLanguage) as info:
        detector_for(SERVED).detect("これは日本語で書かれた文章です。")
    assert info.value.language == "ja"
    with pytest.raises(UnservedLanguage, match="'nl'"):
        detector_for(SERVED).detect("Dit is een zin in het Nederlands over het weer.")


def test_restricting_the_languages_changes_the_answer() -> None:
    # German read by a detector that serves only English and Chinese: not served.
    with pytest.raises(UnservedLanguage, match="'de'"):
        detector_for(("en", "zh")).detect("Die Katze schläft auf dem Sofa, weil es regnet.")
    assert detector_for(("de", "en")).languages == ("de", "en")


def test_unknown_languages_only_is_an_error() -> None:
    with pytest.raises(ValueError, match="none of the languages"):
        LanguageDetector(("xx",))
