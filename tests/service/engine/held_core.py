"""`python -m tests.service.engine.held_core SPEC FD`: the engine-core process of
`service/engine/core.py` for tests that act on a request mid-generation.

The submits of one message are admitted together. Once a batch runs, the core's steps
wait for the server's next message (a submit, a cancel or a drain); after it the core
runs freely. A request the test has seen running (`CoreClient.running`, sent after each
step) is then certainly still running when the test's cancel, drain or kill arrives,
however fast the core decodes. Tests start it
by patching `popen` over `service.engine.core_client.subprocess.Popen`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from typing import Any

from service.engine import core

POPEN = subprocess.Popen


def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """`CoreClient.start`'s Popen, running this module instead of the real core."""
    assert args[:3] == [sys.executable, "-m", "service.engine.core"], args
    return POPEN([*args[:2], __spec__.name, *args[3:]], **kwargs)


class HeldCore(core.CoreEngine):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._moved = threading.Condition()
        self._receiving = False  # a message's submits are being queued
        self._free = False  # a message came after the batch started: run freely

    def step(self) -> None:
        # Under the lock: a message is handled between two steps, never during one.
        with self._moved:
            # Not while a message's submits are queued (they are admitted together), and
            # not on with a running batch until the server's next message.
            while self._receiving or (
                self._serving and self._batch is not None and not self._free
            ):
                self._moved.wait()
            super().step()

    def _submit_message(self, message: list[Any]) -> None:
        with self._moved:
            self._receiving = True
        super()._submit_message(message)

    def wake(self) -> None:
        # serve() calls this once it has handled a message's submits and cancels.
        with self._moved:
            self._receiving = False
            if self._serving and self._batch is not None:
                self._free = True
            self._moved.notify_all()
        super().wake()

    async def drain(self, timeout: float = 30.0) -> None:
        with self._moved:
            self._free = True
            self._moved.notify_all()
        await super().drain(timeout)


if __name__ == "__main__":
    core.CoreEngine = HeldCore  # type: ignore[misc]  # what run_core builds
    core.run_core(socket.socket(fileno=int(sys.argv[2])), json.loads(sys.argv[1]))
