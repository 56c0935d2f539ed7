"""Plain records the engine emits; `service/metrics.py` turns them into Prometheus series."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestStats:
    """One finished job (all its segments), successful or not."""

    model: str
    task: str
    protocol: str
    outcome: str  # finish reason ("eos", "length") or an EngineError code
    queue_s: float  # arrival -> first scheduled
    ttft_s: float | None  # arrival -> first generated token
    tpot_s: float | None  # mean time per output token after the first
    e2e_s: float  # arrival -> finished
    prompt_tokens: int
    generated_tokens: int


@dataclass(frozen=True)
class StepStats:
    model: str
    kind: str  # "prefill" | "decode"
    duration_s: float
    batch_size: int  # rows in the step
    tokens: int  # source tokens encoded (prefill) or tokens generated (decode)
    running: int  # sequences in the batch after the step
    waiting: int  # sequences queued after the step


@dataclass(frozen=True)
class EngineRestart:
    """A model's engine-core process died and a new one took over."""

    model: str


Listener = Callable[[RequestStats | StepStats], None]  # what an engine emits
Record = RequestStats | StepStats | EngineRestart
RecordListener = Callable[[Record], None]  # what a registry emits (its engines' too)


R = TypeVar("R", RequestStats | StepStats, Record)


def notify(listeners: Sequence[Callable[[R], None]], record: R) -> None:
    """Give `record` to every listener; one that fails is logged, not the caller's problem."""
    for listener in listeners:
        try:
            listener(record)
        except Exception:
            log.exception("stats listener failed")
