"""Quarantine in a pytest run, with or without ``--ray``.

A quarantined test runs and its failure is reported as usual (the terminal's ``F``, the
JUnit ``<failure>``, which gets a ``quarantined`` property naming the reason), but when the
run's only failures are quarantined tests' the run passes. At the end each quarantined
test's streak of clean passes is brought up to date in the store, entries that reached
their release (or their date) leave quarantine, and, where pyproject.toml asks for it, tests
whose flake rate reached the threshold are quarantined for the next runs; the run says so.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator, Sequence
from pathlib import Path

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.pipelines.flaky import Entry, FlakePolicy, after_run, excused, in_force
from orchestrator.settings import Settings
from orchestrator.store.quarantine import QuarantineStore
from pytest_orchestrator.pytest_private import TerminalReporter

#: The JUnit property a quarantined test's case gets when it fails.
PROPERTY = "quarantined"


class QuarantinePlugin:
    """Applies the quarantine ``entries`` (in force today) to the run."""

    def __init__(
        self,
        entries: Sequence[Entry],
        policy: FlakePolicy,
        store_path: Path,
        *,
        today: dt.date,
    ) -> None:
        #: Every entry, those past their date included (released at the end).
        self.all_entries = list(entries)
        #: The quarantine in force today, by test id.
        self.entries = in_force(entries, today)
        self.policy = policy
        self.store_path = store_path
        self.today = today
        #: Quarantined tests that ran: (outcome, flaky).
        self.results: dict[str, tuple[str, bool]] = {}
        #: Tests that failed, by whether they are quarantined.
        self.failing: set[str] = set()
        self.rerun: set[str] = set()
        self.collect_errors = 0
        #: Set when quarantine turned a failed run into a passing one.
        self.excused: list[str] = []
        self.released: list[tuple[Entry, str]] = []
        self.added: list[Entry] = []
        self.problem: str | None = None
        self.session: pytest.Session | None = None
        self._finished = self._settled = False

    # -- the run ---------------------------------------------------------------------
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> Generator[None, None, None]:
        if self._before(report) and self.session is not None:
            # pytest's session counts the failure next (for the exit status, -x and
            # --maxfail): a quarantined test's does not count, so that -x does not stop
            # the run for it either. Taken off first, it is added back by that count.
            self.session.testsfailed -= 1
        return (yield)

    def _before(self, report: pytest.TestReport) -> bool:
        """Note what the report says; True for a quarantined test's failure that pytest
        counts. Its teardown report gets the JUnit property before the writer reads it."""
        nodeid = report.nodeid
        if str(report.outcome) == "rerun":  # pytest-rerunfailures' earlier attempt
            self.rerun.add(nodeid)
            return False
        if report.failed:
            self.failing.add(nodeid)
        entry = self.entries.get(nodeid)
        if entry is None:
            return False
        if report.failed:
            self.results[nodeid] = ("error" if report.when != "call" else "failed", False)
        elif report.when == "call" or (report.when == "setup" and report.skipped):
            outcome = "skipped" if report.skipped else "passed"
            if self.results.get(nodeid, ("passed",))[0] not in ("failed", "error"):
                self.results[nodeid] = (outcome, False)
        if report.when == "teardown" and nodeid in self.failing:
            report.user_properties.append((PROPERTY, entry.describe()))
        return report.failed and not hasattr(report, "wasxfail")

    def plain_pass(
        self,
        nodeid: str,
        setup: pytest.TestReport,
        call: pytest.TestReport,
        teardown: pytest.TestReport,
    ) -> None:
        """What :meth:`pytest_runtest_logreport` does with a test that passed plainly."""
        if nodeid in self.entries:
            self.results[nodeid] = ("passed", False)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors += 1

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """A run whose only failures are quarantined tests' passes (pytest did not count
        them; a status set otherwise, by a plugin that counts failures itself, too)."""
        self._finished = True
        if self.collect_errors or not excused(self.failing, self.entries):
            return
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            self.excused = sorted(self.failing)
            session.exitstatus = pytest.ExitCode.OK

    # -- the end ---------------------------------------------------------------------
    def settle(self, flaky: set[str]) -> None:
        """Bring the store up to date once: streaks, releases, new automatic entries."""
        if self._settled or not self._finished:
            return
        self._settled = True
        flaky = flaky | self.rerun
        results = {n: (o, f or n in flaky) for n, (o, f) in self.results.items()}
        update = after_run(self.all_entries, results, self.policy, self.today)
        self.released = list(update.released)
        if self.policy.auto:
            self.added = auto_entries(self.store_path, self.policy, set(self.entries))
        try:
            QuarantineStore(self.store_path).apply(update.kept, update.released, self.added)
        except OrchestratorError as exc:
            self.problem = str(exc)

    def summary_lines(self) -> list[str]:
        lines: list[str] = []
        failed = sorted(n for n in self.failing if n in self.entries)
        for nodeid in failed:
            lines.append(f"FAILED (quarantined: {self.entries[nodeid].describe()}) {nodeid}")
        if self.excused:
            lines.append(
                f"{len(self.excused)} failure(s) of quarantined tests did not fail the run "
                "(--quarantine off counts them)"
            )
        for entry, why in self.released:
            where = " (remove it from pyproject.toml)" if entry.source == "pyproject" else ""
            lines.append(f"released: {entry.nodeid}: {why}{where}")
        for entry in self.added:
            lines.append(f"quarantined from the next run: {entry.nodeid}: {entry.reason}")
        if self.problem:
            lines.append(f"warning: {self.problem}")
        return lines

    def pytest_terminal_summary(self, terminalreporter: TerminalReporter) -> None:
        self.settle(_flaky_of(terminalreporter.config))
        lines = self.summary_lines()
        if lines:
            terminalreporter.write_sep("=", "quarantine")
            for line in lines:
                terminalreporter.write_line(line)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.settle(_flaky_of(config))  # where no terminal summary was written


def quarantine_plugin(
    settings: Settings, store_path: Path, today: dt.date
) -> QuarantinePlugin | None:
    """The plugin for a run under ``settings``' quarantine and the store's; None where
    nothing is quarantined and nothing would be (no ``auto``)."""
    entries = QuarantineStore(store_path).entries_with(settings.quarantine)
    if not entries and not settings.flake_policy.auto:
        return None
    return QuarantinePlugin(entries, settings.flake_policy, store_path, today=today)


def _flaky_of(config: pytest.Config) -> set[str]:
    """Tests that failed and then passed on a retry of ``--ray-retries``."""
    pipelines = config.pluginmanager.get_plugin("orchestrator-pipelines")
    return set(getattr(pipelines, "flaky", ()))


def auto_entries(store_path: Path, policy: FlakePolicy, quarantined: set[str]) -> list[Entry]:
    """Tests the recorded runs show at the flake-rate threshold, not quarantined yet."""
    from orchestrator.store.history import HistoryStore

    found = HistoryStore(store_path).flake_candidates(policy.window)
    entries = []
    for nodeid, runs in sorted(found.items()):
        if nodeid in quarantined or not policy.reaches_threshold(runs):
            continue
        rate, flaked, count = policy.flake_rate(runs)
        entries.append(
            Entry(nodeid, f"flaky in {flaked} of its last {count} runs ({rate:.0%})", None, "auto")
        )
    return entries
