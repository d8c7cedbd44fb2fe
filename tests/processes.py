"""Helpers for tests that start servers: a free loopback port, and stopping a process group."""

import os
import signal
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, grace_s: float = 20, first: int = signal.SIGINT) -> None:
    """Stop a process started with start_new_session=True and everything it spawned: `first`
    (SIGINT, as Ctrl-C in a terminal sends to the group), then SIGKILL after `grace_s`."""
    for sig, wait_s in ((first, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
