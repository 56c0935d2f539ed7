"""Which waiting sequences join the running batch at the next step.

Priority first, then arrival order. Admission is strict at the head of the queue: a
sequence that does not fit blocks those behind it, so a big request is never starved
by a stream of small ones. Limits: rows in the batch and worst-case tokens (source +
max new tokens) over all rows, so long inputs cannot exhaust memory. While a batch runs,
newcomers are admitted in groups rather than one prefill each (`_worth_prefill`).
"""

from __future__ import annotations

import heapq
import math
import threading
from collections.abc import Callable

from service.engine.config import EngineConfig
from service.engine.errors import Overloaded
from service.engine.request import Sequence


def retry_after(waiting: int, avg_seq_seconds: float, config: EngineConfig) -> float:
    """Seconds an overloaded caller should wait: the queue's batches at the mean time a
    sequence spends in the engine (at least one second)."""
    backlog = waiting / config.max_batch_sequences
    return max(1.0, math.ceil(avg_seq_seconds * max(backlog, 1.0)))


class Scheduler:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._heap: list[tuple[int, int, int, Sequence]] = []
        # Mean seconds a sequence spends in the engine; feeds the retry-after hint.
        self.avg_seq_seconds = 1.0
        self._held = 0  # steps the queue has been held back from a running batch

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, seqs: list[Sequence]) -> None:
        """Queue a job's sequences, or reject the whole job when the queue is full."""
        with self._lock:
            if len(self._heap) + len(seqs) > self.config.max_waiting:
                raise Overloaded(
                    f"server overloaded: {len(self._heap)} sequences waiting "
                    f"(limit {self.config.max_waiting})",
                    retry_after=retry_after(len(self._heap), self.avg_seq_seconds, self.config),
                )
            for s in seqs:
                heapq.heappush(self._heap, (-s.job.priority, s.job.order, s.index, s))

    def requeue(self, seqs: list[Sequence]) -> None:
        """Put admitted sequences back (their place in line is kept by their keys)."""
        with self._lock:
            for s in seqs:
                heapq.heappush(self._heap, (-s.job.priority, s.job.order, s.index, s))

    def remove_where(self, ended: Callable[[Sequence], bool]) -> list[Sequence]:
        """Take out the waiting sequences for which `ended` is true (cancelled jobs,
        failed jobs, passed deadlines); the engine ends them."""
        with self._lock:
            gone = [e[3] for e in self._heap if ended(e[3])]
            if gone:
                self._heap = [e for e in self._heap if not ended(e[3])]
                heapq.heapify(self._heap)
            return gone

    def admit(
        self, running_rows: int, running_tokens: int, max_seqs: int | None = None
    ) -> list[Sequence]:
        """Sequences that fit beside the running batch, in queue order (none while it
        pays to let more gather: see `_worth_prefill`). Called once per engine step."""
        rows_left = self.config.max_batch_sequences - running_rows
        tokens_left = self.config.max_batch_tokens - running_tokens
        out: list[Sequence] = []
        with self._lock:
            if not self._heap:
                self._held = 0
                return out
            if running_rows and not self._worth_prefill(running_rows, rows_left):
                self._held += 1
                return out
            self._held = 0
            while self._heap:
                seq = self._heap[0][3]
                if seq.rows > rows_left or seq.reserved_tokens > tokens_left:
                    break
                if max_seqs is not None and len(out) >= max_seqs:
                    break
                heapq.heappop(self._heap)
                rows_left -= seq.rows
                tokens_left -= seq.reserved_tokens
                out.append(seq)
        return out

    def _worth_prefill(self, running_rows: int, rows_left: int) -> bool:
        """A prefill holds up every running row for its step, and its cost per row
        falls steeply with the rows prefilled together (on a CPU, one row alone costs
        ~3x its share of a 64-row prefill). So while a batch runs, waiting requests
        join it together: once they can fill the free rows, once they are a fair share
        of the running rows (TGI's waiting_served_ratio), or once they have waited
        `max_waiting_steps` steps (TGI's max_waiting_tokens)."""
        waiting = len(self._heap)
        return (
            waiting >= rows_left
            or waiting >= self.config.waiting_served_ratio * running_rows
            or self._held >= self.config.max_waiting_steps
        )

    def drain_all(self) -> list[Sequence]:
        with self._lock:
            seqs = [e[3] for e in self._heap]
            self._heap = []
            return seqs
