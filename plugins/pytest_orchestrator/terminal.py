"""What ``--ray`` prints: start-up lines and the live progress line (``--ray-progress``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from pytest_orchestrator.pytest_private import (
    TerminalReporter,
    teardown_reports_indexed,
    writing_nowhere,
)

#: Seconds between two progress lines when the output is not a terminal (CI logs).
PLAIN_PROGRESS_EVERY = 10.0
#: Seconds between two redraws of the progress line on a terminal.
LIVE_PROGRESS_EVERY = 0.1


class Terminal:
    """The controller's access to pytest's terminal reporter."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._live: Any = None
        self._drawn_at = 0.0

    def reporter(self) -> TerminalReporter | None:
        plugin = self.config.pluginmanager.get_plugin("terminalreporter")
        return plugin if isinstance(plugin, TerminalReporter) else None

    def line(self, text: str, yellow: bool = False) -> None:
        reporter = self.reporter()
        if reporter is not None:
            reporter.write_line(text, yellow=yellow)

    @contextmanager
    def progress_instead_of_tests(self, enabled: bool, render: Callable[[], str]) -> Iterator[None]:
        """Replace pytest's character per test by one progress line drawn by ``render``.

        pytest's reporter still sees every report (for its summary); only its per-test
        output goes nowhere while the run lasts.
        """
        reporter = self.reporter()
        if not enabled or reporter is None or reporter.verbosity > 0:
            yield
            return
        try:
            with writing_nowhere(reporter) as real:
                # None: pytest's reporter works otherwise, and keeps its own output.
                if real is not None:
                    self._live = (real, render)
                yield
        finally:
            if self._live is not None:
                self.draw(final=True)
                self._live = None

    @contextmanager
    def one_flush(self) -> Iterator[None]:
        """While the block runs, the reporter's flushes are put off to its end.

        pytest's reporter flushes its output after every report, one system call each;
        the controller replays the reports of many tests at once, and one flush after them
        writes the same output."""
        reporter = self.reporter()
        if reporter is None:
            yield
            return
        reporter.flush = _no_flush  # type: ignore[method-assign]
        try:
            yield
        finally:
            del reporter.flush
            reporter.flush()

    def draw(self, final: bool = False) -> None:
        """Redraw the progress line (at most every so often, unless ``final``)."""
        if self._live is None:
            return
        tw, render = self._live
        now = time.monotonic()
        interactive = tw.hasmarkup and getattr(sys.stdout, "isatty", lambda: False)()
        every = LIVE_PROGRESS_EVERY if interactive else PLAIN_PROGRESS_EVERY
        if not final and now - self._drawn_at < every:
            return
        self._drawn_at = now
        text = render()
        if interactive:
            width = tw.fullwidth - 1
            tw.write("\r" + text[:width].ljust(width), flush=True)
            if final:
                tw.write("\n")
        else:
            tw.line(text)


def _no_flush() -> None:
    pass


class SummaryLookups:
    """Registered with ``--ray``: pytest's summary of failures finds each failed test's
    teardown reports in an index rather than by scanning every report (see
    :func:`~pytest_orchestrator.pytest_private.teardown_reports_indexed`)."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self) -> Generator[None, object, object]:
        reporter = self.terminal.reporter()
        if reporter is None:
            return (yield)
        with teardown_reports_indexed(reporter):
            return (yield)
