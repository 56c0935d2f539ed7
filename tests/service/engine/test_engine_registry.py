"""Hot reload: a corrupted checkpoint is refused and the old version keeps serving; a
good one takes new requests while the old engine finishes what it accepted."""

from __future__ import annotations

import asyncio
import gc
import shutil
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import torch
from conftest import TEXTS, assert_same, running_jobs, solo
from support import Gate, wait_until

from model.checkpoint import CheckpointError, save_checkpoint
from model.sampling import DecodingParams
from model.sora import Sora
from model.tokenizer import SoraTokenizer
from service import heap
from service.engine import EngineConfig, EngineState, ModelNotFound, TaskInput
from service.engine.registry import ModelRegistry

INP = TaskInput("translate", TEXTS[1], target_lang="es")
SHORT = DecodingParams(max_new_tokens=10)


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
async def registry(tmp_path: Path, tiny_checkpoint: Path) -> AsyncIterator[ModelRegistry]:
    shutil.copytree(tiny_checkpoint, tmp_path / "repo" / "tiny" / "1")
    reg = ModelRegistry(tmp_path / "repo", EngineConfig(device="cpu", compile="off"),
                        drain_timeout=30.0)
    await reg.load_all()
    yield reg
    await reg.drain(timeout=10.0)


async def test_corrupted_reload_keeps_the_old_model(
    registry: ModelRegistry, tmp_path: Path, tiny_checkpoint: Path
) -> None:
    old = registry.get("tiny")
    assert old.ready and old.version == "1"
    bad = tmp_path / "repo" / "tiny" / "2"
    shutil.copytree(tiny_checkpoint, bad)
    flip_byte(bad / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        await registry.reload("tiny")
    assert "model.safetensors" in str(err.value)
    assert registry.get("tiny") is old and old.state is EngineState.READY
    assert registry.ready
    assert_same(await old.generate(INP, SHORT), solo(old, INP, SHORT))
    assert await registry.scan() == []  # a periodic scan logs the bad version, keeps v1
    assert registry.get("tiny") is old


async def test_good_reload_switches_while_old_requests_finish(
    registry: ModelRegistry,
    tmp_path: Path,
    tiny_model: Sora,
    tiny_tokenizer: SoraTokenizer,
) -> None:
    old = registry.get()
    long = DecodingParams(max_new_tokens=40, ignore_eos=True)
    # The old engine's decode steps wait until the block ends: its requests are surely
    # in flight during the swap and while the new version serves.
    with Gate(old.runner, "step"):
        in_flight = [old.submit(TaskInput("summarize", t), long) for t in TEXTS[:3]]
        await wait_until(lambda: bool(running_jobs(old)))

        torch.manual_seed(99)
        other = Sora(tiny_model.config).eval()
        save_checkpoint(tmp_path / "v2", other, tiny_tokenizer, info={"name": "tiny"})
        new = await registry.reload("tiny", path=tmp_path / "v2", version="2")

        assert registry.get() is new and new.version == "2" and new.ready
        assert registry.get("tiny", "2") is new
        with pytest.raises(ModelNotFound) as err:
            registry.get("tiny", "1")
        assert err.value.field == "version"
        fresh = await new.generate(INP, SHORT)
        assert fresh.version == "2"
        assert_same(fresh, solo(new, INP, SHORT))
        assert not any(j.outcome().done() for j in in_flight)
    results = await asyncio.gather(*(j.result() for j in in_flight))
    assert [r.completion_tokens for r in results] == [40, 40, 40]
    assert {r.version for r in results} == {"1"}
    await wait_until(lambda: old.state is EngineState.STOPPED)


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    heap.freeze()
    yield
    gc.unfreeze()


async def test_a_replaced_engine_is_freed_though_the_heap_was_frozen(
    registry: ModelRegistry, tmp_path: Path, tiny_checkpoint: Path, frozen_heap: None
) -> None:
    """`sora serve` freezes its start-up heap; an engine replaced by a reload must still
    be collected once drained, cycles and all, or every reload would leak a model."""
    old = weakref.ref(registry.get("tiny"))
    shutil.copytree(tiny_checkpoint, tmp_path / "repo" / "tiny" / "2")
    await registry.reload("tiny")
    await wait_until(lambda: not registry._draining)
    assert old() is None
    assert gc.get_freeze_count() > 0  # frozen again for what is still in use


def test_frozen_cycles_wait_for_refreeze(frozen_heap: None) -> None:
    class Node:
        ref: object = None

    node = Node()
    node.ref = node  # a cycle: refcounting alone never frees it
    gc.collect()
    gc.freeze()  # as if it had been alive at start-up
    alive = weakref.ref(node)
    del node
    gc.collect()
    assert alive() is not None
    heap.refreeze()
    assert alive() is None
