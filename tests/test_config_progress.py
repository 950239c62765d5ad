"""Option parsing, thread caps and the progress/summary text."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import (
    THREAD_VARS,
    find_project_root,
    parse_workers,
    store_path,
    thread_env,
)
from orchestrator.errors import UsageError
from orchestrator.reports.progress import format_duration, progress_line, summary_lines


@pytest.mark.parametrize(("value", "expected"), [("auto", None), ("AUTO", None), ("4", 4)])
def test_parse_workers(value: str, expected: int | None) -> None:
    assert parse_workers(value) == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "", "1.5"])
def test_parse_workers_rejects(value: str) -> None:
    with pytest.raises(UsageError, match="--ray-workers"):
        parse_workers(value)


def test_thread_env_respects_the_user() -> None:
    env = thread_env({"MKL_NUM_THREADS": "3"}, cpus=16, workers=4)
    assert "MKL_NUM_THREADS" not in env
    assert env["OMP_NUM_THREADS"] == "4"
    assert set(env) == set(THREAD_VARS) - {"MKL_NUM_THREADS"}
    assert thread_env({}, cpus=2, workers=8)["OMP_NUM_THREADS"] == "1"


def test_store_location(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    root = find_project_root(sub)
    assert root == tmp_path.resolve()
    assert store_path(root, None, {}) == root / ".orchestrator" / "durations.db"
    assert store_path(root, None, {"ORCHESTRATOR_STORE": "/x/y.db"}) == Path("/x/y.db")


def test_formatting() -> None:
    assert format_duration(0.5) == "0.50s"
    assert format_duration(75) == "1m15s"
    assert format_duration(3725) == "1h02m"
    line = progress_line(5, 20, 1, 3.0, 9.0)
    assert line == "[ 5/20]  25% | 1 failed | 3.00s elapsed | ETA 9.00s"
    assert "ETA" not in progress_line(20, 20, 0, 3.0, 0.0)
    lines = summary_lines(
        where="a local Ray instance (2 CPUs)",
        workers=2,
        wall=10.0,
        serial=18.0,
        slowest=[("t.py::slow", 8.0)],
        lost=[],
        store="x.db",
        startup=2.0,
    )
    assert "speed-up 1.80x" in lines[1]
    assert any("t.py::slow" in line for line in lines)
