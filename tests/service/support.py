"""Helpers shared by the service tests: Server-Sent Events parsing, polling, and
holding a test server's decode steps."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


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
def stepwise(running: Any, limit_s: float = 60.0) -> Iterator[tuple[threading.Semaphore,
                                                                    threading.Event]]:
    """Hold a running test server's decode steps: each waits for one release of the
    yielded semaphore (or for the event, which frees them all), so a test can look at a
    request part-way through."""
    steps, free = threading.Semaphore(0), threading.Event()
    engines = running.registry.engines()
    for engine in engines:
        def step(*args: Any, _original: Callable[..., Any] = engine.runner.step) -> Any:
            if not free.is_set():
                steps.acquire(timeout=limit_s)
            return _original(*args)

        engine.runner.step = step
    try:
        yield steps, free
    finally:
        free.set()
        steps.release(10_000)
        for engine in engines:
            del engine.runner.step  # the class's method again
