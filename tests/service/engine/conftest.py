"""Engines over the tiny checkpoint (tests/conftest.py), and the references engine
outputs are compared with: `model.generation.generate` run on one request alone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Protocol

import pytest

from model.checkpoint import load_checkpoint
from model.generation import GenerationResult, generate
from model.sampling import DecodingParams
from service.engine import Completion, Engine, EngineConfig, TaskInput
from service.engine.stats import RequestStats, StepStats


class MakeEngine(Protocol):
    def __call__(self, **config: Any) -> Awaitable[Engine]: ...


@pytest.fixture
async def make_engine(tiny_checkpoint: Path) -> AsyncIterator[MakeEngine]:
    """Builds started engines (warm-up off unless asked) and drains them afterwards."""
    engines: list[Engine] = []

    async def make(**config: Any) -> Engine:
        cfg = EngineConfig(**{"warmup": False, "device": "cpu", "compile": "off", **config})
        engine = Engine(load_checkpoint(tiny_checkpoint), cfg, name="tiny")
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.drain(timeout=10.0)


@pytest.fixture
async def engine(make_engine: MakeEngine) -> Engine:
    return await make_engine()


def source_ids(engine: Engine, inp: TaskInput) -> list[int]:
    return engine.tokenizer.source_ids(
        inp.task, inp.text, inp.target_lang, context=inp.context
    )


def solo(engine: Engine, inp: TaskInput, params: DecodingParams) -> GenerationResult:
    """`generate()` on this one request alone, with the engine's own weights."""
    model = engine.runner.model
    return generate(model, engine.tokenizer, [source_ids(engine, inp)], params)[0]


def assert_same(done: Completion, ref: GenerationResult, what: object = "") -> None:
    assert done.text == ref.text, what
    assert done.completion_tokens == len(ref.token_ids), what
    assert done.finish_reason == ref.finish_reason, what
    assert abs(done.logprob - ref.logprob) < 1e-3 * max(1.0, abs(ref.logprob)), what


def running_jobs(engine: Engine) -> set[str]:
    batch = engine._batch
    return {s.job.id for s in batch.unique_seqs()} if batch is not None else set()


class Recorder:
    """A stats listener keeping every record (appended from the engine thread)."""

    def __init__(self) -> None:
        self.records: list[RequestStats | StepStats] = []

    def __call__(self, record: RequestStats | StepStats) -> None:
        self.records.append(record)

    def requests(self) -> list[RequestStats]:
        return [r for r in self.records if isinstance(r, RequestStats)]

    def steps(self, kind: str) -> list[StepStats]:
        return [r for r in self.records if isinstance(r, StepStats) and r.kind == kind]


TEXTS = [
    "Hello world, how are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Hallo Welt, wie geht es dir heute? Grüße aus München.",
    "Bonjour le monde, comment ça va ?",
    "Hola mundo, ¿cómo estás? Mañana será otro día.",
    "Ciao mondo.",
    "你好，世界！今天天气很好。",
    "Emoji: 🙂 🚀 👍🏽 and symbols € £.",
    "The meeting covered budgets, hiring and the roadmap for next year.",
    "What is the capital of France?",
]
