"""Shared by the Open Inference Protocol tests, which run the real, independent
client (tritonclient, HTTP and gRPC) against the shared `server` fixture, and compare
with the /v1 REST API's answers for the same inputs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from support import wait_for

MODEL = "tiny"  # the test repository's one model
# Varied output from the random-weight test model; greedy, so deterministic.
OPTIONS = {"max_new_tokens": 12, "no_repeat_ngram_size": 1}
TEXTS = ["Hello world, how are you?", "The quick brown fox.", "Bonjour le monde"]


def texts_array(texts: list[str], shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
    return arr.reshape(shape) if shape is not None else arr


def decoded(arr: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]


def v1_texts(server: Any, task: str, body: dict[str, Any]) -> list[str]:
    """The /v1 API's outputs for the same inputs (the reference)."""
    r = httpx.post(f"{server.http_url}/v1/{task}", json={**body, "options": OPTIONS},
                   timeout=60)
    assert r.status_code == 200, r.text
    return [res["text"] for res in r.json()["results"]]


def v1_answers(server: Any, pairs: list[tuple[str, str]]) -> list[str]:
    return [v1_texts(server, "answer", {"question": q, "context": c})[0] for q, c in pairs]




def queued_together(server: Any, call: Callable[[], Any], n: int) -> Any:
    """Run `call` while every engine step is held, check that all `n` elements wait in
    the queue at once (submitted before any is awaited, so they batch), release."""
    results: list[Any] = []
    with server.paused("step") as gate:
        worker = threading.Thread(target=lambda: results.append(call()))
        worker.start()
        wait_for(lambda: server.waiting() == n, f"{n} queued elements")
        gate.set()
        worker.join(60)
    assert len(results) == 1
    return results[0]
