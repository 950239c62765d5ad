"""What ``orchestrator flaky`` and ``orchestrator quarantine list`` print."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from orchestrator.pipelines.flaky import (
    Entry,
    FlakePolicy,
    RunOfTest,
    flaked_runs,
    in_force,
)
from orchestrator.store.history import HistoryStore

#: Distinct failure messages shown per test, the most frequent first.
SHOWN_MESSAGES = 3
#: Characters of a message shown.
MESSAGE_WIDTH = 100


@dataclass(frozen=True)
class FlakyTest:
    """A test that flaked in its recent runs."""

    nodeid: str
    rate: float
    flaked: int
    runs: int
    last_flake: int
    #: Failure messages of its flaked runs, grouped: (count, message), most frequent first.
    messages: tuple[tuple[int, str], ...]
    #: Commits it flaked on, and commits seen in its recent runs.
    flaked_commits: tuple[str, ...]
    commits: int


def find_flaky(
    history: HistoryStore,
    policy: FlakePolicy,
    candidates: Mapping[str, Sequence[RunOfTest]] | None = None,
) -> list[FlakyTest]:
    """The tests that flaked in their last ``policy.window`` runs, the highest rate first
    (``candidates``: the history's flake candidates, where the caller has them already)."""
    if candidates is None:
        candidates = history.flake_candidates(policy.window)
    found = []
    for nodeid, runs in candidates.items():
        flaked = flaked_runs(runs)
        if not flaked:
            continue
        rate, count, total = policy.flake_rate(runs)
        messages = Counter(history.failure_messages(nodeid, set(flaked)))
        commit_of: dict[int, str | None] = {r.run_id: r.commit for r in runs}
        flaked_commits = tuple(dict.fromkeys(c for r in flaked if (c := commit_of[r])))
        found.append(
            FlakyTest(
                nodeid,
                rate,
                count,
                total,
                max(flaked),
                tuple((n, m) for m, n in messages.most_common()),
                flaked_commits,
                len({r.commit for r in runs if r.commit}),
            )
        )
    found.sort(key=lambda f: (-f.rate, -f.last_flake, f.nodeid))
    return found


def flaky_lines(
    history: HistoryStore,
    quarantine: list[Entry],
    policy: FlakePolicy,
    top: int,
    today: dt.date,
) -> list[str]:
    runs = history.run_count()
    if runs == 0:
        return [
            f"no runs recorded yet in {history.path}; runs with --ray (or `orchestrator "
            "run`) record each test's outcome"
        ]
    found = find_flaky(history, policy)
    active = in_force(quarantine, today)
    if not found:
        return [f"no test flaked in its last {policy.window} runs ({runs} runs in {history.path})"]
    started = history.run_started({f.last_flake for f in found})
    lines = [
        f"{len(found)} test(s) flaked in their last {policy.window} runs ({runs} runs in "
        f"{history.path}); a flake: failed, then passed on a retry, or failed on a commit "
        "that also passed"
    ]
    for test in found[:top]:
        when = started.get(test.last_flake)
        shown = time.strftime("%Y-%m-%d %H:%M", time.localtime(when)) if when else "-"
        entry = active.get(test.nodeid)
        state = f"  [quarantined: {entry.describe()}]" if entry else ""
        lines.append(
            f"  {test.rate:4.0%} ({test.flaked}/{test.runs} runs)  last flake: run "
            f"#{test.last_flake}, {shown}{state}"
        )
        lines.append(f"  {test.nodeid}")
        for count, message in test.messages[:SHOWN_MESSAGES]:
            lines.append(f"    {count}x  {message[:MESSAGE_WIDTH]}")
        if len(test.messages) > SHOWN_MESSAGES:
            lines.append(f"    ... and {len(test.messages) - SHOWN_MESSAGES} other message(s)")
        if test.flaked_commits:
            commits = ", ".join(c[:8] for c in test.flaked_commits[:5])
            lines.append(
                f"    commits: flaked on {len(test.flaked_commits)} of the {test.commits} "
                f"seen ({commits})"
            )
    if len(found) > top:
        lines.append(f"  ... and {len(found) - top} more (--top N shows more)")
    if not policy.auto:
        lines.append(
            "quarantine one with `orchestrator quarantine add TEST --reason ...`, or all "
            "that reach a flake rate with `auto = true` under [tool.orchestrator.quarantine]"
        )
    return lines


def quarantine_lines(entries: list[Entry], policy: FlakePolicy, today: dt.date) -> list[str]:
    if not entries:
        return ["no test is quarantined"]
    lines = [
        f"{len(entries)} quarantined test(s); each leaves after {policy.release_after} clean "
        "passes in a row"
    ]
    for entry in sorted(entries, key=lambda e: e.nodeid):
        state = (
            "expired, released by the next run"
            if entry.expired(today)
            else (f"{entry.streak}/{policy.release_after} clean passes")
        )
        lines.append(f"  {entry.nodeid}")
        lines.append(f"    {entry.describe()}  ({entry.source}; {state})")
    return lines


__all__ = ["FlakyTest", "find_flaky", "flaky_lines", "quarantine_lines"]
