"""Pure rules of the flaky-test lifecycle: detect, quarantine, release.

A test *flaked* in a run when it failed and then passed on a retry within that run, or when
it failed in a run while another run of the same commit passed it (the code was the same,
the verdict was not). Its flake rate is the share of its last runs in which it flaked.

A quarantined test still runs and its failure is still reported, but it does not fail the
run. It leaves quarantine when it has passed cleanly (no failure, no retry) a number of runs
in a row, or when the date its entry was given until has passed. Tests are quarantined by
hand (with a reason, optionally until a date) or, where the project asks for it, when their
flake rate reaches a threshold.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.errors import UsageError

#: Outcomes that fail a run.
FAILING = ("failed", "error")


@dataclass(frozen=True)
class RunOfTest:
    """One recorded run of one test."""

    run_id: int
    commit: str | None
    outcome: str
    #: It failed, then passed on a retry in the same run.
    flaky: bool = False


def flaked_runs(runs: Sequence[RunOfTest]) -> list[int]:
    """The runs (ids) in which the test flaked: flaky within the run, or failed in a run
    whose commit has a passing run of it too."""
    passed_at = {r.commit for r in runs if r.commit is not None and r.outcome == "passed"}
    return [
        r.run_id
        for r in runs
        if r.flaky or (r.outcome in FAILING and r.commit is not None and r.commit in passed_at)
    ]


@dataclass(frozen=True)
class FlakePolicy:
    """When a test counts as flaky, and when quarantine takes or releases one."""

    #: The flake rate is taken over this many of the test's last runs.
    window: int = 20
    #: Quarantined automatically at this flake rate or above (with ``auto``)...
    threshold: float = 0.1
    #: ... once it flaked in at least this many of those runs.
    min_flakes: int = 2
    #: Quarantine tests that reach the threshold without being named by hand.
    auto: bool = False
    #: A quarantined test that passes this many runs in a row leaves quarantine.
    release_after: int = 10

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], where: str) -> FlakePolicy:
        """From ``[tool.orchestrator.quarantine]``'s keys (``tests`` aside)."""
        known = {"window", "threshold", "min_flakes", "auto", "release_after"}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key == "tests":
                continue
            if key not in known:
                raise UsageError(
                    f"{where}: unknown key {key!r}; the known keys are "
                    f"{', '.join(sorted(known | {'tests'}))}"
                )
            if key == "auto":
                if not isinstance(value, bool):
                    raise UsageError(f"{where}: auto must be true or false, got {value!r}")
            elif key == "threshold":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise UsageError(f"{where}: threshold must be a number, got {value!r}")
                if not 0 < value <= 1:
                    raise UsageError(
                        f"{where}: threshold is a flake rate, more than 0 and at most 1 "
                        f"(0.1 = flaky in one run of ten), got {value!r}"
                    )
                value = float(value)
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{where}: {key} must be a whole number of 1 or more")
            values[key] = value
        return cls(**values)

    def flake_rate(self, runs: Sequence[RunOfTest]) -> tuple[float, int, int]:
        """(rate, flaked runs, runs) over the last :attr:`window` runs (oldest first)."""
        recent = list(runs)[-self.window :]
        if not recent:
            return 0.0, 0, 0
        flaked = len(flaked_runs(recent))
        return flaked / len(recent), flaked, len(recent)

    def is_flaky(self, runs: Sequence[RunOfTest]) -> bool:
        """Flaked at least once in the window."""
        return self.flake_rate(runs)[1] > 0

    def reaches_threshold(self, runs: Sequence[RunOfTest]) -> bool:
        """Whether automatic quarantine takes this test (when :attr:`auto` is on)."""
        rate, flaked, _ = self.flake_rate(runs)
        return flaked >= self.min_flakes and rate >= self.threshold


@dataclass(frozen=True)
class Entry:
    """A quarantined test."""

    nodeid: str
    reason: str
    #: The last day it stays quarantined (None: until it is released by passing).
    until: dt.date | None = None
    #: "manual" (``orchestrator quarantine add``), "pyproject" (named in pyproject.toml)
    #: or "auto" (its flake rate).
    source: str = "manual"
    #: Clean passes in a row since it was quarantined.
    streak: int = 0

    def expired(self, today: dt.date) -> bool:
        return self.until is not None and today > self.until

    def describe(self) -> str:
        until = f", until {self.until.isoformat()}" if self.until else ""
        return f"{self.reason}{until}"


