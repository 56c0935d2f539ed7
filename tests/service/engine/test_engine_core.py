"""The engine-core process (`CoreClient` + `service/engine/core.py`) against the
in-process engine: same outputs, same errors, cancellation, deadlines, stats, drain,
a bad checkpoint and a core that dies, over a real child process."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from model.sampling import DecodingParams
from service.engine import (
    Cancelled,
    DeadlineExceeded,
    Engine,
    EngineConfig,
    EngineState,
    ExecutionError,
    InvalidRequest,
    Overloaded,
    TaskInput,
    Unavailable,
    core_client,
)
from service.engine.compiling import CompileState
from service.engine.core_client import CoreClient, CoreOptions
from service.engine.registry import ModelRegistry
from tests.model.test_compiled_model import needs_compiler
from tests.service.engine import held_core
from tests.service.engine.conftest import TEXTS, Recorder
from tests.service.support import wait_until

MakeCore = Callable[..., Awaitable[CoreClient]]
LONG = DecodingParams(max_new_tokens=120, ignore_eos=True)


@pytest.fixture
async def make_core(
    service_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[MakeCore]:
    """CoreClients over the service tests' tiny checkpoint (room for long outputs).
    held=True: the core is `held_core.py`, whose running batch waits for the test's
    next message, so a request seen running is still running when the test acts."""
    clients: list[CoreClient] = []

    async def make(path: Path = service_checkpoint / "tiny", *, held: bool = False,
                   **config: Any) -> CoreClient:
        cfg = EngineConfig(**{"warmup": False, "device": "cpu", "compile": "off", **config})
        client = CoreClient(path, cfg, name="tiny", version="1")
        clients.append(client)
        with monkeypatch.context() as patch:
            if held:
                patch.setattr(core_client.subprocess, "Popen", held_core.popen)
            await client.start()
        return client

    yield make
    for client in clients:
        await client.drain(timeout=10.0)


@pytest.mark.parametrize("compile", ["off", pytest.param("background", marks=needs_compiler)])
async def test_outputs_equal_the_in_process_engine(
    make_core: MakeCore, engine: Engine, tiny_checkpoint: Path, compile: str
) -> None:
    # compile=background: the serving default, through the core process: it tells the
    # client when the swap landed; then the compiled core answers as the eager
    # in-process engine.
    core = await make_core(tiny_checkpoint, compile=compile)
    if compile == "background":
        await asyncio.wait_for(core.compile_settled.wait(), 900)  # bounds a hang only
        assert core.compile_state is CompileState.COMPILED and core.compiled
    else:
        assert core.compile_state is CompileState.OFF
    inputs = [TaskInput("translate", t, target_lang="de") for t in TEXTS]
    inputs.append(TaskInput("answer", "What is it?", context="It is a small tool."))
    inputs.append(TaskInput("summarize", " ".join(TEXTS) * 12))  # several segments
    beam = DecodingParams(strategy="beam", beam_size=3, max_new_tokens=12)
    sample = DecodingParams(strategy="sample", seed=7, top_k=20, max_new_tokens=12)
    cases = [(inp, DecodingParams(max_new_tokens=24)) for inp in inputs]
    cases += [(inputs[0], beam), (inputs[1], sample)]
    ours = await asyncio.gather(*(core.generate(i, p) for i, p in cases))
    theirs = await asyncio.gather(*(engine.generate(i, p) for i, p in cases))
    for a, b in zip(ours, theirs, strict=True):
        assert (a.text, a.finish_reason, a.completion_tokens, a.segments) == (
            b.text, b.finish_reason, b.completion_tokens, b.segments)
        assert a.prompt_tokens == b.prompt_tokens
        assert a.logprob == pytest.approx(b.logprob, rel=1e-4, abs=1e-4)
    assert ours[-3].segments > 1


async def test_stream_deltas_join_to_the_completion(make_core: MakeCore) -> None:
    core = await make_core()
    job = core.submit(TaskInput("summarize", " ".join(TEXTS) * 12), DecodingParams(
        max_new_tokens=16), stream=True)
    pieces = [d.text async for d in job.deltas()]
    done = await job.result()
    assert len(pieces) > 2 and "".join(pieces) == done.text


async def test_bad_input_fails_at_submit_naming_the_field(make_core: MakeCore) -> None:
    core = await make_core(max_new_tokens=64, default_max_new_tokens=32)
    with pytest.raises(InvalidRequest) as e:
        core.submit(TaskInput("translate", "Hi", target_lang="xx"))
    assert e.value.field == "target_lang"
    with pytest.raises(InvalidRequest) as e:
        core.submit(TaskInput("translate", "Hi", target_lang="de"),
                    DecodingParams(max_new_tokens=65))
    assert e.value.field == "max_new_tokens"
    with pytest.raises(InvalidRequest) as e:
        core.submit(TaskInput("answer", "  "))
    assert e.value.field == "question"


async def test_cancel_frees_the_rows_in_the_core(make_core: MakeCore) -> None:
    core = await make_core(held=True)
    other = core.submit(TaskInput("translate", TEXTS[1], target_lang="fr"), LONG)
    job = core.submit(TaskInput("translate", TEXTS[0], target_lang="de"), LONG)
    await wait_until(lambda: core.running == 2)
    job.cancel()
    with pytest.raises(Cancelled):
        await job.result()
    await wait_until(lambda: core.running == 1)  # the core dropped the cancelled row
    assert (await other.result()).completion_tokens == 120


async def test_deadline_is_enforced_by_the_core(make_core: MakeCore) -> None:
    core = await make_core(held=True)
    job = core.submit(TaskInput("translate", TEXTS[0], target_lang="de"), LONG, timeout=0.05)
    await wait_until(lambda: core.running == 1)  # held mid-generation
    assert job.deadline is not None
    await wait_until(lambda: time.monotonic() > job.deadline)  # type: ignore[operator]
    # The next message moves the core on: its next step finds the deadline past.
    other = core.submit(TaskInput("translate", TEXTS[1], target_lang="de"),
                        DecodingParams(max_new_tokens=4, ignore_eos=True))
    with pytest.raises(DeadlineExceeded):
        await job.result()
    assert (await other.result()).completion_tokens == 4


async def test_stats_reach_the_servers_listeners(make_core: MakeCore) -> None:
    core = await make_core()
    recorder = Recorder()
    core.add_listener(recorder)
    await asyncio.gather(*(core.generate(TaskInput("translate", t, target_lang="de"),
                                         DecodingParams(max_new_tokens=8), protocol="grpc")
                           for t in TEXTS[:4]))
    await wait_until(lambda: len(recorder.requests()) == 4)
    request = recorder.requests()[0]
    assert (request.model, request.task, request.protocol) == ("tiny", "translate", "grpc")
    assert request.generated_tokens == 8 and request.ttft_s is not None
    assert max(s.batch_size for s in recorder.steps("decode")) == 4


async def test_queue_limit_rejects_at_submit(make_core: MakeCore) -> None:
    core = await make_core(max_waiting=2, max_batch_sequences=1, held=True)
    first = core.submit(TaskInput("translate", TEXTS[0], target_lang="de"), LONG)
    await wait_until(lambda: core.running == 1)
    queued = [core.submit(TaskInput("translate", t, target_lang="de"), LONG)
              for t in TEXTS[1:3]]
    with pytest.raises(Overloaded) as e:
        core.submit(TaskInput("translate", TEXTS[3], target_lang="de"), LONG)
    assert e.value.retry_after >= 1
    for job in (first, *queued):
        job.cancel()


async def test_a_corrupted_checkpoint_fails_start_with_the_file_named(
    make_core: MakeCore, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    bad = shutil.copytree(tiny_checkpoint, tmp_path / "bad")
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ExecutionError, match=r"model\.safetensors.*sha256 mismatch"):
        await make_core(bad)


async def test_drain_finishes_accepted_work_then_the_core_exits(make_core: MakeCore) -> None:
    core = await make_core(held=True)
    jobs = [core.submit(TaskInput("translate", t, target_lang="de"), LONG) for t in TEXTS[:3]]
    await wait_until(lambda: core.running == 3)
    await core.drain(timeout=60)
    assert [(await j.result()).completion_tokens for j in jobs] == [120] * 3
    assert core.state is EngineState.STOPPED
    assert core._process is not None and core._process.returncode == 0
    with pytest.raises(Unavailable):
        core.submit(TaskInput("translate", "Hi", target_lang="de"))


async def test_drain_timeout_fails_leftovers_as_unavailable(make_core: MakeCore) -> None:
    core = await make_core(held=True)
    job = core.submit(TaskInput("translate", TEXTS[0], target_lang="de"),
                      DecodingParams(max_new_tokens=250, ignore_eos=True))
    await wait_until(lambda: core.running == 1)
    await core.drain(timeout=0)
    with pytest.raises(Unavailable):
        await job.result()


async def test_a_dead_core_fails_its_requests_and_stops_the_engine(make_core: MakeCore) -> None:
    core = await make_core(held=True)
    job = core.submit(TaskInput("translate", TEXTS[0], target_lang="de"),
                      DecodingParams(max_new_tokens=250, ignore_eos=True))
    await wait_until(lambda: core.running == 1)
    assert core._process is not None
    os.kill(core._process.pid, signal.SIGKILL)
    with pytest.raises(ExecutionError, match="engine process exited"):
        await job.result()
    assert core.state is EngineState.STOPPED and not core.ready
    with pytest.raises(Unavailable):
        core.submit(TaskInput("translate", "Hi", target_lang="de"))


async def test_registry_reload_swaps_core_processes(
    service_checkpoint: Path, tmp_path: Path
) -> None:
    tiny = service_checkpoint / "tiny"
    root = tmp_path / "repo"
    shutil.copytree(tiny, root / "tiny" / "1")
    registry = ModelRegistry(root, EngineConfig(warmup=False, device="cpu", compile="off"),
                             core=CoreOptions())
    await registry.load_all()
    old = registry.get("tiny")
    assert isinstance(old, CoreClient)
    busy = old.submit(TaskInput("translate", TEXTS[0], target_lang="de"), LONG)
    shutil.copytree(tiny, root / "tiny" / "2")
    assert await registry.scan() == ["tiny"]
    new = registry.get("tiny")
    assert new is not old and new.version == "2" and new.ready
    assert (await busy.result()).completion_tokens == 120  # the old core drained its work
    done = await new.generate(TaskInput("translate", "Hi", target_lang="de"))
    assert done.version == "2"
    await registry.drain(10)
    assert isinstance(new, CoreClient) and new._process is not None
    assert new._process.returncode == 0
