"""`glossary` on /v1/translate: the target terms appear, the text around them is
translated as on its own; on the default checkpoint, a term it otherwise translates
differently comes out as the glossary says."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from service.config import DEFAULT_MODEL_REPOSITORY
from tests.service.conftest import RunningServer, launch

OPTIONS = {"max_new_tokens": 8}


def translate(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + "/v1/translate", json=body, timeout=60)


def alone(url: str, text: str) -> str:
    r = translate(url, {"text": text, "target_lang": "de", "source_lang": "en",
                        "options": OPTIONS})
    return str(r.json()["results"][0]["text"])


def test_glossary_terms_replace_their_translation(server: Any) -> None:
    body = {"texts": ["Open the file manager and click Save.", "Nothing to replace."],
            "target_lang": "de", "source_lang": "en", "options": OPTIONS,
            "glossary": {"file manager": "Dateimanager", "save": "Speichern"}}
    r = translate(server.http_url, body)
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    url = server.http_url
    assert first["text"] == f"{alone(url, 'Open the')} Dateimanager {alone(url, 'and click')} " \
        "Speichern."
    assert second["text"] == alone(url, "Nothing to replace.")


def test_glossary_with_html_and_bad_glossaries(server: Any) -> None:
    body = {"text": "<p>Click <b>Save</b> now</p>", "target_lang": "de", "source_lang": "en",
            "format": "html", "glossary": {"save": "Speichern"}, "options": OPTIONS}
    r = translate(server.http_url, body)
    assert r.status_code == 200, r.text
    url = server.http_url
    assert r.json()["results"][0]["text"] == \
        f"<p>{alone(url, 'Click')} <b>Speichern</b> {alone(url, 'now')}</p>"
    for bad, field in (({**body, "glossary": {"": "x"}}, "glossary"),
                       ({**body, "stream": True}, "stream"),
                       ({**body, "glossary": {"save": 1}}, "glossary.save")):
        r = translate(server.http_url, bad)
        assert r.status_code in (400, 422), r.text
        assert r.json()["error"]["field"] == field


@pytest.fixture(scope="module")
def default_model() -> Iterator[RunningServer]:
    if not (DEFAULT_MODEL_REPOSITORY / "manifest.json").is_file():
        pytest.skip("the default checkpoint is not in this checkout")
    running = launch(DEFAULT_MODEL_REPOSITORY, compile="off", grpc_enabled=False)
    yield running
    running.stop()


def test_default_model_uses_the_glossary_term(default_model: RunningServer) -> None:
    body = {"text": "The printer driver is installed.", "source_lang": "en",
            "target_lang": "fr"}
    plain = translate(default_model.http_url, body).json()["results"][0]["text"]
    term = "gestionnaire de périphérique"
    assert "pilote" in plain and term not in plain  # its own word for "driver"
    glossed = translate(default_model.http_url, {**body, "glossary": {"driver": term}})
    assert term in glossed.json()["results"][0]["text"]
