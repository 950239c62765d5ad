"""The duration store and its importers."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml, Skipped, TestCase, TestSuite

from orchestrator.errors import OrchestratorError
from orchestrator.scheduling.planner import junit_key, make_plan
from orchestrator.store.durations import (
    ENTRY_PREFIX,
    DurationStore,
    StoreWarning,
    read_durations_file,
)


def test_record_and_load_moving_average(tmp_path: Path) -> None:
    store = DurationStore(tmp_path / "d" / "durations.db")
    assert store.load() == {}
    store.record({"a.py::t": 4.0, "b.py::t": 1.0})
    store.record({"a.py::t": 2.0})
    assert store.load() == {"a.py::t": 3.0, "b.py::t": 1.0}
    store.record({"a.py::t": 10.0}, replace=True)
    assert store.load()["a.py::t"] == 10.0
    assert (tmp_path / "d" / ".gitignore").exists()


def test_file_entry_costs_are_kept_apart_from_test_durations(tmp_path: Path) -> None:
    store = DurationStore(tmp_path / "durations.db")
    store.record({"a.py::t": 1.0, ENTRY_PREFIX + "a.py": 2.0, "entry_b.py::t": 0.5})
    store.record({ENTRY_PREFIX + "a.py": 4.0})
    assert store.load() == {"a.py::t": 1.0, "entry_b.py::t": 0.5}
    assert store.entry_costs() == {"a.py": 3.0}
    assert DurationStore(tmp_path / "missing.db").entry_costs() == {}


def test_bad_values_are_ignored(tmp_path: Path) -> None:
    store = DurationStore(tmp_path / "durations.db")
    assert store.record({"a": float("nan"), "b": -1.0, "c": float("inf")}) == 0
    assert store.load() == {}


def test_corrupt_store_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "durations.db"
    path.write_bytes(b"this is not a database" * 100)
    store = DurationStore(path)
    with pytest.warns(StoreWarning, match="unreadable"):
        assert store.load() == {}
    assert list(tmp_path.glob("durations.db.corrupt-*"))
    store.record({"a": 1.0})
    assert store.load() == {"a": 1.0}


def _writer(path: str, offset: int) -> None:
    store = DurationStore(Path(path))
    for i in range(30):
        store.record({f"test_{offset}_{i}": float(i), "shared": float(offset)})


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "durations.db")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, n)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    loaded = DurationStore(Path(path)).load()
    assert len(loaded) == 3 * 30 + 1
    with sqlite3.connect(path) as conn:
        (samples,) = conn.execute("SELECT samples FROM durations WHERE nodeid='shared'").fetchone()
    assert samples == 90


def test_import_pytest_split(tmp_path: Path) -> None:
    path = tmp_path / ".test_durations"
    path.write_text(json.dumps({"tests/test_a.py::test_x": 1.5}))
    assert read_durations_file(path) == {"tests/test_a.py::test_x": 1.5}


def _junit(path: Path, *suites: TestSuite) -> Path:
    """Write a JUnit report of ``suites``, as CI tools that use junitparser write one."""
    report = JUnitXml()
    for suite in suites:
        report.add_testsuite(suite)
    report.write(str(path))
    return path


def _suite(name: str, *cases: TestCase) -> TestSuite:
    suite = TestSuite(name)
    suite.add_testcases(list(cases))
    return suite


def test_import_junit_feeds_the_plan(tmp_path: Path) -> None:
    path = _junit(
        tmp_path / "report.xml",
        _suite(
            "pytest",
            TestCase("test_y[1]", "tests.test_a.TestX", 2.5),
            TestCase("test_z", "tests.test_a", 0.5),
        ),
    )
    durations = read_durations_file(path)
    nodeid = "tests/test_a.py::TestX::test_y[1]"
    assert durations[junit_key(nodeid)] == 2.5
    plan = make_plan([nodeid, "tests/test_a.py::test_z"], durations)
    assert plan.estimates == (2.5, 0.5)
    assert plan.known == 2


def test_import_reads_every_case_as_junitparser_does(tmp_path: Path) -> None:
    """The streaming reader agrees with junitparser's reading of the whole document:
    outcomes, several suites, a case without a time, a case repeated (its times add up)."""
    failed = TestCase("test_fails", "tests.test_b", 1.25)
    failed.result = [Failure("assert 1 == 2")]
    skipped = TestCase("test_skips", "tests.test_b", 0.0)
    skipped.result = [Skipped("not today")]
    path = _junit(
        tmp_path / "report.xml",
        _suite("app", TestCase("test_a", "tests.test_a", 0.5), failed, skipped),
        _suite(
            "ml",
            TestCase("test_fit", "tests.ml.test_model.TestModel", 3.0),
            TestCase("test_untimed", "tests.ml.test_model"),
            TestCase("test_a", "tests.test_a", 0.25),  # the same test, run again
        ),
    )
    expected: dict[str, float] = {}
    for suite in JUnitXml.fromfile(str(path)):
        for case in suite:
            key = f"junit:{case.classname}::{case.name}"
            expected[key] = expected.get(key, 0.0) + (case.time or 0.0)
    assert read_durations_file(path) == expected
    assert expected["junit:tests.test_a::test_a"] == 0.75
    assert expected["junit:tests.ml.test_model::test_untimed"] == 0.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("<testsuite><testcase", "not well-formed XML"),
        ("{not json", "not valid JSON"),
        ('{"a": "slow"}', "is not a number"),
        ("hello", "neither a JUnit XML report nor"),
    ],
)
def test_import_errors_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "input"
    path.write_text(content)
    with pytest.raises(OrchestratorError, match=message) as info:
        read_durations_file(path)
    assert str(path) in str(info.value)


def test_stores_of_parallel_jobs_merge_keeping_the_newest_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli import main

    job1, job2, target = (DurationStore(tmp_path / f"{n}.db") for n in ("job1", "job2", "t"))
    job1.record({"a.py::test_1": 1.0, "a.py::test_shared": 5.0}, replace=True)
    time.sleep(0.01)
    job2.record({"b.py::test_2": 2.0, "a.py::test_shared": 7.0}, replace=True)
    target.record({"c.py::test_3": 3.0}, replace=True)
    code = main(["durations", "merge", str(job2.path), str(job1.path), "--store", str(target.path)])
    assert code == 0
    assert target.load() == {
        "a.py::test_1": 1.0,
        "b.py::test_2": 2.0,
        "c.py::test_3": 3.0,
        "a.py::test_shared": 7.0,  # job2 recorded it last, though given first
    }
    assert "2 tests in" in capsys.readouterr().out


def test_merging_something_that_is_not_a_store_fails_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli import main

    good = DurationStore(tmp_path / "good.db")
    good.record({"a.py::test_1": 1.0})
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite at all, just text " * 100)
    target = tmp_path / "target.db"
    code = main(["durations", "merge", str(good.path), str(junk), "--store", str(target)])
    assert code == 1
    assert "junk.db: not a duration store" in capsys.readouterr().err
    assert not target.exists()
    assert main(["durations", "merge", str(tmp_path / "missing.db"), "--store", str(target)]) == 1
