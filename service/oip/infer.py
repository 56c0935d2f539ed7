"""An inference request, whichever front end it came through: decoded tensors and
parameters -> engine inputs and decoding settings -> output tensors.

    request = InferRequest(...)              # built by service/oip/rest.py or proto.py
    plan = make_plan(request, engine, max_texts=64)
    jobs = submit(engine, plan, protocol="oip-http", request_id="...", timeout=None)
    completions = ...                        # each front end awaits the jobs its way
    tensors = output_tensors(plan, completions)

Sora's model takes text and gives text, so the one required input is the BYTES tensor
`text` (or `question`, for answer): every element is one engine request, all submitted
before any is awaited so they batch together (and with everyone else's work), and the
output `text` has the input's shape. The task and decoding options come as request
parameters or as one-element input tensors; languages and the answer context may also
be given per element. Every error is an EngineError whose message names the input,
output or parameter at fault; its class picks the status (400/INVALID_ARGUMENT, ...).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from model.sampling import DecodingParams
from model.tokenizer import TASKS
from service.engine.errors import EngineError, InvalidRequest
from service.engine.protocol import EngineClient
from service.engine.request import Completion, Job, TaskInput
from service.oip.tensors import FLOAT_TYPES, INTEGER_TYPES, Tensor, bad, bytes_tensor

Scalar = bool | int | float | str

# Per-element BYTES inputs: the items themselves and what may vary per item.
ITEM_INPUTS = ("text", "question", "context", "target_lang", "source_lang")
# Settings (parameters, or one-element inputs) and the Python type each must have.
SETTINGS: dict[str, type] = {
    "task": str, "target_lang": str, "source_lang": str,
    "strategy": str, "max_new_tokens": int, "min_new_tokens": int, "temperature": float,
    "top_k": int, "top_p": float, "seed": int, "beam_size": int, "length_penalty": float,
    "no_repeat_ngram_size": int, "ignore_eos": bool, "early_stopping": bool,
}
DECODING = tuple(k for k in SETTINGS if k not in ("task", "target_lang", "source_lang"))
INPUT_NAMES = tuple(dict.fromkeys((*ITEM_INPUTS, *SETTINGS)))
OUTPUTS = ("text", "finish_reason")
# Parameters of the protocol (or of Triton's clients) that Sora accepts and ignores:
# scheduling priority (Triton's scale differs from Sora's), the REST binary-output
# switch (handled by the REST codec) and client-side headers.
IGNORED_PARAMETERS = frozenset({"priority", "binary_data_output", "headers"})
TIMEOUT_PARAMETER = "timeout"  # microseconds, as Triton's clients send it
MICROSECONDS = 1e-6


@dataclass
class InferRequest:
    """A decoded ModelInfer / POST .../infer request."""

    model_name: str
    model_version: str | None  # None: the version being served
    id: str = ""
    parameters: dict[str, Scalar] = field(default_factory=dict)
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # requested; empty: all


@dataclass(frozen=True)
class InferPlan:
    """What to submit to the engine, and how to shape the answer."""

    task: str
    items: str  # the input tensor whose elements are the requests ("text" or "question")
    given: frozenset[str]  # the names of the request's input tensors
    inputs: list[TaskInput]  # one per element, row-major
    params: DecodingParams
    shape: tuple[int, ...]  # the items tensor's shape, which the outputs copy
    outputs: tuple[str, ...]  # output tensors to return, in order
    timeout: float | None  # seconds, from the `timeout` parameter


def oip_error(error: EngineError, where: str | None = None) -> EngineError:
    """`error` with its message prefixed by `where` (`input 'text' element 2`) and no
    field of its own: the protocol's errors are a message, the message says it all."""
    message = f"{where}: {error.message}" if where else error.message
    if message == error.message and error.field is None:
        return error
    copy = error.__class__.__new__(error.__class__)
    copy.__dict__.update(error.__dict__)
    copy.args = (message,)
    copy.message, copy.field = message, None
    return copy


def task_label(request: InferRequest) -> str:
    """The task for metric labels, before (or without) a valid plan."""
    task = request.parameters.get("task")
    if isinstance(task, str) and task in TASKS:
        return task
    return "answer" if any(t.name == "question" for t in request.inputs) else "unknown"


# -- request -> plan -------------------------------------------------------------------


def _text(tensor: Tensor, index: int, value: Any) -> str:
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise bad(tensor.name, f"element {index} is not valid UTF-8") from None


