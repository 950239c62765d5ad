"""Static sharding: parsing K/N and CI variables, and the split itself (pure)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.errors import UsageError
from orchestrator.scheduling.sharding import Shard, parse_shard, split
from orchestrator.store.durations import DurationStore


def test_k_of_n_is_parsed_and_checked() -> None:
    assert parse_shard("2/4", {}) == Shard(2, 4)
    for bad in ("2", "0/4", "5/4", "a/b", "2/0", "-1/3"):
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad, {})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CI_NODE_INDEX": "3", "CI_NODE_TOTAL": "4"}, (3, 4)),  # GitLab counts from 1
        ({"BUILDKITE_PARALLEL_JOB": "0", "BUILDKITE_PARALLEL_JOB_COUNT": "2"}, (1, 2)),
        ({"CIRCLE_NODE_INDEX": "4", "CIRCLE_NODE_TOTAL": "5"}, (5, 5)),
    ],
)
def test_auto_reads_the_ci_variables(env: dict[str, str], expected: tuple[int, int]) -> None:
    shard = parse_shard("auto", env)
    assert shard is not None and (shard.index, shard.total) == expected


def test_auto_with_one_job_splits_nothing_and_without_variables_says_what_to_do() -> None:
    assert parse_shard("auto", {"CIRCLE_NODE_INDEX": "0", "CIRCLE_NODE_TOTAL": "1"}) is None
    with pytest.raises(UsageError, match=r"CI_NODE_INDEX/CI_NODE_TOTAL.*--shard K/N"):
        parse_shard("auto", {})
    with pytest.raises(UsageError, match="does not fit"):
        parse_shard("auto", {"CI_NODE_INDEX": "0", "CI_NODE_TOTAL": "2"})


def test_longest_first_onto_the_lightest_shard() -> None:
    nodeids = [f"t.py::test_{i}" for i in range(6)]
    history = dict(zip(nodeids, [5.0, 4.0, 3.0, 3.0, 2.0, 1.0], strict=True))
    result = split(nodeids, history, 2)
    # 5 -> 1, 4 -> 2, 3 -> 2 (4 < 5), 3 -> 1 (5 < 7), 2 -> 2 (7 < 8), 1 -> 1 (8 < 9)
    assert result.shard_of == (1, 2, 2, 1, 2, 1)
    assert result.loads == (9.0, 9.0) and result.known == 6


@given(
    st.lists(st.floats(min_value=0, max_value=100), min_size=0, max_size=60),
    st.integers(min_value=1, max_value=8),
)
def test_every_test_lands_in_exactly_one_shard_and_shards_end_close(
    seconds: list[float], total: int
) -> None:
    nodeids = [f"tests/test_{i % 7}.py::test_{i}" for i in range(len(seconds))]
    history = dict(zip(nodeids, seconds, strict=True))
    result = split(nodeids, history, total)
    assert all(1 <= s <= total for s in result.shard_of)
    # The same inputs in another order give the same split (every machine agrees).
    shuffled = list(reversed(nodeids))
    again = split(shuffled, history, total)
    assert {n: s for n, s in zip(shuffled, again.shard_of, strict=True)} == dict(
        zip(nodeids, result.shard_of, strict=True)
    )
    for shard in range(1, total + 1):
        load = sum(t for t, s in zip(seconds, result.shard_of, strict=True) if s == shard)
        assert load == pytest.approx(result.loads[shard - 1], abs=1e-6)
    if seconds:  # greedy longest-first: no shard exceeds another by more than one test
        assert max(result.loads) - min(result.loads) <= max(seconds) + 1e-6


SUITE = """
import time, pytest

@pytest.mark.parametrize("seconds", [0.4, 0.3, 0.2, 0.1, 0.05, 0.05])
def test_sleep(seconds):
    time.sleep(seconds)
