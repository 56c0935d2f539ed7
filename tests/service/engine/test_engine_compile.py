"""compile=background: the engine serves eagerly from start(), compiles on a thread of its
own and installs the compiled steps between two engine steps, with requests running
through the swap unchanged; a failed compile keeps it eager. off never compiles."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import torch
from conftest import MakeEngine, assert_same, running_jobs, solo
from test_engine_batching import mixed_request

from model.sampling import DecodingParams
from model.sora import CompiledSteps, Sora
from service.engine import EngineConfig
from service.engine.compiling import COMPILE_SWITCH_INTERVAL_S, CompileState
from service.engine.stats import RequestStats, StepStats
from tests.model.test_compiled_model import needs_compiler
from tests.service.support import HANG_S, HeldCompile


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldCompile]:
    h = HeldCompile()
    h.install(monkeypatch)
    yield h
    h.release.set()  # a failed test must not leave the compiling thread (and its lock) held


@pytest.fixture
def fail_on_recompile() -> Iterator[None]:
    yield
    torch.compiler.set_stance("default")


@needs_compiler
async def test_swap_under_load_changes_no_output(
    make_engine: MakeEngine, held: HeldCompile, fail_on_recompile: None
) -> None:
    interval = sys.getswitchinterval()
    engine = await make_engine(compile="background")
    model = engine.runner.model
    assert engine.ready and engine.compile_state is CompileState.COMPILING
    assert not engine.compiled and model._compiled_decode is None
    requests = [mixed_request(i) for i in range(40)]
    # Long rows that are mid-decode when the swap lands.
    long = DecodingParams(max_new_tokens=60, ignore_eos=True)
    requests[:4] = [(inp, long) for inp, _ in requests[:4]]
    refs = [solo(engine, inp, p) for inp, p in requests]  # eager, before any swap
    await asyncio.to_thread(held.built.wait, HANG_S)
    assert sys.getswitchinterval() == pytest.approx(COMPILE_SWITCH_INTERVAL_S)  # compiling
    # The warm-up compiled every graph: the engine thread must not compile again.
    torch.compiler.set_stance("fail_on_recompile")

    # Hold the engine thread after the first decode step that has the long rows running,
    # until the compiled steps are handed over: the next step boundary swaps them in
    # while those rows are mid-decode (they have 60 tokens to go).
    long_ids: set[str] = set()
    in_flight: set[str] = set()

    def hold(record: RequestStats | StepStats) -> None:
        if (isinstance(record, StepStats) and record.kind == "decode" and long_ids
                and not held.release.is_set() and long_ids <= running_jobs(engine)):
            in_flight.update(running_jobs(engine))
            held.release.set()
            while engine._compile_outcome is None:  # the compiling thread's hand-over
                time.sleep(0.001)

    engine.add_listener(hold)
    first = [engine.submit(inp, p) for inp, p in requests[:20]]
    long_ids.update(j.id for j in first[:4])
    await asyncio.to_thread(engine.compile_settled.wait, HANG_S)
    assert engine.compile_state is CompileState.COMPILED and engine.compiled
    assert model._compiled_decode is not None and model._compiled_encode is not None
    # Requests after the swap run compiled, alongside the ones that straddle it.
    later = [engine.submit(inp, p) for inp, p in requests[20:]]
    done = await asyncio.gather(*(j.result() for j in first + later))
    assert long_ids <= in_flight  # the long rows ran through the swap
    assert sys.getswitchinterval() == interval
    for i, (completion, ref) in enumerate(zip(done, refs, strict=True)):
        assert_same(completion, ref, i)


async def test_failed_compile_keeps_serving_eagerly(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(model: Sora) -> CompiledSteps:
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(Sora, "compiled_steps", broken)
    # Compiling applies here whatever this machine has installed.
    monkeypatch.setattr("service.engine.engine.compile_skipped", lambda *a: None)
    caplog.set_level(logging.INFO, logger="service.engine")
    interval = sys.getswitchinterval()
    engine = await make_engine(compile="background")
    await asyncio.to_thread(engine.compile_settled.wait, HANG_S)
    assert sys.getswitchinterval() == interval
    assert engine.compile_state is CompileState.FAILED and not engine.compiled
    assert engine.runner.model._compiled_decode is None
    assert ("model tiny: compiling failed, serving eagerly: RuntimeError: no C++ compiler "
            "found") in caplog.text
    inp, params = mixed_request(0)
    assert_same(await engine.generate(inp, params), solo(engine, inp, params))


@pytest.mark.parametrize("config", [{"compile": "off"},
                                    {"compile": "background", "quantize_int8": True}])
async def test_no_compile_where_it_is_off_or_does_not_apply(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, config: dict[str, object]
) -> None:
    def never(model: Sora) -> CompiledSteps:
        raise AssertionError("compiled")

    monkeypatch.setattr(Sora, "compiled_steps", never)
    engine = await make_engine(**config)
    inp, params = mixed_request(1)
    assert_same(await engine.generate(inp, params), solo(engine, inp, params))
    assert engine.compile_state is CompileState.OFF and not engine.compile_settled.is_set()
    assert not any(t.name == "compile-tiny" for t in threading.enumerate())


def test_deprecated_compile_names_still_work() -> None:
    assert EngineConfig(compile="on").compile == "wait"
    assert EngineConfig(compile="auto").compile == "background"
    assert EngineConfig().compile == "background"
    with pytest.raises(ValueError, match="compile: expected one of background, wait, off"):
        EngineConfig(compile="yes")

