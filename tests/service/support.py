"""Helpers shared by the service tests: Server-Sent Events parsing and polling."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
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
