"""Helpers shared by the service tests: Server-Sent Events parsing, polling, a full queue,
a gate that holds an engine where the test wants it, and a background compile held
until the test lets it land."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from model.sora import CompiledSteps, Sora

# service/main.py's start-up line, text or JSON format alike.
ANNOUNCED = re.compile(r"HTTP on \S+:(\d+), gRPC on (\d+|\(off\))")


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


def wait_for(cond: Callable[[], Any], what: str, limit_s: float = 60.0) -> None:
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


def announced_ports(
    log: Path, proc: subprocess.Popen[bytes], limit_s: float = 120.0
) -> tuple[int, int | None]:
    """(HTTP, gRPC or None) ports of a `sora serve` started with port 0, from its log.
    A server that binds its own ports cannot lose them, between a test's pick and its
    bind, to another process of a machine shared with other test runs."""
    found: re.Match[str] | None = None

    def announced() -> bool:
        nonlocal found
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:]
            raise AssertionError(f"sora serve exited with {proc.returncode}:\n{tail}")
        found = ANNOUNCED.search(log.read_text(errors="replace"))
        return found is not None

    wait_for(announced, "sora serve to announce its ports", limit_s)
    assert found is not None
    return int(found[1]), None if found[2] == "(off)" else int(found[2])


async def wait_until(cond: Callable[[], Any], what: str = "the condition",
                     limit_s: float = 60.0) -> None:
    """`wait_for` on the event loop."""
    end = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


class Gate:
    """Holds the calls of `target.method` that the engine thread makes while
    `rule(*args)` is true, so the test acts on requests exactly where they stopped
    instead of racing the engine: `with Gate(engine.runner, "step"):` keeps admitted
    requests RUNNING and unfinished until the block ends. `hold(rule)` changes the rule
    (a held call then re-checks it); leaving the block releases every call."""

    def __init__(self, target: object, method: str,
                 rule: Callable[..., bool] = lambda *args: True) -> None:
        self.target, self.method = target, method
        self.rule = rule
        self.held = 0  # calls waiting right now
        self.passed = 0  # calls let through so far
        self._changed = threading.Condition()
        self._own = method in vars(target)  # an instance attribute to put back
        original = getattr(target, method)

        def call(*args: Any) -> Any:
            with self._changed:
                while self.rule(*args):
                    self.held += 1
                    self._changed.wait()
                    self.held -= 1
                self.passed += 1
            return original(*args)

        self._original = original
        setattr(target, method, call)

    def hold(self, rule: Callable[..., bool]) -> None:
        with self._changed:
            self.rule = rule
            self._changed.notify_all()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.hold(lambda *args: False)
        if self._own:
            setattr(self.target, self.method, self._original)
        else:
            delattr(self.target, self.method)  # the class's method again


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
