"""Recycling workers: the limits (pure), the memory they measure, and a leaky suite on Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.errors import UsageError
from orchestrator.settings import settings_from_table
from orchestrator.worker.process import _sigkill_cause
from orchestrator.worker.recycle import (
    RecyclePolicy,
    oom_kills,
    parse_max_memory,
    parse_max_tests,
    resident_bytes,
)

MB = 10**6


def test_limits_say_why_a_worker_is_recycled() -> None:
    assert not RecyclePolicy().enabled
    by_count = RecyclePolicy(max_tests=3)
    assert by_count.reason(2, lambda: 0) is None
    assert by_count.reason(3, lambda: 0) == "ran 3 tests, the most per worker"
    by_memory = RecyclePolicy(max_memory=500 * MB)
    assert by_memory.reason(9, lambda: 400 * MB) is None
    assert by_memory.reason(6, lambda: 549 * MB) == (
        "549MB resident after 6 tests, over the limit of 500MB"
    )
    assert "1.5GiB resident" in str(RecyclePolicy(max_memory=2**30).reason(1, lambda: 3 * 2**29))
    # Memory is only measured when there is a memory limit.
    assert by_count.reason(1, lambda: pytest.fail("measured")) is None
    round_trip = RecyclePolicy.from_message(RecyclePolicy(123 * MB, 7).as_message())
    assert round_trip == RecyclePolicy(123 * MB, 7)


def test_sizes_and_counts_are_checked() -> None:
    assert parse_max_memory("500MB") == 500 * MB
    assert parse_max_memory("2GiB") == 2 * 2**30
    assert parse_max_memory(None) is None and parse_max_memory("0") is None
    assert parse_max_tests("25") == 25 and parse_max_tests("0") is None
    for bad in ("lots", "12XB", "100"):  # 100 bytes: smaller than any process
        with pytest.raises(UsageError, match="--ray-max-worker-memory"):
            parse_max_memory(bad)
    for bad_count in ("-1", "ten", 2.5):
        with pytest.raises(UsageError, match="--ray-max-tests-per-worker"):
            parse_max_tests(bad_count)


def test_pyproject_sets_the_limits_and_names_a_bad_one() -> None:
    settings = settings_from_table(
        {"max_worker_memory": "1GB", "max_tests_per_worker": 50}, "pyproject.toml"
    )
    assert settings.recycle == RecyclePolicy(10**9, 50)
    with pytest.raises(UsageError, match=r"\[tool.orchestrator\] max_worker_memory"):
        settings_from_table({"max_worker_memory": "big"}, "pyproject.toml")
    with pytest.raises(UsageError, match="known keys max_worker_memory, max_tests_per_worker"):
        settings_from_table({"max_memory": "1GB"}, "pyproject.toml")


def test_resident_memory_counts_the_children_too() -> None:
    mine = resident_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; b = b'x' * 200_000_000; time.sleep(30)"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while resident_bytes(child.pid) < 200 * MB and time.monotonic() < deadline:
            time.sleep(0.05)
        assert resident_bytes() >= mine + 200 * MB
    finally:
        child.kill()
        child.wait()


def test_resident_memory_walks_a_process_tree(tmp_path: Path) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    tree = {10: (100, [11, 12]), 11: (50, [13]), 12: (7, []), 13: (3, [])}
    for pid, (pages, children) in tree.items():
        task = tmp_path / str(pid) / "task" / str(pid)
        task.mkdir(parents=True)
        (tmp_path / str(pid) / "statm").write_text(f"999 {pages} 0 0 0 0 0\n")
        (task / "children").write_text(" ".join(map(str, children)))
    assert resident_bytes(10, proc=tmp_path) == 160 * page
    assert resident_bytes(11, proc=tmp_path) == 53 * page


@pytest.mark.parametrize(
    ("cgroup", "file", "content"),
    [
        ("0::/job\n", "job/memory.events", "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n"),
        (
            "4:memory:/docker/abc\n0::/\n",
            "memory/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        ),
    ],
)
def test_oom_kills_are_read_from_the_cgroup(
    tmp_path: Path, cgroup: str, file: str, content: str
) -> None:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    assert oom_kills(proc, root) is None  # no counter to read
    (root / file).parent.mkdir(parents=True, exist_ok=True)
    (root / file).write_text(content)
    assert oom_kills(proc, root) == 2


def test_a_sigkill_says_whether_the_oom_killer_sent_it() -> None:
    assert "out-of-memory killer stopped it" in _sigkill_cause(0, 1)
    assert "--ray-max-worker-memory" in _sigkill_cause(0, 1)
    unknown = _sigkill_cause(None, None)
    assert "not sent by the orchestrator" in unknown and "--ray-max-worker-memory" in unknown


LEAKY = """
import os, pytest

HELD = []

def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

@pytest.fixture(scope="module")
def model():
    with open(f"fixtures-{os.getpid()}.log", "a") as f:
        f.write("up\\n")
    yield
    with open(f"fixtures-{os.getpid()}.log", "a") as f:
        f.write("down\\n")

@pytest.mark.parametrize("i", range(16))
def test_leaks_80mb(i, model):
    HELD.append(b"\\x01" * 80_000_000)
    held = resident()
    with open("resident.log", "a") as f:
        f.write(f"{held}\\n")
    assert held < 900_000_000
"""


@pytest.mark.ray_cluster
def test_a_leaky_suite_passes_with_its_workers_recycled(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makepyfile(test_leaky=LEAKY)
    result = pytester.runpytest_subprocess(
        "--ray",
        "--ray-workers=2",
        "--ray-max-worker-memory=500MB",
        "--report-json=r.json",
        "--report-html=r.html",
        "-p",
        "no:randomly",
        timeout=240,
    )
    result.assert_outcomes(passed=16)
    peaks = [int(line) for line in (pytester.path / "resident.log").read_text().split()]
    assert len(peaks) == 16 and max(peaks) < 900 * MB
    result.stdout.fnmatch_lines(
        [
            "workers recycled (*), each replaced by a fresh one:",
            "  gw*: *MB resident after * tests, over the limit of 500MB",
        ]
    )
    report = json.loads((pytester.path / "r.json").read_text())
    assert len(report["recycled_workers"]) >= 2
    assert "Workers replaced" in (pytester.path / "r.html").read_text()
    # Each worker process tore its module fixture down before it went.
    for log in pytester.path.glob("fixtures-*.log"):
        assert log.read_text().split() == ["up", "down"], log.name
    assert len(list(pytester.path.glob("fixtures-*.log"))) >= 3
