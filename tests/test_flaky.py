"""The flaky-test lifecycle's rules: what flaked, what quarantine excuses, when it ends."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import UsageError
from orchestrator.pipelines.flaky import (
    Entry,
    FlakePolicy,
    RunOfTest,
    after_run,
    entries_from_table,
    excused,
    flaked_runs,
    in_force,
)

TODAY = dt.date(2026, 12, 6)
OUTCOMES = ("passed", "failed", "error", "skipped")


def test_a_retry_within_a_run_and_a_verdict_that_changed_on_one_commit_are_flakes() -> None:
    runs = [
        RunOfTest(1, "aaa", "passed"),
        RunOfTest(2, "aaa", "failed"),  # the same commit passed in run 1
        RunOfTest(3, "bbb", "failed"),  # a real failure: bbb never passed
        RunOfTest(4, "ccc", "passed", flaky=True),  # failed, then passed on a retry
        RunOfTest(5, None, "failed"),  # no commit known: cannot tell
    ]
    assert flaked_runs(runs) == [2, 4]


def test_the_flake_rate_is_taken_over_the_window() -> None:
    policy = FlakePolicy(window=4, threshold=0.5, min_flakes=2)
    runs = [RunOfTest(i, None, "passed", flaky=i < 3) for i in range(10)]
    assert policy.flake_rate(runs) == (0.0, 0, 4)  # the flakes are older than the window
    runs += [RunOfTest(10, None, "passed", flaky=True), RunOfTest(11, None, "passed", True)]
    assert policy.flake_rate(runs) == (0.5, 2, 4)
    assert policy.reaches_threshold(runs)
    assert not FlakePolicy(window=4, threshold=0.5, min_flakes=3).reaches_threshold(runs)


runs_st = st.lists(
    st.builds(
        RunOfTest,
        st.integers(0, 1000),
        st.sampled_from([None, "a", "b", "c"]),
        st.sampled_from(OUTCOMES),
        st.booleans(),
    ),
    max_size=30,
)


@given(runs_st)
def test_a_test_that_never_failed_nor_was_retried_never_flaked(runs: list[RunOfTest]) -> None:
    steady = [RunOfTest(r.run_id, r.commit, "passed") for r in runs]
    assert flaked_runs(steady) == []
    failing = [RunOfTest(r.run_id, r.commit, "failed") for r in runs]
    assert flaked_runs(failing) == []  # failing every time is a failure, not a flake


nodeid_st = st.sampled_from([f"t.py::test_{i}" for i in range(6)])
entry_st = st.builds(
    Entry,
    nodeid_st,
    st.just("a reason"),
    st.one_of(st.none(), st.dates(dt.date(2026, 11, 1), dt.date(2027, 1, 31))),
    st.sampled_from(["manual", "auto", "pyproject"]),
)


@given(st.lists(entry_st, max_size=6), st.sets(nodeid_st, max_size=6))
def test_quarantine_never_excuses_a_test_that_is_not_quarantined(
    entries: list[Entry], failing: set[str]
) -> None:
    quarantined = in_force(entries, TODAY)
    if excused(failing, quarantined):
        for nodeid in failing:
            assert any(e.nodeid == nodeid and not e.expired(TODAY) for e in entries)
    outsider = "t.py::test_not_quarantined"
    assert not excused(failing | {outsider}, quarantined)
    assert not excused(set(), quarantined)  # nothing failed: nothing to excuse


@given(
    st.integers(1, 6),
    st.lists(
        st.one_of(st.none(), st.tuples(st.sampled_from(OUTCOMES), st.booleans())), max_size=40
    ),
)
def test_a_release_needs_k_clean_runs_in_a_row(
    k: int, results: list[tuple[str, bool] | None]
) -> None:
    """Run after run (None: the test did not run), the entry is released exactly when the
    last k results that say something (not skipped, not absent) are clean passes."""
    policy = FlakePolicy(release_after=k)
    entries = [Entry("t.py::test_q", "flaky on CI")]
    said: list[bool] = []
    for result in results:
        ran = {} if result is None else {"t.py::test_q": result}
        update = after_run(entries, ran, policy, TODAY)
        if result is not None and result[0] != "skipped":
            said.append(result[0] == "passed" and not result[1])
        streak = len(said) - max((i + 1 for i, ok in enumerate(said) if not ok), default=0)
        if update.released:
            assert streak >= k and said[-k:] == [True] * k
            assert update.released[0][1] == f"passed {k} runs in a row"
            return
        assert streak < k
        entries = list(update.kept)
        assert entries[0].streak == streak


def test_an_entry_past_its_date_is_released_and_one_in_force_is_kept() -> None:
    old = Entry("t.py::a", "until the fix", until=TODAY - dt.timedelta(days=1))
    current = Entry("t.py::b", "until the fix", until=TODAY)
    update = after_run([old, current], {}, FlakePolicy(), TODAY)
    assert [e.nodeid for e in update.kept] == ["t.py::b"]
    assert update.released == ((old, f"its quarantine ended on {old.until}"),)
    assert list(in_force([old, current], TODAY)) == ["t.py::b"]


def test_pyproject_entries_are_read_with_their_reason_and_date() -> None:
    table = {
        "tests": [
            {"test": "t.py::a", "reason": "#123 races on CI", "until": "2027-01-31"},
            {"test": "t.py::b", "reason": "slow network"},
        ]
    }
    entries = entries_from_table(table, "pyproject.toml")
    assert entries == [
        Entry("t.py::a", "#123 races on CI", dt.date(2027, 1, 31), "pyproject"),
        Entry("t.py::b", "slow network", None, "pyproject"),
    ]


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"tests": {"t": 1}}, "tests must be a list of tables"),
        ({"tests": ["t.py::a"]}, "tests entry 1 must be a table"),
        ({"tests": [{"test": "t.py::a"}]}, "tests entry 1: give the reason"),
        ({"tests": [{"reason": "x"}]}, "tests entry 1: test must be a test id"),
        ({"tests": [{"test": "a", "reason": "x", "until": "next week"}]}, "write it as YYYY-MM-DD"),
        ({"tests": [{"test": "a", "reason": "x", "owner": "me"}]}, r"unknown key\(s\) owner"),
    ],
)
def test_pyproject_entries_that_are_wrong_say_what_to_write(
    table: dict[str, object], match: str
) -> None:
    with pytest.raises(UsageError, match=match):
        entries_from_table(table, "pyproject.toml")


def test_the_policy_is_read_from_pyproject() -> None:
    table = {"auto": True, "threshold": 0.25, "window": 12, "min_flakes": 3, "release_after": 5}
    policy = FlakePolicy.from_mapping(table, "q")
    assert policy == FlakePolicy(
        window=12, threshold=0.25, min_flakes=3, auto=True, release_after=5
    )


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"threshold": 0}, "threshold is a flake rate"),
        ({"threshold": 2}, "threshold is a flake rate"),
        ({"threshold": "10%"}, "threshold must be a number"),
        ({"auto": "yes"}, "auto must be true or false"),
        ({"release_after": 0}, "release_after must be a whole number"),
        ({"windows": 3}, "unknown key 'windows'"),
    ],
)
def test_a_wrong_policy_says_what_is_expected(table: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        FlakePolicy.from_mapping(table, "q")