"""


def _ran(result: pytest.RunResult) -> set[str]:
    return {
        line.split(" ")[0]
        for line in result.stdout.lines
        if line.startswith("test_split.py::") and " PASSED" in line
    }


def test_shards_cover_the_suite_once_and_record_durations(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_split=SUITE)
    # Two jobs, each with its own copy of the (empty) store: the split is by count.
    cold = [
        pytester.runpytest_subprocess(f"--shard={k}/2", "-v", f"--ray-durations=job{k}.db")
        for k in (1, 2)
    ]
    assert [len(_ran(r)) for r in cold] == [3, 3]
    assert not _ran(cold[0]) & _ran(cold[1]) and len(_ran(cold[0]) | _ran(cold[1])) == 6
    cold[0].stdout.fnmatch_lines(["orchestrator: shard 1/2 (--shard): 3 of 6 tests*"])
    # Each plain run recorded its own tests; merged, the next split balances time.
    assert main(["durations", "merge", "job1.db", "job2.db", "--store", "merged.db"]) == 0
    monkeypatch.setenv("CI_NODE_TOTAL", "2")
    warm = []
    for index in ("1", "2"):
        shutil.copy(pytester.path / "merged.db", pytester.path / f"warm{index}.db")
        monkeypatch.setenv("CI_NODE_INDEX", index)
        warm.append(
            pytester.runpytest_subprocess("--shard=auto", "-v", f"--ray-durations=warm{index}.db")
        )
    first, second = (_ran(r) for r in warm)
    assert not first & second and len(first | second) == 6
    assert "test_split.py::test_sleep[0.4]" in first  # longest first, onto shard 1
    assert "test_split.py::test_sleep[0.3]" in second
    warm[1].stdout.fnmatch_lines(
        ["orchestrator: shard 2/2 (CI_NODE_INDEX/CI_NODE_TOTAL):*6 tests with recorded*"]
    )
    # Both jobs print the same fingerprint of the split: they agreed on it.
    prints = [r.stdout.str().split("split ")[1].split(";")[0] for r in warm]
    assert prints[0] == prints[1]


def test_a_bad_shard_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_split=SUITE)
    result = pytester.runpytest_subprocess("--shard=3/2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--shard 3/2: K must be between 1 and N*"])


def test_the_split_comes_after_kind_selection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_k="""
        import pytest
        @pytest.mark.parametrize("i", range(6))
        def test_unit(i): pass
        @pytest.mark.integration
        @pytest.mark.parametrize("i", range(4))
        def test_integ(i): pass
        """
    )
    for k in (1, 2):
        result = pytester.runpytest_subprocess(
            "--kinds=integration", f"--shard={k}/2", f"--ray-durations=job{k}.db"
        )
        result.assert_outcomes(passed=2, deselected=8)
        result.stdout.fnmatch_lines([f"orchestrator: shard {k}/2 (--shard): 2 of 4 tests*"])


@st.composite
def _shard_runs(draw: st.DrawFn) -> tuple[list[str], dict[str, float], int, list[int]]:
    """A suite, the store's durations, a number of shards and the order their runs take
    (each shard at least once, some again: a retried CI job)."""
    count = draw(st.integers(1, 30))
    nodeids = [f"tests/test_{i % 4}.py::test_{i}" for i in range(count)]
    seconds = st.floats(0.0, 50.0, allow_nan=False)
    known = draw(st.dictionaries(st.sampled_from(nodeids), seconds))
    total = draw(st.integers(1, 5))
    order = draw(st.permutations(range(1, total + 1)))
    repeats = draw(st.lists(st.integers(1, total), max_size=3))
    return nodeids, known, total, [*order, *repeats]


@given(_shard_runs(), st.data())
def test_shard_runs_in_one_checkout_partition_the_suite_whatever_their_order(
    case: tuple[list[str], dict[str, float], int, list[int]], data: st.DataObject
) -> None:
    nodeids, known, total, order = case
    seconds = st.floats(0.0, 50.0, allow_nan=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "durations.db"
        DurationStore(path).record(known, replace=True)
        ran: dict[int, set[str]] = {}
        for k in order:  # one after another, each recording what it measured
            store = DurationStore(path)
            result = split(nodeids, store.load(), total)
            mine = {n for n, s in zip(nodeids, result.shard_of, strict=True) if s == k}
            assert ran.setdefault(k, mine) == mine  # a rerun of a shard runs the same tests
            measured = {n: data.draw(seconds) for n in mine}
            store.record(measured, apart=True)
        runs = [ran[k] for k in range(1, total + 1)]
        assert sum(len(r) for r in runs) == len(nodeids) and set().union(*runs) == set(nodeids)
        # Folded in, the measurements reach the next split.
        assert DurationStore(path).fold() == len(nodeids)
        assert set(DurationStore(path).load()) == set(nodeids)


@given(_shard_runs(), st.data())
def test_shards_on_copies_of_the_store_partition_and_merge_into_one(
    case: tuple[list[str], dict[str, float], int, list[int]], data: st.DataObject
) -> None:
    nodeids, known, total, order = case
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.db"
        DurationStore(base).record(known, replace=True)
        ran: dict[int, set[str]] = {}
        for k in order:  # each CI job restores the same store, and a retried one again
            copy = Path(tmp) / f"job{k}.db"
            if not copy.exists() and base.exists():
                shutil.copy(base, copy)
            store = DurationStore(copy)
            result = split(nodeids, store.load(), total)
            mine = {n for n, s in zip(nodeids, result.shard_of, strict=True) if s == k}
            assert ran.setdefault(k, mine) == mine
            store.record({n: data.draw(st.floats(0.1, 9.0)) for n in mine}, apart=True)
        assert set().union(*ran.values()) == set(nodeids)
        assert sum(len(r) for r in ran.values()) == len(nodeids)
        merged = DurationStore(Path(tmp) / "merged.db")
        for k, tests in ran.items():
            if tests:  # a shard without tests recorded nothing
                merged.absorb(DurationStore(Path(tmp) / f"job{k}.db").rows())
        assert set(merged.load()) == set(nodeids)


def test_a_run_without_shard_folds_the_shards_durations_in(tmp_path: Path) -> None:
    store = DurationStore(tmp_path / "durations.db")
    store.record({"t::a": 4.0, "t::b": 2.0}, replace=True)
    store.record({"t::a": 8.0, "t::c": 1.0}, apart=True)
    assert store.load() == {"t::a": 4.0, "t::b": 2.0} and store.apart() == 2
    assert store.rows()["t::a"][:2] == (6.0, 2)  # what a merge takes: folded
    store.record({"t::b": 4.0})  # a run without --shard
    assert store.load() == {"t::a": 6.0, "t::b": 3.0, "t::c": 1.0} and store.apart() == 0


def test_sequential_shards_in_one_checkout_run_every_test_once(
    pytester: pytest.Pytester,
) -> None:
    """The second shard's split is not changed by the durations the first one recorded;
    `durations merge` without inputs folds them in for the next split."""
    pytester.makepyfile(
        test_seq="""
        import time, pytest

        @pytest.mark.parametrize("i", range(12))
        def test_t(i):
            time.sleep(0.002 * i)
        """
    )
    # No history: the first shard (on Ray workers) splits by count, then records real
    # durations; the second runs under plain pytest.
    runs = [
        pytester.runpytest_subprocess("--shard=1/2", "-v", "--ray", "--ray-workers=1"),
        pytester.runpytest_subprocess("--shard=2/2", "-v"),
    ]
    ran = [
        {line.split(" ")[0] for line in r.stdout.lines if " PASSED" in line and "::" in line}
        for r in runs
    ]
    assert not ran[0] & ran[1] and len(ran[0] | ran[1]) == 12
    runs[1].stdout.fnmatch_lines(["*6 more from earlier shard runs wait for*"])
    prints = [r.stdout.str().split("split ")[1].split(";")[0] for r in runs]
    assert prints[0] == prints[1]
    store = pytester.path / ".orchestrator" / "durations.db"
    assert main(["durations", "merge", "--store", str(store)]) == 0
    assert len(DurationStore(store).load()) == 12