def parse_until(text: str, where: str) -> dt.date:
    """A date as ``YYYY-MM-DD``."""
    try:
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: {text!r} is not a date; write it as YYYY-MM-DD") from None


def entries_from_table(table: Mapping[str, Any], where: str) -> list[Entry]:
    """The tests ``[tool.orchestrator.quarantine]`` names by hand::

    tests = [{ test = "tests/test_api.py::test_retry", reason = "#123", until = "2027-01-31" }]
    """
    tests = table.get("tests", [])
    if not isinstance(tests, list):
        raise UsageError(f"{where}: tests must be a list of tables")
    entries = []
    for number, item in enumerate(tests, 1):
        at = f"{where}: tests entry {number}"
        if not isinstance(item, dict):
            raise UsageError(f'{at} must be a table: {{ test = "...", reason = "..." }}')
        unknown = set(item) - {"test", "reason", "until"}
        if unknown:
            raise UsageError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}")
        test, reason = item.get("test"), item.get("reason")
        if not isinstance(test, str) or not test:
            raise UsageError(f"{at}: test must be a test id (tests/test_x.py::test_name)")
        if not isinstance(reason, str) or not reason.strip():
            raise UsageError(f'{at}: give the reason it is quarantined (reason = "...")')
        until = item.get("until")
        if until is not None and not isinstance(until, str | dt.date):
            raise UsageError(f"{at}: until must be a date, YYYY-MM-DD")
        if isinstance(until, str):
            until = parse_until(until, at)
        entries.append(Entry(test, reason.strip(), until, "pyproject"))
    return entries


def in_force(entries: Sequence[Entry], today: dt.date) -> dict[str, Entry]:
    """The quarantine that applies today: entries not expired, by node id (the first entry
    of a test wins)."""
    out: dict[str, Entry] = {}
    for entry in entries:
        if not entry.expired(today):
            out.setdefault(entry.nodeid, entry)
    return out


def clean(outcome: str, flaky: bool) -> bool:
    """A run that counts towards release: passed, with no failed attempt before."""
    return outcome == "passed" and not flaky


@dataclass(frozen=True)
class Update:
    """What one run changes in the quarantine."""

    #: Entries still quarantined, with their streaks brought up to date.
    kept: tuple[Entry, ...]
    #: Entries that leave quarantine, and why.
    released: tuple[tuple[Entry, str], ...]


def after_run(
    entries: Sequence[Entry],
    results: Mapping[str, tuple[str, bool]],
    policy: FlakePolicy,
    today: dt.date,
) -> Update:
    """The quarantine after a run: ``results`` maps the tests that ran to (outcome, flaky).

    A clean pass adds one to a quarantined test's streak, anything else but a skip resets it
    (a skipped or deselected test says nothing either way); at :attr:`FlakePolicy.release_after`
    in a row, or past its date, an entry is released.
    """
    kept: list[Entry] = []
    released: list[tuple[Entry, str]] = []
    for entry in entries:
        if entry.nodeid in results:
            outcome, flaky = results[entry.nodeid]
            if clean(outcome, flaky):
                entry = replace(entry, streak=entry.streak + 1)
            elif outcome != "skipped":
                entry = replace(entry, streak=0)
        if entry.expired(today):
            released.append((entry, f"its quarantine ended on {entry.until}"))
        elif entry.streak >= policy.release_after:
            released.append((entry, f"passed {entry.streak} runs in a row"))
        else:
            kept.append(entry)
    return Update(tuple(kept), tuple(released))


def excused(failing: Collection[str], quarantined: Mapping[str, Entry]) -> bool:
    """Whether a run whose failing tests are ``failing`` (and nothing else failed: no
    collection error) passes all the same: it does when each of them is quarantined."""
    return bool(failing) and all(nodeid in quarantined for nodeid in failing)
