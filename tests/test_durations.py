"""The duration store and its importers."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from orchestrator.durations import (
    DurationStore,
    StoreWarning,
    read_durations_file,
)
from orchestrator.errors import OrchestratorError
from orchestrator.planner import junit_key, make_plan


def test_record_and_load_moving_average(tmp_path: Path) -> None:
    store = DurationStore(tmp_path / "d" / "durations.db")
    assert store.load() == {}
    store.record({"a.py::t": 4.0, "b.py::t": 1.0})
    store.record({"a.py::t": 2.0})
    assert store.load() == {"a.py::t": 3.0, "b.py::t": 1.0}
    store.record({"a.py::t": 10.0}, replace=True)
    assert store.load()["a.py::t"] == 10.0
    assert (tmp_path / "d" / ".gitignore").exists()


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


def test_import_junit_feeds_the_plan(tmp_path: Path) -> None:
    path = tmp_path / "report.xml"
    path.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_a.TestX" name="test_y[1]" time="2.5"/>'
        '<testcase classname="tests.test_a" name="test_z" time="0.5"/>'
        "</testsuite></testsuites>"
    )
    durations = read_durations_file(path)
    nodeid = "tests/test_a.py::TestX::test_y[1]"
    assert durations[junit_key(nodeid)] == 2.5
    plan = make_plan([nodeid, "tests/test_a.py::test_z"], durations)
    assert plan.estimates == (2.5, 0.5)
    assert plan.known == 2


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
