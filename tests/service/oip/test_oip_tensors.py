"""The shared conversion without a server: raw BYTES encoding, shape checks,
parameters -> engine inputs, outputs shaped like the input."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import pytest

from service.engine.errors import InvalidRequest
from service.engine.request import Completion
from service.oip.infer import InferRequest, make_plan, output_tensors
from service.oip.tensors import (
    decode_bytes_elements,
    encode_bytes_elements,
    from_raw,
    from_values,
    to_raw,
)

ENGINE: Any = SimpleNamespace(
    config=SimpleNamespace(default_max_new_tokens=64), max_new_tokens=32
)


def text(values: list[str], shape: list[int] | None = None, name: str = "text") -> Any:
    return from_values(name, "BYTES", shape or [len(values)], values)


def plan_for(*inputs: Any, max_texts: int = 8, **params: Any) -> Any:
    return make_plan(InferRequest("m", None, "", params, list(inputs)), ENGINE,
                     max_texts=max_texts)


def test_bytes_elements_round_trip_with_little_endian_length_prefixes() -> None:
    values = [b"Hello", b"", "Grüße".encode()]
    raw = encode_bytes_elements(values)
    assert raw[:9] == struct.pack("<I", 5) + b"Hello"
    assert decode_bytes_elements("text", raw) == values
    tensor = from_raw("text", "BYTES", [3, 1], raw)
    assert tensor.shape == (3, 1) and tensor.data == values
    assert to_raw(tensor) == raw


@pytest.mark.parametrize("raw", [b"\x05\x00\x00\x00abc", b"\x01\x00"])
def test_truncated_raw_bytes_are_refused(raw: bytes) -> None:
    with pytest.raises(InvalidRequest, match="input 'text': raw BYTES data is malformed"):
        decode_bytes_elements("text", raw)


def test_numeric_raw_data_is_little_endian() -> None:
    tensor = from_raw("max_new_tokens", "INT32", [1], struct.pack("<i", 7))
    assert tensor.data == [7]
    with pytest.raises(InvalidRequest, match="not a multiple of 4"):
        from_raw("max_new_tokens", "INT32", [1], b"\x07\x00")


@pytest.mark.parametrize(("shape", "message"), [
    ([3], r"shape \[3\] holds 3 elements but the data has 2"),
    ([2, 2], r"shape \[2, 2\] holds 4 elements but the data has 2"),
    ([-1], "non-negative integers"),
])
def test_shape_must_match_the_data(shape: list[int], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        from_values("text", "BYTES", shape, ["a", "b"])


def test_json_elements_must_match_the_datatype() -> None:
    with pytest.raises(InvalidRequest, match=r"element 1 \(3\) is not a valid BYTES value"):
        from_values("text", "BYTES", [2], ["a", 3])
    with pytest.raises(InvalidRequest, match="unknown datatype 'STRING'"):
        from_values("text", "STRING", [1], ["a"])
    assert from_values("text", "BYTES", [2, 1], [["a"], ["b"]]).data == [b"a", b"b"]


def test_parameters_become_task_inputs_and_decoding_params() -> None:
    plan = plan_for(text(["Hi", "Yo"], [2, 1]), task="translate", target_lang="de",
                    max_new_tokens=5, strategy="sample", temperature=1, seed=3)
    assert [i.text for i in plan.inputs] == ["Hi", "Yo"]
    assert {i.target_lang for i in plan.inputs} == {"de"}
    assert plan.params.max_new_tokens == 5 and plan.params.strategy == "sample"
    assert plan.params.temperature == 1.0 and plan.params.seed == 3
    assert plan.shape == (2, 1) and plan.outputs == ("text", "finish_reason")


def test_settings_may_be_inputs_and_languages_per_element() -> None:
    plan = plan_for(
        text(["Hi", "Yo"]), from_values("task", "BYTES", [1], ["translate"]),
        from_values("target_lang", "BYTES", [2], ["de", "fr"]),
        from_values("max_new_tokens", "INT32", [1], [4]),
    )
    assert [i.target_lang for i in plan.inputs] == ["de", "fr"]
    assert plan.params.max_new_tokens == 4
    # unset max_new_tokens: the engine default, capped by the model's positions
    assert plan_for(text(["Hi"]), task="summarize").params.max_new_tokens == 32


def test_answer_takes_question_and_context_inputs() -> None:
    plan = plan_for(text(["Who?", "What?"], name="question"),
                    text(["Ann did it.", "A tool."], name="context"))
    assert plan.task == "answer" and plan.items == "question"
    assert [(i.text, i.context) for i in plan.inputs] == [("Who?", "Ann did it."),
                                                          ("What?", "A tool.")]


@pytest.mark.parametrize(("inputs", "params", "message"), [
    ([], {"task": "summarize"}, "input 'text': missing"),
    (["fp32"], {"task": "summarize"}, "input 'text': datatype FP32 is not supported"),
    (["text"], {}, "parameter 'task' is required"),
    (["text"], {"task": "poem"}, "parameter 'task': unknown task 'poem'"),
    (["text"], {"task": "summarize", "max_tokens": 3}, "unknown parameter 'max_tokens'"),
    (["text"], {"task": "summarize", "top_p": 2.0}, "parameter 'top_p': must be in"),
    (["text"], {"task": "summarize", "max_new_tokens": "5"},
     "parameter 'max_new_tokens': '5' is not a valid int"),
    (["text", "task"], {"task": "summarize"}, "'task' is given both"),
    (["big"], {"task": "summarize"}, "holds 9 elements; the limit is 8"),
])
def test_invalid_requests_name_what_is_wrong(
    inputs: list[str], params: dict[str, Any], message: str
) -> None:
    tensors = {
        "text": text(["Hi"]),
        "fp32": from_values("text", "FP32", [1], [1.0]),
        "task": from_values("task", "BYTES", [1], ["summarize"]),
        "big": text(["x"] * 9),
    }
    with pytest.raises(InvalidRequest, match=message):
        plan_for(*(tensors[i] for i in inputs), **params)


def test_outputs_copy_the_input_shape_and_honour_requested_names() -> None:
    plan = make_plan(InferRequest("m", None, "", {"task": "summarize"},
                                  [text(["a", "b"], [1, 2])], ["finish_reason"]),
                     ENGINE, max_texts=8)
    done = [Completion(t, r, 1, 1, 0.0, "m", "1", 1) for t, r in (("x", "eos"),
                                                                  ("y", "length"))]
    [reason] = output_tensors(plan, done)
    assert (reason.name, reason.shape, reason.data) == ("finish_reason", (1, 2),
                                                        [b"eos", b"length"])
    with pytest.raises(InvalidRequest, match="output 'logits': unknown output"):
        make_plan(InferRequest("m", None, "", {"task": "summarize"}, [text(["a"])],
                               ["logits"]), ENGINE, max_texts=8)
