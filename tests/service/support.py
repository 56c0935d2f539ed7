"""Helpers shared by the service tests: Server-Sent Events parsing, polling, a full
queue, and a background compile held until the test lets it land."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from model.sora import CompiledSteps, Sora


def parse_sse(body: str) -> list[tuple[str, Any]]:
    """[(event name ("message" by default), decoded JSON data), ...]"""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[len("event:"):].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:"):].strip())
        events.append((name, json.loads("\n".join(data))))
    return events


def wait_for(cond: Callable[[], Any], what: str, limit_s: float = 30.0) -> None:
    """Poll `cond` (a safety limit only; no assertion on time)."""
    end = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@contextlib.contextmanager
def queue_full(srv: Any, call: Callable[[], None]) -> Iterator[None]:
    """On a server started with max_batch_sequences=1 and max_waiting=1: runs `call` on
    two threads so one request runs and one waits, holds the engine while the block
    runs (any further request is refused), then lets both finish."""
    with srv.paused() as gate:
        first = threading.Thread(target=call)
        first.start()
        wait_for(lambda: srv.running() == 1, "the first request running")
        second = threading.Thread(target=call)
        second.start()
        wait_for(lambda: srv.accepted() == 2, "the second request waiting")
        yield
        gate.set()
        first.join()
        second.join()


HANG_S = 900.0  # only bounds a hang (a cold compile on 2 busy cores): no threshold


class HeldCompile:
    """Sora.compiled_steps, run for real, whose result is handed to the engine only once
    `release` is set: the test decides where in its load the swap lands."""

    def __init__(self) -> None:
        self.built = threading.Event()
        self.release = threading.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = Sora.compiled_steps

        def held(model: Sora) -> CompiledSteps:
            steps = real(model)
            self.built.set()
            self.release.wait(HANG_S)
            return steps

        monkeypatch.setattr(Sora, "compiled_steps", held)
