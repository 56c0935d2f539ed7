"""gRPC Detect, and Translate with an empty source_lang: detected, reported, routed."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from proto.sora.v1 import sora_pb2

pytestmark = pytest.mark.timeout(60)

GERMAN = "Die Katze schläft auf dem Sofa, weil es draußen regnet und kalt ist."
FRENCH = "Le chat dort sur le canapé parce qu'il pleut dehors et qu'il fait froid."
JAPANESE = "これは日本語で書かれた文章です。"


async def test_detect_returns_top_languages(serve: Any) -> None:
    served = await serve()
    reply = await served.stub().Detect(sora_pb2.DetectRequest(text=GERMAN))
    langs = [(s.language, s.confidence) for s in reply.languages]
    assert len(langs) == 3 and langs[0][0] == "de"
    assert 0.5 < langs[0][1] <= 1 and langs[0][1] >= langs[1][1] >= langs[2][1]
    top1 = await served.stub().Detect(sora_pb2.DetectRequest(text=FRENCH, top=1))
    assert [s.language for s in top1.languages] == ["fr"]


@pytest.mark.parametrize(("request_", "field", "words"), [
    (sora_pb2.DetectRequest(text=""), "text", "non-empty"),
    (sora_pb2.DetectRequest(text="x", top=11), "top", "between"),
    (sora_pb2.DetectRequest(text=JAPANESE), "text", "'ja'"),
])
async def test_detect_invalid_argument_names_the_field(
    serve: Any, request_: Any, field: str, words: str
) -> None:
    served = await serve()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await served.stub().Detect(request_)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in (e.value.details() or "")
    assert dict(e.value.trailing_metadata() or ())["sora-error-field"] == field


async def test_translate_without_source_reports_detections(serve: Any) -> None:
    served = await serve()
    options = sora_pb2.DecodingOptions(max_new_tokens=4)
    reply = await served.stub().Translate(
        sora_pb2.TranslateRequest(texts=[GERMAN, FRENCH], target_lang="en", options=options)
    )
    assert [r.detected_language.language for r in reply.results] == ["de", "fr"]
    given = await served.stub().Translate(sora_pb2.TranslateRequest(
        texts=[GERMAN], target_lang="en", source_lang="de", options=options))
    assert not given.results[0].HasField("detected_language")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await served.stub().Translate(sora_pb2.TranslateRequest(
            texts=[GERMAN, JAPANESE], target_lang="en"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(e.value.trailing_metadata() or ())["sora-error-field"] == "texts[1]"


async def test_translate_with_glossary_and_html(serve: Any) -> None:
    served = await serve()
    options = sora_pb2.DecodingOptions(max_new_tokens=6)
    stub = served.stub()

    async def alone(text: str) -> str:
        reply = await stub.Translate(sora_pb2.TranslateRequest(
            texts=[text], target_lang="de", source_lang="en", options=options))
        return reply.results[0].text

    reply = await stub.Translate(sora_pb2.TranslateRequest(
        texts=["<p>Click <b>Save</b> now</p>", "<br>"], target_lang="de", source_lang="en",
        options=options, glossary={"save": "Speichern"}, format=sora_pb2.TEXT_FORMAT_HTML))
    first, second = reply.results
    assert first.text == f"<p>{await alone('Click')} <b>Speichern</b> {await alone('now')}</p>"
    assert second.text == "<br>" and second.usage.completion_tokens == 0
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.Translate(sora_pb2.TranslateRequest(
            texts=["x"], target_lang="de", glossary={" ": "y"}))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(e.value.trailing_metadata() or ())["sora-error-field"] == "glossary"
