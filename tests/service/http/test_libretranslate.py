"""The LibreTranslate-compatible endpoints against a running server, through the real
`libretranslatepy` client and raw JSON/form requests: shapes, detection, html, keys,
error shape and statuses, metrics label."""

from __future__ import annotations

import json
import urllib.error
from typing import Any

import httpx
import pytest
from libretranslatepy import LibreTranslateAPI
from prometheus_client.parser import text_string_to_metric_families
from support import queue_full

GERMAN = "Die Katze schläft auf dem Sofa, weil es draußen regnet und kalt ist."
ENGLISH = "The weather is nice today and we are going for a walk in the park."


def lt(server: Any, **kw: Any) -> LibreTranslateAPI:
    return LibreTranslateAPI(server.http_url, **kw)


def post(server: Any, path: str, **kw: Any) -> httpx.Response:
    return httpx.post(server.http_url + path, timeout=60, **kw)


def http_error(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(urllib.error.HTTPError) as info:
        call()
    return info.value.code, json.loads(info.value.read())


def test_client_translates_detects_and_lists_languages(server: Any) -> None:
    api = lt(server)
    text = api.translate(ENGLISH, "en", "de")
    assert isinstance(text, str) and text
    detected = api.detect(GERMAN)
    assert detected[0]["language"] == "de"
    assert 50 < detected[0]["confidence"] <= 100
    assert [d["confidence"] for d in detected] == sorted(
        (d["confidence"] for d in detected), reverse=True)
    languages = {entry["code"]: entry for entry in api.languages()}
    assert set(languages) == {"en", "de", "fr", "es", "zh", "it"}
    assert languages["de"]["name"] == "German"
    assert languages["en"]["targets"] == ["de", "es", "fr", "it", "zh"]


def test_client_with_api_key(server: Any) -> None:
    with server.api_keys("k1"):
        assert lt(server, api_key="k1").translate(ENGLISH, "en", "fr")
        assert lt(server, api_key="k1").detect(GERMAN)[0]["language"] == "de"
        code, body = http_error(lambda: lt(server).translate(ENGLISH, "en", "fr"))
        assert (code, body) == (400, {
            "error": "Please contact the server operator to get an API key"})
        code, body = http_error(lambda: lt(server, api_key="nope").detect(GERMAN))
        assert (code, body) == (403, {"error": "Invalid API key"})
        # Our own headers work too, and /languages stays open as in LibreTranslate.
        r = post(server, "/translate", json={"q": "Hi", "source": "en", "target": "de"},
                 headers={"Authorization": "Bearer k1"})
        assert r.status_code == 200, r.text
        assert lt(server).languages()


def test_json_batch_with_auto_source_reports_each_detection(server: Any) -> None:
    r = post(server, "/translate", json={"q": [GERMAN, ENGLISH], "source": "auto",
                                          "target": "fr"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"translatedText", "detectedLanguage"}
    assert len(body["translatedText"]) == 2 and all(body["translatedText"])
    assert [d["language"] for d in body["detectedLanguage"]] == ["de", "en"]
    assert all(0 < d["confidence"] <= 100 for d in body["detectedLanguage"])


def test_alternatives_are_the_beam_n_best(server: Any) -> None:
    r = post(server, "/translate", data={"q": ENGLISH, "source": "en", "target": "es",
                                          "alternatives": "2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"translatedText", "alternatives"}
    best, others = body["translatedText"], body["alternatives"]
    # The same beam on our API: alternatives are its candidates after the best, without
    # repeats (byte-level hypotheses may decode to equal text) or empties.
    ours = post(server, "/v1/translate", json={
        "text": ENGLISH, "source_lang": "en", "target_lang": "es",
        "options": {"strategy": "beam", "beam_size": 4, "num_return_sequences": 3},
    }).json()["results"][0]
    assert best == ours["text"]
    unique = list(dict.fromkeys(c["text"] for c in ours["candidates"][1:]))
    assert others == [t for t in unique if t not in (best, "")]
    assert 0 < len(others) <= 2
    batch = post(server, "/translate", json={"q": [ENGLISH, "Good night"], "source": "en",
                                              "target": "es", "alternatives": 1}).json()
    assert batch["translatedText"][0] == best  # the same beam's best
    assert [len(a) <= 1 for a in batch["alternatives"]] == [True, True]
    html = post(server, "/translate", json={"q": "<b>Hi</b>", "source": "en", "target": "es",
                                             "format": "html", "alternatives": 2}).json()
    assert html["alternatives"] == []  # as LibreTranslate: none for html


def test_html_keeps_markup_and_translates_text_nodes(server: Any) -> None:
    doc = ('<p class="x">Hello <b>world</b> &amp; friends</p>'
           '<script>var s = "<b>no</b>";</script><code>x = 1</code>')
    r = post(server, "/translate", json={"q": doc, "source": "en", "target": "de",
                                          "format": "html"})
    assert r.status_code == 200, r.text
    out = r.json()["translatedText"]
    assert out.startswith('<p class="x">') and "<b>" in out and "</b>" in out
    assert out.endswith('</p><script>var s = "<b>no</b>";</script><code>x = 1</code>')


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"source": "en", "target": "de"}, 400, "Invalid request: missing q parameter"),
    ({"q": "hi", "target": "de"}, 400, "Invalid request: missing source parameter"),
    ({"q": "hi", "source": "en"}, 400, "Invalid request: missing target parameter"),
    ({"q": "hi", "source": "en", "target": "xx"}, 400, "xx is not supported"),
    ({"q": "hi", "source": "xx", "target": "de"}, 400, "xx is not supported"),
    ({"q": "hi", "source": "en", "target": "de", "format": "pdf"}, 400,
     "pdf format is not supported"),
    ({"q": "hi", "source": "en", "target": "de", "alternatives": "many"}, 400,
     "Invalid request: alternatives parameter is not a number"),
    ({"q": "hi", "source": "en", "target": "de", "alternatives": 4}, 400,
     "Invalid request: alternatives parameter must be <= 3"),
    ({"q": [1, 2], "source": "en", "target": "de"}, 400,
     "Invalid request: q must be a string or a list of strings"),
    ({"q": ["a"] * 65, "source": "en", "target": "de"}, 400,
     "Invalid request: request (65) exceeds text limit (64)"),
])
def test_translate_errors_have_libretranslates_shape(
    server: Any, body: dict[str, Any], status: int, message: str
) -> None:
    r = post(server, "/translate", json=body)
    assert (r.status_code, r.json()) == (status, {"error": message})
    assert r.headers["x-request-id"]


