"""Ctrl-C and SIGTERM during a ``--ray`` run: the run stops, and what it has written stays whole.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be when the signal
comes. In a run that is mostly replaying results into pytest's listeners, that may be the
middle of the JUnit writer recording a test case (leaving one that breaks the report's
writing at the end), or of a plugin's hook, which may swallow it. So while results are
replayed the signal is held, and the interrupt is raised when the batch is over; anywhere
else (waiting on the workers) it is raised at once. SIGTERM stops the run like Ctrl-C:
workers stopped, results kept, exit code 2.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

#: The signals that stop a run.
STOPPING = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int) -> KeyboardInterrupt:
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return KeyboardInterrupt(f"received signal {signum}")


class Interrupts:
    """Handlers for :data:`STOPPING` while a run goes on, and sections that hold them."""

    def __init__(self) -> None:
        self._holding = 0
        #: A signal that came while held, raised when the section ends.
        self.pending: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Take over the signals (after Ray's start, which installs a SIGTERM handler of
        its own); nothing outside the main thread, where Python allows no handler."""
        for signum in STOPPING:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:
                return

    def restore(self) -> None:
        """Give the signals back to the handlers they had before :meth:`install`."""
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._holding:
            self.pending = signum
            return
        raise _interrupt(signum)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Within this, a stopping signal waits; it is raised as the section ends (unless
        the section ends with an exception of its own, which goes on instead)."""
        self._holding += 1
        try:
            yield
        except BaseException:
            self._holding -= 1
            if not self._holding:
                self.pending = None  # the run is ending with that exception anyway
            raise
        self._holding -= 1
        if not self._holding and self.pending is not None:
            signum, self.pending = self.pending, None
            raise _interrupt(signum)
