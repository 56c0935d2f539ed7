"""Which waiting sequences join the running batch at the next step.

Priority first, then arrival order. Admission is strict at the head of the queue: a
sequence that does not fit blocks those behind it, so a big request is never starved
by a stream of small ones. Limits: rows in the batch and worst-case tokens (source +
max new tokens) over all rows, so long inputs cannot exhaust memory.
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
        """Sequences that fit beside the running batch, in queue order."""
        rows_left = self.config.max_batch_sequences - running_rows
        tokens_left = self.config.max_batch_tokens - running_tokens
        out: list[Sequence] = []
        with self._lock:
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

    def drain_all(self) -> list[Sequence]:
        with self._lock:
            seqs = [e[3] for e in self._heap]
            self._heap = []
            return seqs
