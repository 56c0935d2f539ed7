"""The sora.v1.Sora service over a real socket: results equal the engine's own, every
status code provoked for real, cancellation and deadlines free engine rows."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from model.sampling import DecodingParams
from proto.sora.v1 import sora_pb2
from service.engine.request import TaskInput
from service.metrics import Metrics

pytestmark = pytest.mark.timeout(60)

TEXTS = ["Hello world, how are you?", "The quick brown fox.", "Bonjour le monde"]
GREEDY = sora_pb2.DecodingOptions(max_new_tokens=12)
LONG = sora_pb2.DecodingOptions(max_new_tokens=500, ignore_eos=True)


def trailing(err: grpc.aio.AioRpcError) -> dict[str, Any]:
    return dict(err.trailing_metadata() or ())


async def test_translate_several_texts_match_single_engine_calls(serve: Any) -> None:
    served = await serve()
    reply = await served.stub().Translate(
        sora_pb2.TranslateRequest(texts=TEXTS, target_lang="de", options=GREEDY)
    )
    steps = list(served.steps)  # before the single calls below add their own
    assert len(reply.results) == len(TEXTS)
    assert (reply.model, reply.version) == ("tiny", "1")
    params = DecodingParams(max_new_tokens=12)
    for text, result in zip(TEXTS, reply.results, strict=True):
        alone = await served.engine.generate(TaskInput("translate", text, target_lang="de"),
                                             params)
        assert result.text == alone.text
        assert result.finish_reason == (sora_pb2.FINISH_REASON_EOS
                                        if alone.finish_reason == "eos"
                                        else sora_pb2.FINISH_REASON_LENGTH)
        assert result.usage.prompt_tokens == alone.prompt_tokens
        assert result.usage.completion_tokens == alone.completion_tokens
    assert any(r.text for r in reply.results)  # the test model writes visible text
    assert reply.usage.completion_tokens == sum(r.usage.completion_tokens for r in reply.results)
    # submitted together, so the engine decoded them as one batch
    assert max(s.batch_size for s in steps if s.kind == "decode") == len(TEXTS)


async def test_summarize_and_answer_match_single_engine_calls(serve: Any) -> None:
    served = await serve()
    stub = served.stub()
    params = DecodingParams(max_new_tokens=12)
    summary = await stub.Summarize(sora_pb2.SummarizeRequest(texts=TEXTS[:2], options=GREEDY))
    for text, result in zip(TEXTS[:2], summary.results, strict=True):
        alone = await served.engine.generate(TaskInput("summarize", text), params)
        assert result.text == alone.text
    questions = [
        sora_pb2.Question(question="What is it?", context="It is a tool."),
        sora_pb2.Question(question="Who jumps?", context="The quick brown fox jumps."),
        sora_pb2.Question(question="Where is Paris?"),
    ]
    answers = await stub.Answer(sora_pb2.AnswerRequest(questions=questions, options=GREEDY))
    for q, result in zip(questions, answers.results, strict=True):
        alone = await served.engine.generate(
            TaskInput("answer", q.question, context=q.context or None), params
        )
        assert result.text == alone.text


async def test_stream_pieces_concatenate_to_the_unary_text(serve: Any) -> None:
    served = await serve()
    stub = served.stub()
    unary = await stub.Translate(
        sora_pb2.TranslateRequest(texts=TEXTS[:1], target_lang="de", options=GREEDY)
    )
    messages = [m async for m in stub.GenerateStream(sora_pb2.GenerateStreamRequest(
        task=sora_pb2.TASK_TRANSLATE, text=TEXTS[0], target_lang="de", options=GREEDY,
    ))]
    *pieces, last = messages
    assert len(pieces) > 1  # streamed token by token
    assert all(m.finish_reason == sora_pb2.FINISH_REASON_UNSPECIFIED for m in pieces)
    assert "".join(m.text for m in messages) == unary.results[0].text
    assert last.finish_reason == unary.results[0].finish_reason
    assert last.usage == unary.results[0].usage
    assert (last.model, last.version) == ("tiny", "1")


async def test_list_models(serve: Any) -> None:
    served = await serve()
    reply = await served.stub().ListModels(sora_pb2.ListModelsRequest())
    assert reply.default_model == "tiny"
    (info,) = reply.models
    assert (info.name, info.version, info.state) == ("tiny", "1", "ready")
    assert set(info.tasks) == {"translate", "summarize", "answer"}
    assert "de" in info.languages and info.parameters > 0
    assert info.max_new_tokens == 512


INVALID = [
    ("Translate", sora_pb2.TranslateRequest(target_lang="de"), "texts"),
    ("Translate", sora_pb2.TranslateRequest(texts=["ok", " "], target_lang="de"), "texts[1]"),
    ("Translate", sora_pb2.TranslateRequest(texts=["a", "b", "c"], target_lang="de"), "texts"),
    ("Translate", sora_pb2.TranslateRequest(texts=["ok"]), "target_lang"),
    ("Translate", sora_pb2.TranslateRequest(texts=["ok"], target_lang="xx"), "target_lang"),
    ("Translate", sora_pb2.TranslateRequest(
        texts=["ok"], target_lang="de", options=sora_pb2.DecodingOptions(
            strategy=sora_pb2.DecodingOptions.STRATEGY_SAMPLE, top_p=2.0)), "options.top_p"),
    ("Summarize", sora_pb2.SummarizeRequest(
        texts=["ok"], options=sora_pb2.DecodingOptions(max_new_tokens=100_000)),
     "options.max_new_tokens"),
    ("Summarize", sora_pb2.SummarizeRequest(
        texts=["ok"], options=sora_pb2.DecodingOptions(max_new_tokens=0)),
     "options.max_new_tokens"),
    ("Answer", sora_pb2.AnswerRequest(questions=[
        sora_pb2.Question(question="ok"), sora_pb2.Question(context="no question")]),
     "questions[1].question"),
]


@pytest.mark.parametrize(("method", "request_", "field"), INVALID,
                         ids=[f"{m}-{f}" for m, _, f in INVALID])
async def test_invalid_argument_names_the_field(
    serve: Any, method: str, request_: Any, field: str
) -> None:
    served = await serve(max_batch_texts=2)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await getattr(served.stub(), method)(request_)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (e.value.details() or "").startswith(f"{field}:"), e.value.details()
    assert trailing(e.value)["sora-error-field"] == field


async def test_stream_invalid_argument(serve: Any) -> None:
    served = await serve()
    call = served.stub().GenerateStream(sora_pb2.GenerateStreamRequest(text="hi"))
    with pytest.raises(grpc.aio.AioRpcError) as e:
        _ = [m async for m in call]
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (e.value.details() or "").startswith("task:")


async def test_unknown_model_is_not_found(serve: Any) -> None:
    served = await serve()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await served.stub().Summarize(sora_pb2.SummarizeRequest(texts=["x"], model="nope"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in (e.value.details() or "")


async def test_overload_is_resource_exhausted_with_retry_after(serve: Any) -> None:
    metrics = Metrics()
    served = await serve({"max_waiting": 1, "max_batch_sequences": 1}, metrics=metrics)
    stub = served.stub()
    request = sora_pb2.TranslateRequest(texts=["Hello"], target_lang="de", options=LONG)
    outcomes = await asyncio.gather(
        *(stub.Translate(request, timeout=20) for _ in range(4)), return_exceptions=True
    )
    errors = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert errors and len(errors) < len(outcomes)
    for err in errors:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert int(trailing(err)["retry-after"]) >= 1
    rejected = metrics.failures.labels("tiny", "translate", "grpc", "overloaded")._value.get()
    assert rejected == len(errors)


async def test_client_deadline_is_the_engine_timeout(serve: Any) -> None:
    served = await serve()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await served.stub().Translate(
            sora_pb2.TranslateRequest(texts=["Hello"], target_lang="de", options=LONG),
            timeout=0.2,
        )
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    record = await served.wait_record()
    assert record.outcome in ("deadline_exceeded", "cancelled")
    assert record.generated_tokens < 500  # stopped early: its rows were freed
    await served.wait_idle()


async def test_cancelled_stream_frees_the_engine_rows(serve: Any) -> None:
    served = await serve()
    call = served.stub().GenerateStream(sora_pb2.GenerateStreamRequest(
        task=sora_pb2.TASK_TRANSLATE, text="Hello", target_lang="de", options=LONG,
    ))
    first = await call.read()
    assert first.text or first.tokens
    assert served.engine._batch is not None  # decoding for us right now
    call.cancel()
    record = await served.wait_record()
    assert record.outcome == "cancelled"
    assert record.generated_tokens < 500
    await served.wait_idle()
    assert call.cancelled()
    assert await call.code() == grpc.StatusCode.CANCELLED


async def test_cancelled_unary_call_cancels_its_jobs(serve: Any) -> None:
    served = await serve()
    call = served.stub().Summarize(sora_pb2.SummarizeRequest(texts=TEXTS, options=LONG))
    while served.engine._batch is None:
        await asyncio.sleep(0.005)
    call.cancel()
    await served.wait_idle()
    await asyncio.sleep(0.05)
    records = served.grpc_records()
    assert len(records) == len(TEXTS)
    assert {r.outcome for r in records} == {"cancelled"}


async def test_message_size_limit(serve: Any) -> None:
    served = await serve(grpc_max_message_bytes=1024)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await served.stub().Summarize(sora_pb2.SummarizeRequest(texts=["word " * 400]))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_num_return_sequences_returns_candidates(serve: Any) -> None:
    served = await serve()
    options = sora_pb2.DecodingOptions(strategy=sora_pb2.DecodingOptions.STRATEGY_BEAM,
                                       beam_size=4, num_return_sequences=3, max_new_tokens=8)
    reply = await served.stub().Translate(
        sora_pb2.TranslateRequest(texts=TEXTS[:1], target_lang="de", source_lang="en",
                                  options=options))
    [result] = reply.results
    assert len(result.candidates) == 3 and result.candidates[0].text == result.text
    scores = [c.score for c in result.candidates]
    assert scores == sorted(scores, reverse=True)
    alone = await served.engine.generate(
        TaskInput("translate", TEXTS[0], target_lang="de"),
        DecodingParams(strategy="beam", beam_size=4, num_return_sequences=3, max_new_tokens=8))
    assert alone.candidates is not None
    assert [c.text for c in result.candidates] == [c.text for c in alone.candidates]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await served.stub().Translate(sora_pb2.TranslateRequest(
            texts=TEXTS[:1], target_lang="de", source_lang="en",
            options=sora_pb2.DecodingOptions(num_return_sequences=2)))
    assert trailing(e.value)["sora-error-field"] == "options.num_return_sequences"