def test_bad_json_and_unserved_detected_language(server: Any) -> None:
    r = post(server, "/translate", content=b"[1,", headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == (400, {"error": "Invalid JSON format"})
    r = post(server, "/translate", json={"q": "これは日本語で書かれた文章です。",
                                          "source": "auto", "target": "en"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("detected language 'ja'")


def test_frontend_settings(server: Any) -> None:
    body = httpx.get(server.http_url + "/frontend/settings").json()
    assert body["language"]["source"] == {"code": "auto", "name": "Auto Detect"}
    assert body["charLimit"] == server.settings.max_input_chars
    assert body["apiKeys"] is False and body["keyRequired"] is False


def test_requests_are_counted_under_the_libretranslate_protocol(server: Any) -> None:
    def count(outcome: str) -> float:
        text = httpx.get(server.http_url + "/metrics").text
        return sum(
            s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "sora_requests_total" and s.labels.get("protocol") == "libretranslate"
            and s.labels.get("outcome") == outcome
        )

    ok = count("eos") + count("length")
    bad = count("invalid_argument")
    assert post(server, "/translate", json={"q": "hi", "source": "en",
                                             "target": "de"}).status_code == 200
    assert post(server, "/translate", json={"q": "hi", "source": "en",
                                             "target": "xx"}).status_code == 400
    assert count("eos") + count("length") == ok + 1
    assert count("invalid_argument") == bad + 1


def test_overloaded_is_429_slowdown_with_retry_after(start_server: Any) -> None:
    srv = start_server(max_waiting=1, max_batch_sequences=1, grpc_enabled=False)
    body = {"q": "Hello", "source": "en", "target": "de"}
    results: list[httpx.Response] = []

    def call() -> None:
        results.append(post(srv, "/translate", json=body))

    with queue_full(srv, call):
        rejected = post(srv, "/translate", json=body)
    assert rejected.status_code == 429
    assert rejected.json()["error"].startswith("Slowdown: ")
    assert int(rejected.headers["retry-after"]) >= 1
    assert [r.status_code for r in results] == [200, 200]


def test_body_too_large_is_413_in_libretranslates_shape(start_server: Any) -> None:
    srv = start_server(max_body_bytes=1000, grpc_enabled=False)
    big = {"q": "x" * 2000, "source": "en", "target": "de"}
    for kw in ({"json": big}, {"data": big}):
        r = post(srv, "/translate", **kw)
        assert r.status_code == 413
        assert r.json() == {"error": "request body exceeds the limit of 1000 bytes"}
    chunked = httpx.post(srv.http_url + "/detect", content=iter([b"q=" + b"y" * 2000]),
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert chunked.status_code == 413
    assert chunked.json() == {"error": "request body exceeds the limit of 1000 bytes"}


def test_multipart_and_query_fields_as_flask_reads_them(server: Any) -> None:
    fields = {"q": "Hello world", "source": "en", "target": "it"}
    r = post(server, "/translate", files={k: (None, v) for k, v in fields.items()})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["translatedText"], str)
    r = post(server, "/detect", params={"q": "Die Katze schläft auf dem Sofa."})
    assert r.status_code == 200 and r.json()[0]["language"] == "de"
    r = post(server, "/translate", files={"q": ("a.txt", b"Hello"), "source": (None, "en"),
                                          "target": (None, "it")})
    assert (r.status_code, r.json()) == (
        400, {"error": "Invalid request: q must be text, not a file"})
