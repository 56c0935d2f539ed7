"""The web playground at / in a real headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium) against a real server: the page loads the served
models, translates with the output streamed in as tokens are decoded, answers, copies,
and shows the API's own error for an empty input or a missing API key."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_S = 60  # a safety limit for each wait, never an assertion on time


def test_the_page_and_its_assets_are_served(server: Any) -> None:
    page = httpx.get(server.http_url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<option value="">Auto-detect</option>' in page.text
    script = httpx.get(server.http_url + "/playground/playground.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "readStream" in script.text
    missing = httpx.get(server.http_url + "/playground/nothing.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_the_page_is_open_but_the_api_keeps_its_key(server: Any) -> None:
    with server.api_keys("k1"):
        assert httpx.get(server.http_url + "/").status_code == 200
        refused = httpx.post(server.http_url + "/v1/translate",
                             json={"text": "Hello", "target_lang": "de"})
        assert refused.status_code == 401


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed "
                    "(apt-get install chromium chromium-driver; scripts/setup.sh does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1000,1200",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(WAIT_S)
    yield driver
    driver.quit()


def wait_until(driver: Any, cond: Callable[[Any], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.02).until(cond, what)


def open_page(driver: Any, server: Any) -> None:
    driver.get(server.http_url + "/")
    # The target picker fills from GET /v1/models.
    wait_until(driver, lambda d: d.execute_script(
        "return document.getElementById('target').options.length") > 0, "models listed")


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def type_into(driver: Any, element_id: str, text: str) -> None:
    element = by_id(driver, element_id)
    element.clear()
    element.send_keys(text)


def test_translate_streams_the_output_as_it_is_decoded(browser: Any, server: Any) -> None:
    open_page(browser, server)
    source = browser.execute_script(
        "return [...document.getElementById('source').options].map(o => [o.value, o.text])")
    assert source[0] == ["", "Auto-detect"] and ["de", "German (de)"] in source
    type_into(browser, "text", "Hello world, how are you today?")
    browser.execute_script("document.getElementById('target').value = 'fr'")
    assert by_id(browser, "stream").is_selected()  # streaming is the default
    browser.execute_script("document.querySelector('details').open = true")
    type_into(browser, "max-new-tokens", "40")
    expected = httpx.post(server.http_url + "/v1/translate", timeout=60, json={
        "text": "Hello world, how are you today?", "target_lang": "fr",
        "options": {"max_new_tokens": 40}}).json()["results"][0]["text"]
    with server.stepwise() as (steps, free):
        by_id(browser, "run").click()

        def partial(driver: Any) -> str | None:
            shown = by_id(driver, "output").text
            if not shown:
                steps.release()  # one more decode step
            return shown or None

        first = wait_until(browser, partial, "the first streamed piece")
        # Part of the output is on the page while the request is still being decoded.
        assert by_id(browser, "status").text == "working…"
        assert expected.startswith(first) and len(first) < len(expected), (first, expected)
        free.set()
        steps.release(10_000)
        wait_until(browser, lambda d: "tokens" in by_id(d, "status").text, "the done event")
    assert by_id(browser, "output").text == expected.strip()
    assert "40 tokens" in by_id(browser, "status").text
    assert by_id(browser, "error").is_displayed() is False
    copy = by_id(browser, "copy")
    copy.click()
    wait_until(browser, lambda d: by_id(d, "copy").text == "Copied", "the copy confirmation")


def test_an_empty_input_shows_the_api_error(browser: Any, server: Any) -> None:
    open_page(browser, server)
    by_id(browser, "text").clear()
    by_id(browser, "run").click()
    error = wait_until(browser, lambda d: by_id(d, "error").is_displayed()
                       and by_id(d, "error"), "the error")
    api = httpx.post(server.http_url + "/v1/translate", json={
        "text": "", "target_lang": "de", "stream": True}).json()["error"]
    assert api["code"] == "invalid_argument"
    assert error.text == f"{api['code']}: {api['message']}" + (
        f" (field: {api['field']})" if api.get("field") else "")
    assert by_id(browser, "output").text == ""


def test_answer_with_context_without_streaming(browser: Any, server: Any) -> None:
    open_page(browser, server)
    browser.find_element("css selector", "input[value=answer]").click()
    assert by_id(browser, "context").is_displayed() and not by_id(browser, "target").is_displayed()
    assert by_id(browser, "run").text == "Answer"
    type_into(browser, "text", "What is the homepage?")
    type_into(browser, "context", "Homepage: https://example.org")
    browser.execute_script("document.querySelector('details').open = true")
    type_into(browser, "max-new-tokens", "12")
    by_id(browser, "stream").click()  # off: one JSON reply
    assert not by_id(browser, "stream").is_selected()
    by_id(browser, "run").click()
    wait_until(browser, lambda d: "tokens" in by_id(d, "status").text, "the reply")
    expected = httpx.post(server.http_url + "/v1/answer", timeout=60, json={
        "question": "What is the homepage?", "context": "Homepage: https://example.org",
        "options": {"max_new_tokens": 12}}).json()["results"][0]["text"]
    assert by_id(browser, "output").text == expected.strip()


def test_the_api_key_field(browser: Any, server: Any) -> None:
    with server.api_keys("k1"):
        browser.get(server.http_url + "/")
        error = wait_until(browser, lambda d: by_id(d, "error").is_displayed()
                           and by_id(d, "error"), "the refusal")
        assert error.text == "unauthenticated: missing API key"
        browser.execute_script("document.querySelector('details').open = true")
        type_into(browser, "api-key", "k1")
        by_id(browser, "text").click()  # leaving the field sends `change`: models reload
        wait_until(browser, lambda d: not by_id(d, "error").is_displayed(), "the models")
        type_into(browser, "text", "Good morning")
        by_id(browser, "run").click()
        wait_until(browser, lambda d: "tokens" in by_id(d, "status").text, "the translation")
        assert by_id(browser, "output").text
    browser.execute_script("sessionStorage.clear()")


def test_alternatives_and_the_detected_language(browser: Any, server: Any) -> None:
    api = httpx.get(server.http_url + "/openapi.json").json()
    if "/v1/detect" not in api["paths"] or "num_return_sequences" not in (
            api["components"]["schemas"]["DecodingOptions"]["properties"]):
        pytest.skip("this server has no language detection or n-best candidates")
    text = "Dieses Paket enthält die Entwicklungsdateien und die Dokumentation."
    open_page(browser, server)
    assert by_id(browser, "source").get_attribute("value") == ""  # Auto-detect
    type_into(browser, "text", text)
    browser.execute_script("document.getElementById('target').value = 'en'")
    browser.execute_script("document.querySelector('details').open = true")
    type_into(browser, "max-new-tokens", "8")
    type_into(browser, "alternatives", "2")
    by_id(browser, "run").click()
    wait_until(browser, lambda d: "tokens" in by_id(d, "status").text, "the reply")
    expected = httpx.post(server.http_url + "/v1/translate", timeout=60, json={
        "text": text, "target_lang": "en", "options": {
            "max_new_tokens": 8, "strategy": "beam", "beam_size": 4,
            "num_return_sequences": 3}}).json()["results"][0]
    assert by_id(browser, "output").text == expected["text"].strip()
    shown = [li.text for li in by_id(browser, "alternatives-list")
             .find_elements("tag name", "li")]
    # A list item's text as the browser renders it: runs of white space collapse.
    assert shown == [" ".join(f"{c['text']} (score {c['score']:.3f})".split())
                     for c in expected["candidates"][1:]]
    detected = expected["detected_language"]
    assert detected["language"] == "de"
    assert by_id(browser, "detected").text == (
        f"Detected: German (de) (confidence {round(detected['confidence'] * 100)}%)")
