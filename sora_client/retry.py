"""Retries with backoff on overload (429 / RESOURCE_EXHAUSTED) and unavailability
(503 / UNAVAILABLE), honouring the server's Retry-After, within the call's deadline."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sora_client.errors import DeadlineExceeded, Overloaded, SoraError, Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all (1: no retries). The wait before retry n (0-based) is the
    server's Retry-After when it sent one, else a random delay up to
    `backoff_s * 2**n` capped at `max_backoff_s` ("full jitter", so clients that were
    refused together do not come back together). A wait that would outlast the call's
    deadline is not taken: the error is raised at once."""

    attempts: int = 4
    backoff_s: float = 0.25
    max_backoff_s: float = 8.0
    retry_on: tuple[type[SoraError], ...] = (Overloaded, Unavailable)
    # Called before each wait with (retry number from 1, the error, seconds to wait).
    on_retry: Callable[[int, SoraError, float], None] | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")

    def delay(self, attempt: int, error: SoraError, deadline: Deadline) -> float | None:
        """Seconds to wait before trying again after `attempt` failed, or None to give up."""
        if not isinstance(error, self.retry_on) or attempt + 1 >= self.attempts:
            return None
        if error.retry_after is not None:
            wait = error.retry_after
        else:
            wait = random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt))
        remaining = deadline.remaining()
        if remaining is not None and wait >= remaining:
            return None
        log.info("retrying in %.2f s after %s", wait, error)
        if self.on_retry is not None:
            self.on_retry(attempt + 1, error, wait)
        return wait


NO_RETRIES = RetryPolicy(attempts=1)


class Deadline:
    """The end of a call, over all its attempts; None: no deadline."""

    def __init__(self, seconds: float | None) -> None:
        if seconds is not None and seconds <= 0:
            raise ValueError("timeout must be a positive number of seconds")
        self._end = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self._end is None else self._end - time.monotonic()

    def left(self) -> float | None:
        """Seconds left for the next attempt; DeadlineExceeded when none are."""
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceeded("the call's deadline passed in the client")
        return remaining


def with_retries(
    attempt: Callable[[float | None], T], policy: RetryPolicy, deadline: Deadline
) -> T:
    """`attempt(seconds_left)` until it succeeds or `policy` gives up."""
    n = 0
    while True:
        try:
            return attempt(deadline.left())
        except SoraError as e:
            wait = policy.delay(n, e, deadline)
            if wait is None:
                raise
        time.sleep(wait)
        n += 1


async def with_retries_async(
    attempt: Callable[[float | None], Awaitable[T]], policy: RetryPolicy, deadline: Deadline
) -> T:
    """with_retries for coroutines."""
    n = 0
    while True:
        try:
            return await attempt(deadline.left())
        except SoraError as e:
            wait = policy.delay(n, e, deadline)
            if wait is None:
                raise
        await asyncio.sleep(wait)
        n += 1
