"""Stopping a run or sweep so that it records how it ended.

SIGTERM (a scheduler's time limit, torchrun stopping its ranks) is handled like the
KeyboardInterrupt a terminal's Ctrl-C raises, so runs and sweeps record `interrupted`. A stop
often comes twice: GNU `timeout` signals its command and then the command's process group, which
holds the command again; a terminal's Ctrl-C reaches a sweep and its children; people press it
twice. A second KeyboardInterrupt raised while the first is being handled would abort the
recording (the checkpoint, the run's status), so a repeat within REPEAT_WINDOW_S of the first is
ignored with a line on stderr; one after that interrupts again (a stuck ending can still be stopped).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

REPEAT_WINDOW_S = 10.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _InterruptOnce:
    """The handler: KeyboardInterrupt on the first signal, nothing on repeats inside the window."""

    def __init__(self) -> None:
        self.first: float | None = None

    def __call__(self, signum, frame) -> None:
        now = time.monotonic()
        if self.first is not None and now - self.first < REPEAT_WINDOW_S:
            sys.stderr.write(f"{signal.Signals(signum).name} again: still recording how the run ended "
                             f"(SIGKILL stops at once)\n")
            return
        self.first = now
        raise KeyboardInterrupt


@contextmanager
def interrupt_once() -> Iterator[None]:
    """Within the block SIGINT and SIGTERM raise KeyboardInterrupt and repeats within REPEAT_WINDOW_S
    of the first are ignored (a SIGINT ignored before stays ignored); the previous handlers return
    after it. Off the main thread (where Python allows no handler) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _InterruptOnce()
    # a SIGINT ignored from the start (a shell's background job) stays ignored
    chosen = [sig for sig in SIGNALS if not (sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN)]
    previous = {sig: signal.signal(sig, handler) for sig in chosen}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
