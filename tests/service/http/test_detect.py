"""Language detection on our API: POST /v1/detect, `source_lang` omitted or `auto` on
/v1/translate, and routing the detected language to the model that serves it; and
/v1/translate's `format: html`."""

from __future__ import annotations

from collections.abc import Iterator
from html import escape
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from model.checkpoint import save_checkpoint
from model.config import SoraConfig
from model.sora import Sora
from model.tokenizer import SoraTokenizer
from tests.service.conftest import RunningServer, launch

GERMAN = "Die Katze schläft auf dem Sofa, weil es draußen regnet und kalt ist."
CHINESE = "猫在沙发上睡觉，因为外面在下雨，而且天气很冷。"
FRENCH = "Le chat dort sur le canapé parce qu'il pleut dehors et qu'il fait froid."


def post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60)


def test_detect_returns_top_languages(server: Any) -> None:
    r = post(server.http_url, "/v1/detect", {"text": GERMAN, "top": 2})
    assert r.status_code == 200, r.text
    langs = r.json()["languages"]
    assert langs[0]["language"] == "de" and len(langs) == 2
    assert 0.5 < langs[0]["confidence"] <= 1 and langs[1]["confidence"] < langs[0]["confidence"]


@pytest.mark.parametrize(("body", "field"), [
    ({"text": ""}, "text"),
    ({"text": "x", "top": 0}, "top"),
    ({"text": "x", "langs": ["de"]}, "langs"),
])
def test_detect_bad_input_names_the_field(server: Any, body: dict[str, Any], field: str) -> None:
    r = post(server.http_url, "/v1/detect", body)
    assert r.status_code == 422
    assert r.json()["error"]["field"] == field


def test_unserved_language_is_a_400_naming_it(server: Any) -> None:
    for path, body in (("/v1/detect", {"text": "これは日本語で書かれた文章です。"}),
                       ("/v1/translate", {"text": "これは日本語で書かれた文章です。",
                                          "target_lang": "en"})):
        r = post(server.http_url, path, body)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["field"] == "text" and "'ja'" in err["message"]


def test_translate_without_source_reports_the_detected_language(server: Any) -> None:
    r = post(server.http_url, "/v1/translate", {"texts": [GERMAN, FRENCH], "target_lang": "en",
                                                "options": {"max_new_tokens": 4}})
    assert r.status_code == 200, r.text
    found = [res["detected_language"]["language"] for res in r.json()["results"]]
    assert found == ["de", "fr"]
    given = post(server.http_url, "/v1/translate", {"text": GERMAN, "target_lang": "en",
                                                    "source_lang": "de",
                                                    "options": {"max_new_tokens": 4}})
    assert "detected_language" not in given.json()["results"][0]


@pytest.fixture(scope="module")
def two_models(
    tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: SoraTokenizer
) -> Iterator[RunningServer]:
    """A repository of two models: German-English and Chinese-English."""
    tok = tiny_tokenizer
    config = SoraConfig(
        vocab_size=tok.vocab_size, d_model=32, n_heads=4, n_encoder_layers=1,
        n_decoder_layers=1, d_ff=64, dropout=0.0, max_source_positions=128,
        max_target_positions=64, pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id,
    )
    root: Path = tmp_path_factory.mktemp("pairs")
    torch.manual_seed(0)
    save_checkpoint(root / "de-en", Sora(config).eval(), tok, info={"languages": ["de", "en"]})
    save_checkpoint(root / "zh-en", Sora(config).eval(), tok, info={"languages": ["zh", "en"]})
    running = launch(root)
    yield running
    running.stop()


def test_detected_language_routes_to_the_model_serving_it(two_models: RunningServer) -> None:
    url = two_models.http_url
    for text, model in ((GERMAN, "de-en"), (CHINESE, "zh-en")):
        r = post(url, "/v1/translate", {"text": text, "target_lang": "en",
                                        "options": {"max_new_tokens": 4}})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == model
        lt = post(url, "/translate", {"q": text, "source": "auto", "target": "en"})
        assert lt.status_code == 200, lt.text
    # French is served by neither model: named, not forced onto German.
    r = post(url, "/v1/translate", {"text": FRENCH, "target_lang": "en"})
    assert r.status_code == 400 and "'fr'" in r.json()["error"]["message"]
    # A named model that lacks the detected language says so.
    r = post(url, "/v1/translate", {"text": CHINESE, "target_lang": "en", "model": "de-en"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "detected language 'zh' is not served by model de-en"
    r = post(url, "/v1/translate", {"texts": [GERMAN, CHINESE], "target_lang": "en",
                                    "model": "de-en"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "texts[1]"
    # Each text has a model, but not one model for both: named, not half-translated.
    r = post(url, "/v1/translate", {"texts": [GERMAN, CHINESE], "target_lang": "en"})
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("no one model translates de, zh into en")
    r = post(url, "/v1/translate", {"texts": [GERMAN, FRENCH], "target_lang": "en"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "texts[1]"
    langs = {e["code"]: e["targets"] for e in httpx.get(url + "/languages").json()}
    assert langs == {"de": ["en"], "en": ["de", "zh"], "zh": ["en"]}


def test_html_format_translates_text_nodes_and_keeps_markup(server: Any) -> None:
    docs = ['<p class="a">Hello <b>world</b></p><code>x &lt; 1</code>',
            "<br><!-- only markup -->"]
    options = {"max_new_tokens": 6}
    r = post(server.http_url, "/v1/translate", {"texts": docs, "target_lang": "de",
                                                "source_lang": "en", "format": "html",
                                                "options": options})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    # Each text node is translated as the same text alone would be.
    alone = [post(server.http_url, "/v1/translate", {
        "text": t, "target_lang": "de", "source_lang": "en", "options": options,
    }).json()["results"][0] for t in ("Hello", "world")]
    assert first["text"] == (f'<p class="a">{escape(alone[0]["text"], quote=False)} '
                             f'<b>{escape(alone[1]["text"], quote=False)}</b></p>'
                             "<code>x &lt; 1</code>")
    assert first["usage"]["completion_tokens"] == sum(
        a["usage"]["completion_tokens"] for a in alone)
    assert second["text"] == docs[1] and second["usage"]["completion_tokens"] == 0
    streamed = post(server.http_url, "/v1/translate", {"text": docs[0], "target_lang": "de",
                                                       "format": "html", "stream": True})
    assert streamed.status_code == 400 and streamed.json()["error"]["field"] == "stream"
    many = post(server.http_url, "/v1/translate", {"text": "<i>a</i>" * 300,
                                                   "target_lang": "de", "format": "html"})
    assert many.status_code == 400 and many.json()["error"]["field"] == "text"
