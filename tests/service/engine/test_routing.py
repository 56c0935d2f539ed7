"""The routing rule (service/engine/routing.py) on manifests alone: which model serves a
request, and what a refusal says."""

from __future__ import annotations

import pytest

from service.engine.errors import InvalidRequest
from service.engine.request import TaskInput
from service.engine.routing import Capabilities, ManifestError, check_serves, choose

GENERAL = Capabilities.from_manifest({"tasks": ["translate", "summarize", "answer"],
                                      "languages": ["en", "de", "fr"]})
EN_DE = Capabilities.from_manifest({"architecture": "marian", "tasks": ["translate"],
                                    "languages": ["en", "de"],
                                    "language_pairs": [["en", "de"]]})
SUMMARIZER = Capabilities.from_manifest({"architecture": "bart", "tasks": ["summarize"],
                                         "languages": ["en"]})
MODELS = {"general": GENERAL, "opus-en-de": EN_DE, "bart": SUMMARIZER}


def tr(target: str, source: str | None = None) -> TaskInput:
    return TaskInput("translate", "Hello.", target_lang=target, source_lang=source)


def test_manifest_defaults_are_our_own_checkpoints() -> None:
    caps = Capabilities.from_manifest({})
    assert caps.architecture == "sora"
    assert caps.tasks == ("translate", "summarize", "answer")
    assert caps.languages == ("en", "de", "fr", "es", "zh", "it")
    assert caps.language_pairs is None


@pytest.mark.parametrize(("manifest", "key"), [
    ({"architecture": 3}, "architecture"),
    ({"tasks": "translate"}, "tasks"),
    ({"tasks": ["translate", "chat"]}, "chat"),
    ({"languages": ["en", 7]}, "languages"),
    ({"languages": ["en", "de"], "language_pairs": [["en", "fr"]]}, "language_pairs"),
    ({"languages": ["en", "de"], "language_pairs": [["en"]]}, "language_pairs"),
])
def test_malformed_manifest_names_the_key(manifest: dict[str, object], key: str) -> None:
    with pytest.raises(ManifestError, match=key):
        Capabilities.from_manifest(manifest)


def test_serves_by_pairs_or_by_languages() -> None:
    assert EN_DE.serves(tr("de", "en")) and EN_DE.serves(tr("de"))
    assert not EN_DE.serves(tr("en", "de")) and not EN_DE.serves(tr("fr", "en"))
    assert GENERAL.serves(tr("en", "de")) and GENERAL.serves(tr("fr"))
    assert not GENERAL.serves(tr("zh"))
    assert not EN_DE.serves(TaskInput("summarize", "A text."))
    assert SUMMARIZER.serves(TaskInput("summarize", "A text."))


def test_exact_pair_beats_the_default_model() -> None:
    assert choose(MODELS, [tr("de", "en")], default="general") == "opus-en-de"


def test_the_default_model_breaks_ties_then_the_name() -> None:
    # Without a source language no pair is exact: both serve it equally well.
    assert choose(MODELS, [tr("de")], default="general") == "general"
    assert choose(MODELS, [tr("de")], default="opus-en-de") == "opus-en-de"
    assert choose(MODELS, [tr("de")], default=None) == "general"
    assert choose(MODELS, [TaskInput("summarize", "x")], default=None) == "bart"
    assert choose(MODELS, [TaskInput("summarize", "x")], default="general") == "general"


def test_other_directions_go_to_the_model_whose_languages_cover_them() -> None:
    assert choose(MODELS, [tr("en", "de")], default="opus-en-de") == "general"
    assert choose(MODELS, [TaskInput("answer", "Why?")], default="bart") == "general"


def test_nothing_serves_it_lists_every_model() -> None:
    with pytest.raises(InvalidRequest) as err:
        choose(MODELS, [tr("zh", "en")], default=None)
    assert err.value.field == "target_lang"
    assert err.value.message == (
        "no model serves translate 'en' -> 'zh'; served: bart: summarize; general: "
        "translate (en, de, fr); summarize; answer; opus-en-de: translate en->de")
    with pytest.raises(InvalidRequest) as err:
        choose({"opus-en-de": EN_DE}, [TaskInput("answer", "Why?")], default=None)
    assert err.value.field == "task"
    assert err.value.message.startswith("no model serves answer; served: opus-en-de: ")


def test_a_named_model_must_serve_the_request() -> None:
    check_serves("opus-en-de", EN_DE, [tr("de", "en"), tr("de")])
    with pytest.raises(InvalidRequest) as err:
        check_serves("opus-en-de", EN_DE, [tr("de", "en"), tr("fr", "en")])
    assert err.value.field == "target_lang"
    assert err.value.message == ("model 'opus-en-de' does not serve translate 'en' -> 'fr'; "
                                 "it serves translate en->de")


def test_an_unserved_source_language_is_named() -> None:
    with pytest.raises(InvalidRequest) as err:
        choose(MODELS, [tr("de", "zh")], default=None)
    assert err.value.field == "source_lang"
    with pytest.raises(InvalidRequest) as err:
        check_serves("opus-en-de", EN_DE, [tr("de", "fr")])
    assert err.value.field == "source_lang"
