"""Parsing Server-Sent Events in tests."""

from __future__ import annotations

import json
from typing import Any


def parse_sse(body: str) -> list[tuple[str, Any]]:
    """[(event name ("message" by default), decoded JSON data), ...]"""
    events = []
    for block in body.split("\n\n"):
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