def _setting_from_input(tensor: Tensor) -> Scalar:
    kind = SETTINGS[tensor.name]
    if tensor.count != 1:
        raise bad(tensor.name, f"must hold exactly one element, not {tensor.count}")
    value = tensor.data[0]
    ok = {
        str: tensor.datatype == "BYTES",
        int: tensor.datatype in INTEGER_TYPES,
        float: tensor.datatype in FLOAT_TYPES or tensor.datatype in INTEGER_TYPES,
        bool: tensor.datatype == "BOOL",
    }[kind]
    if not ok:
        expected = {str: "BYTES", int: "an integer type (INT32, INT64, ...)",
                    float: "FP32 or FP64", bool: "BOOL"}[kind]
        raise bad(tensor.name, f"datatype {tensor.datatype} is not supported; expected "
                               f"{expected}")
    return _text(tensor, 0, value) if kind is str else kind(value)


def _setting_from_parameter(name: str, value: Scalar) -> Scalar:
    kind = SETTINGS[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidRequest(f"parameter '{name}': {value!r} is not a valid "
                             f"{kind.__name__}")
    return value


def _settings(request: InferRequest, inputs: dict[str, Tensor]) -> dict[str, Scalar]:
    """Request parameters and one-element setting inputs, merged (a setting given both
    ways is an error, so there is never a silent winner)."""
    values: dict[str, Scalar] = {}
    for name, value in request.parameters.items():
        if name in SETTINGS:
            values[name] = _setting_from_parameter(name, value)
        elif name not in IGNORED_PARAMETERS and name != TIMEOUT_PARAMETER and not (
            name.startswith("triton_")
        ):
            raise InvalidRequest(f"unknown parameter '{name}'; Sora accepts "
                                 f"{', '.join(sorted({*SETTINGS, TIMEOUT_PARAMETER}))}")
    for name, tensor in inputs.items():
        if name in values:
            raise InvalidRequest(f"'{name}' is given both as a parameter and as an input")
        if name in SETTINGS and name not in ITEM_INPUTS:  # languages: per item, below
            values[name] = _setting_from_input(tensor)
    return values


def _per_item(inputs: dict[str, Tensor], name: str, count: int) -> list[str] | None:
    """A BYTES input holding one element per item, or one for all (None if absent)."""
    tensor = inputs.get(name)
    if tensor is None:
        return None
    if tensor.datatype != "BYTES":
        raise bad(name, f"datatype {tensor.datatype} is not supported; expected BYTES")
    if tensor.count not in (1, count):
        raise bad(name, f"holds {tensor.count} elements; expected 1 or {count} (one per "
                        "item)")
    values = [_text(tensor, i, v) for i, v in enumerate(tensor.data)]
    return values * count if len(values) == 1 else values


def _timeout(request: InferRequest) -> float | None:
    raw = request.parameters.get(TIMEOUT_PARAMETER)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        raise InvalidRequest(f"parameter '{TIMEOUT_PARAMETER}' must be a positive number of "
                             "microseconds")
    return raw * MICROSECONDS


def _outputs(request: InferRequest) -> tuple[str, ...]:
    for name in request.outputs:
        if name not in OUTPUTS:
            raise bad(name, f"unknown output; the model's outputs are {', '.join(OUTPUTS)}",
                      kind="output")
    return tuple(dict.fromkeys(request.outputs)) or OUTPUTS


def decoding_params(values: dict[str, Scalar], engine: EngineClient) -> DecodingParams:
    kwargs: dict[str, Any] = {k: values[k] for k in DECODING if k in values}
    # The configured default, capped by what this model's target positions allow.
    kwargs.setdefault(
        "max_new_tokens", min(engine.config.default_max_new_tokens, engine.max_new_tokens)
    )
    try:
        return DecodingParams(**kwargs)
    except ValueError as e:
        name = getattr(e, "field", None)
        why = str(e).removeprefix(f"{name}: ") if name else str(e)
        raise InvalidRequest(f"parameter '{name}': {why}" if name else why) from None


def make_plan(request: InferRequest, engine: EngineClient, *, max_texts: int) -> InferPlan:
    """Validate `request` against Sora's inputs and build the engine work. Raises
    InvalidRequest naming the input, output or parameter."""
    inputs: dict[str, Tensor] = {}
    for given in request.inputs:
        if given.name not in INPUT_NAMES:
            raise bad(given.name, f"unknown input; the model's inputs are "
                                  f"{', '.join(INPUT_NAMES)}")
        if given.name in inputs:
            raise bad(given.name, "given more than once")
        inputs[given.name] = given
    values = _settings(request, inputs)
    task = str(values["task"]) if "task" in values else (
        "answer" if "question" in inputs else None
    )
    if task is None:
        raise InvalidRequest(
            f"parameter 'task' is required: one of {', '.join(TASKS)} (as a request "
            "parameter or a BYTES input)"
        )
    if task not in TASKS:
        raise InvalidRequest(f"parameter 'task': unknown task {task!r}; expected one of "
                             f"{', '.join(TASKS)}")
    items = "question" if task == "answer" and "question" in inputs else "text"
    if items not in inputs:
        raise bad(items, "missing: a BYTES tensor with one element per text is required")
    tensor = inputs[items]
    if tensor.datatype != "BYTES":
        raise bad(items, f"datatype {tensor.datatype} is not supported; expected BYTES")
    if tensor.count == 0:
        raise bad(items, "holds no elements")
    if tensor.count > max_texts:
        raise bad(items, f"holds {tensor.count} elements; the limit is {max_texts} per "
                         "request")
    for name in ("question", "context"):
        if name in inputs and task != "answer":
            raise bad(name, f"is only used by the answer task, not {task}")
    n = tensor.count
    texts = [_text(tensor, i, v) for i, v in enumerate(tensor.data)]
    per_item: dict[str, Sequence[str | None]] = {}
    for name in ("target_lang", "source_lang", "context"):
        value = values.get(name)
        per_item[name] = _per_item(inputs, name, n) or [str(value) if value else None] * n
    task_inputs = [
        TaskInput(task, texts[i], target_lang=per_item["target_lang"][i],
                  source_lang=per_item["source_lang"][i], context=per_item["context"][i])
        for i in range(n)
    ]
    return InferPlan(
        task=task, items=items, inputs=task_inputs, given=frozenset(inputs),
        params=decoding_params(values, engine), shape=tensor.shape,
        outputs=_outputs(request), timeout=_timeout(request),
    )


# -- engine ----------------------------------------------------------------------------

# An engine error's field -> the input that element's value came from.
_FIELD_INPUTS = {"context": "context", "target_lang": "target_lang",
                 "source_lang": "source_lang"}


def _where(plan: InferPlan, index: int, error: EngineError) -> str:
    field_name = error.field
    if field_name in (None, "text", "question"):
        name = plan.items
    elif field_name in _FIELD_INPUTS and _FIELD_INPUTS[field_name] in plan.given:
        name = _FIELD_INPUTS[field_name]
    else:
        return f"parameter '{field_name}'"
    return f"input '{name}' element {index}" if len(plan.inputs) > 1 else f"input '{name}'"


def submit(
    engine: EngineClient,
    plan: InferPlan,
    *,
    protocol: str,
    request_id: str | None,
    timeout: float | None,
) -> list[Job]:
    """Submit every element before awaiting any (so they batch). If one is refused, the
    ones already queued are cancelled and the refusal is raised, naming the element."""
    jobs: list[Job] = []
    for i, task_input in enumerate(plan.inputs):
        rid = request_id if not request_id or len(plan.inputs) == 1 else f"{request_id}.{i}"
        try:
            jobs.append(engine.submit(task_input, plan.params, timeout=timeout,
                                      protocol=protocol, request_id=rid))
        except EngineError as e:
            cancel(jobs)
            where = _where(plan, i, e) if e.field is not None or isinstance(
                e, InvalidRequest) else None
            raise oip_error(e, where) from None
    return jobs


def cancel(jobs: Sequence[Job]) -> None:
    for job in jobs:
        job.cancel()


async def wait(jobs: list[Job]) -> list[Completion]:
    """Every job's completion, in order. The first failure cancels the others and is
    raised; so does cancellation of the awaiting task (a call that went away)."""
    try:
        return list(await asyncio.gather(*(job.outcome() for job in jobs)))
    except EngineError as e:
        cancel(jobs)
        raise oip_error(e) from None
    except BaseException:
        cancel(jobs)
        raise


# -- completions -> outputs ------------------------------------------------------------


def output_tensors(plan: InferPlan, completions: Sequence[Completion]) -> list[Tensor]:
    """The requested output tensors, each shaped like the items input."""
    columns = {
        "text": [c.text.encode("utf-8") for c in completions],
        "finish_reason": [c.finish_reason.encode("ascii") for c in completions],
    }
    return [bytes_tensor(name, plan.shape, columns[name]) for name in plan.outputs]
