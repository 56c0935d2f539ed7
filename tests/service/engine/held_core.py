"""`python -m tests.service.engine.held_core SPEC FD`: the engine-core process of
`service/engine/core.py` for tests that act on a request mid-generation.

Once a batch runs, the core's steps wait for the server's next message (a submit, a
cancel or a drain); after it the core runs freely. A request the test has seen running
(`CoreClient.running`, sent after each step) is then certainly still running when the
test's cancel, drain or kill arrives, however fast the core decodes. Tests start it
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
        self._holding = False
        self._free = False

    def step(self) -> None:
        if self._serving and self._batch is not None:
            with self._moved:
                self._holding = True
                while not self._free:
                    self._moved.wait()
        super().step()

    def _move_on(self, always: bool) -> None:
        with self._moved:
            if always or self._holding:
                self._free = True
                self._moved.notify_all()

    def wake(self) -> None:
        # serve() calls this once it has handled a message's submits and cancels.
        self._move_on(always=False)
        super().wake()

    async def drain(self, timeout: float = 30.0) -> None:
        self._move_on(always=True)
        await super().drain(timeout)


if __name__ == "__main__":
    core.CoreEngine = HeldCore  # type: ignore[misc]  # what run_core builds
    core.run_core(socket.socket(fileno=int(sys.argv[2])), json.loads(sys.argv[1]))
