"""Compiling a served model in the background: the engine serves it eagerly meanwhile.

A thread of its own compiles and warms up the model's steps (`Sora.compiled_steps`) and
hands the result to the engine, whose thread installs it between two steps. The thread
is kept from starving serving: inductor builds one kernel at a time (compile_threads=1,
no pool of compiler processes), the kernels it writes still use the engine's thread
count, and the thread and the C++ compilers it starts run at a lower CPU priority.
Both threads need the GIL (tracing and lowering are Python): each time the engine
thread's torch op returns it waits for the compiling thread to let go of it, up to
Python's switch interval per op, so the interval is shortened while compiling.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator

import torch

from model.sora import CompiledSteps, Sora

log = logging.getLogger(__name__)

# How much the compiling thread (and every compiler it starts) yields the CPU: a nice
# value added to the server's.
COMPILE_NICENESS = 10
# Python's switch interval while a compile runs (default 5 ms): how long the engine
# thread may wait for the GIL after each torch op.
COMPILE_SWITCH_INTERVAL_S = 0.0002
# Models compile one after another: one compiling thread's worth of CPU at a time, and
# the process-wide settings below are never changed by two threads at once.
_one_at_a_time = threading.Lock()


class CompileState(enum.Enum):
    OFF = "off"  # eager by the compile setting, or where compiling does not apply
    COMPILING = "compiling"  # serving eagerly; the compiled steps are being built
    COMPILED = "compiled"  # the compiled steps are in use
    FAILED = "failed"  # compiling failed; serving eagerly


Outcome = CompiledSteps | Exception


def start_background_compile(model: Sora, name: str, done: Callable[[Outcome], None]) -> None:
    """Compile `model`'s steps on a new daemon thread; `done` gets the steps or the
    exception (on that thread)."""
    threads = torch.get_num_threads()  # the engine's, for the kernels' parallel loops

    def run() -> None:
        from torch._inductor import config as inductor

        _lower_priority()
        start = time.perf_counter()
        try:
            with _one_at_a_time, _switch_interval(COMPILE_SWITCH_INTERVAL_S), inductor.patch(
                {"compile_threads": 1, "cpp.threads": threads}
            ):
                steps = model.compiled_steps()
        except Exception as e:
            done(e)
            return
        log.info("model %s: encoder and decode steps compiled in the background in %.1f s",
                 name, time.perf_counter() - start)
        done(steps)

    threading.Thread(target=run, name=f"compile-{name}", daemon=True).start()


@contextlib.contextmanager
def _switch_interval(seconds: float) -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _lower_priority() -> None:
    """Lower this thread's CPU priority (Linux: the nice value is per thread, and the
    processes it starts inherit it)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid)
                       + COMPILE_NICENESS)
    except (AttributeError, OSError) as e:  # not Linux, or not allowed: compile anyway
        log.debug("cannot lower the compiling thread's priority: %s", e)


def describe(error: Exception) -> str:
    """`Type: first line of the message`, for one log line."""
    text = str(error)
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
