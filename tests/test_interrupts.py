"""Ctrl-C and SIGTERM during a run: held while results are replayed, raised after."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from pytest_orchestrator.interrupts import Interrupts


@pytest.fixture
def interrupts() -> Iterator[Interrupts]:
    handlers = Interrupts()
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    handlers.install()
    yield handlers
    handlers.restore()
    assert {s: signal.getsignal(s) for s in before} == before


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)  # handled before the next line runs


def test_a_signal_outside_a_held_section_interrupts_at_once(interrupts: Interrupts) -> None:
    with pytest.raises(KeyboardInterrupt) as info:
        _send(signal.SIGTERM)
        pytest.fail("not interrupted")
    assert str(info.value) == f"received signal {int(signal.SIGTERM)}"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_a_held_section_waits_for_its_end(
    interrupts: Interrupts, signum: signal.Signals
) -> None:
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt), interrupts.held():
        _send(signum)
        done.append("the batch went on")
        with interrupts.held():  # nested: only the outermost end raises
            done.append("inner")
        done.append("to its end")
    assert done == ["the batch went on", "inner", "to its end"]
    assert interrupts.pending is None


def test_a_section_that_fails_drops_the_held_signal(interrupts: Interrupts) -> None:
    with pytest.raises(ValueError), interrupts.held():
        _send(signal.SIGINT)
        raise ValueError("its own error goes on")
    assert interrupts.pending is None
    with interrupts.held():
        pass  # nothing left to raise


def test_outside_the_main_thread_nothing_is_installed() -> None:
    import threading

    errors: list[BaseException] = []

    def install() -> None:
        try:
            Interrupts().install()
        except BaseException as exc:  # pragma: no cover - the failure shown below
            errors.append(exc)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert errors == []
