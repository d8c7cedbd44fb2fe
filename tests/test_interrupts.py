"""The stop handler in-process: the first SIGINT or SIGTERM raises KeyboardInterrupt, repeats
within the window are ignored with one line each, one after the window stops again, and the
previous handlers come back after the block."""

import os
import signal

import pytest

from seqbench.harness import interrupts
from seqbench.harness.interrupts import interrupt_once


def _signal_self(sig: signal.Signals) -> None:
    """Signal this process; Python runs the handler before os.kill returns."""
    os.kill(os.getpid(), sig)


def test_repeats_inside_the_window_are_ignored_and_the_ending_completes(capsys):
    recorded = False
    with pytest.raises(KeyboardInterrupt):
        with interrupt_once():
            try:
                _signal_self(signal.SIGINT)
                raise AssertionError("the first signal did not interrupt")
            finally:  # the run recording how it ended, stopped twice more meanwhile
                _signal_self(signal.SIGTERM)
                _signal_self(signal.SIGINT)
                recorded = True
    assert recorded
    assert capsys.readouterr().err.count("again: still recording how the run ended") == 2


def test_a_repeat_after_the_window_interrupts_again(monkeypatch):
    monkeypatch.setattr(interrupts, "REPEAT_WINDOW_S", 0.0)
    with interrupt_once():
        for sig in (signal.SIGTERM, signal.SIGINT):
            with pytest.raises(KeyboardInterrupt):
                _signal_self(sig)


def test_the_previous_handlers_return_after_the_block():
    before = {sig: signal.getsignal(sig) for sig in interrupts.SIGNALS}
    with interrupt_once():
        assert all(signal.getsignal(sig) is not before[sig] for sig in interrupts.SIGNALS)
    assert {sig: signal.getsignal(sig) for sig in interrupts.SIGNALS} == before
