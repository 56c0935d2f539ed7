"""Running a REST call's inputs on an engine: submit them all (they batch), then wait
for the results while watching for the client going away, or stream them as
Server-Sent Events.

A client that disconnects cancels its jobs, so the engine frees their rows at the next
step instead of generating for nobody.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import Request

from model.sampling import DecodingParams
from service.engine.errors import EngineError
from service.engine.protocol import EngineClient
from service.engine.request import Completion, Job, TaskInput
from service.http.errors import ApiError, error_body, from_engine_error
from service.http.schemas import Candidate, Result, TaskResponse, Usage

log = logging.getLogger(__name__)
# Engine field names that live under `options` in the REST body.
OPTION_FIELDS = {"max_new_tokens", "beam_size", "timeout", "min_new_tokens", "rerank"}


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was ready."""


def submit_all(
    engine: EngineClient,
    inputs: Sequence[TaskInput],
    params: DecodingParams,
    *,
    timeout: float | None,
    stream: bool,
    request_id: str,
    text_fields: Sequence[str],
    protocol: str = "http",
) -> list[Job]:
    """Submit every input; if one is refused, cancel the others and raise the refusal
    as an ApiError naming the REST field (`texts[2]`, `options.max_new_tokens`)."""
    jobs: list[Job] = []
    for i, inp in enumerate(inputs):
        rid = request_id if len(inputs) == 1 else f"{request_id}.{i}"
        try:
            jobs.append(engine.submit(
                inp, params, timeout=timeout, protocol=protocol, stream=stream, request_id=rid,
            ))
        except EngineError as e:
            for job in jobs:
                job.cancel()
            field = e.field
            if field == "text":
                field = text_fields[i]
            elif field in OPTION_FIELDS:
                field = f"options.{field}"
            raise from_engine_error(e, field) from None
    return jobs


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects. The body has been read, so the server's
    next receive() blocks until the connection closes."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def wait_all(request: Request, jobs: list[Job]) -> list[Completion]:
    """Every job's completion, in order. The first failure cancels the rest and is
    raised as an ApiError; a client disconnect cancels all and raises
    ClientDisconnected."""
    outcomes = [j.outcome() for j in jobs]
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        pending: set[asyncio.Future[Any]] = set(outcomes)
        while pending:
            done, _ = await asyncio.wait(pending | {watcher},
                                         return_when=asyncio.FIRST_COMPLETED)
            if watcher in done:
                raise ClientDisconnected
            failures = [t.exception() for t in done]  # retrieve each, so none warn
            pending -= done
            for exc in failures:
                if isinstance(exc, EngineError):
                    raise from_engine_error(exc) from None
                if exc is not None:
                    raise exc
        return [f.result() for f in outcomes]
    finally:
        watcher.cancel()
        for job, outcome in zip(jobs, outcomes, strict=True):
            if not outcome.done():
                job.cancel()


def _usage(prompt: int, completion: int) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion)


def task_response(engine: EngineClient, completions: list[Completion]) -> TaskResponse:
    results = [
        Result(text=c.text, finish_reason=c.finish_reason,  # type: ignore[arg-type]
               usage=_usage(c.prompt_tokens, c.completion_tokens),
               candidates=[Candidate(text=k.text, score=k.score,
                                     discriminator_score=k.discriminator_score)
                           for k in c.candidates]
               if c.candidates else None)
        for c in completions
    ]
    return TaskResponse(
        model=engine.name,
        version=engine.version,
        results=results,
        usage=_usage(sum(c.prompt_tokens for c in completions),
                     sum(c.completion_tokens for c in completions)),
    )


def _event(data: object, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def sse_stream(engine: EngineClient, jobs: list[Job]) -> AsyncIterator[str]:
    """Server-Sent Events for `jobs` (one per input, `index` = its position):

        data: {"index": 0, "text": "Hal"}            (one per piece, any index order)
        ...
        event: done
        data: {"model", "version", "results": [{"index", "finish_reason", "usage"}],
               "usage"}

    or, if the request fails part-way, `event: error` with the error body. When the
    client disconnects, Starlette cancels this generator and the jobs are cancelled."""
    queue: asyncio.Queue[tuple[str, int, object]] = asyncio.Queue()

    async def pump(index: int, job: Job) -> None:
        try:
            async for delta in job.deltas():
                if delta.text:
                    queue.put_nowait(("delta", index, delta.text))
            queue.put_nowait(("done", index, await job.result()))
        except EngineError as e:
            queue.put_nowait(("error", index, e))

    pumps = [asyncio.create_task(pump(i, job)) for i, job in enumerate(jobs)]
    completions: dict[int, Completion] = {}
    try:
        while len(completions) < len(jobs):
            kind, index, payload = await queue.get()
            if kind == "delta":
                yield _event({"index": index, "text": payload})
            elif kind == "done":
                assert isinstance(payload, Completion)
                completions[index] = payload
            else:
                assert isinstance(payload, EngineError)
                err: ApiError = from_engine_error(payload)
                log.info("stream ended with %s: %s", err.code, err.message)
                yield _event(error_body(err.code, err.message, err.field), event="error")
                return
        ordered = [completions[i] for i in range(len(jobs))]
        body = task_response(engine, ordered).model_dump()
        results = [{"index": i, "finish_reason": r["finish_reason"], "usage": r["usage"]}
                   for i, r in enumerate(body["results"])]
        yield _event({**body, "results": results}, event="done")
    finally:
        for job, task in zip(jobs, pumps, strict=True):
            if not task.done():
                job.cancel()
                task.cancel()
