"""Recycling workers: when a worker's test process is replaced by a fresh one, and why.

Suites that keep models, tensors or caches alive grow a long-lived worker until the kernel
kills it. With a limit (``--ray-max-worker-memory``, ``--ray-max-tests-per-worker``), a
worker checks itself when a test's call ends, before its teardown: over the limit, that
test's teardown tears every fixture down (as at the end of a session), the worker hands
back the tests it held and ends, and the controller starts a fresh one in its place.

The memory counted is the resident memory of the test process and of every process it
started (Linux ``/proc``; elsewhere psutil when it is installed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.scheduling.resources import format_memory, parse_memory


@dataclass(frozen=True)
class RecyclePolicy:
    """Replace a worker after ``max_tests`` tests, or once it holds more than
    ``max_memory`` bytes resident (None: no such limit)."""

    max_memory: int | None = None
    max_tests: int | None = None

    @property
    def enabled(self) -> bool:
        return self.max_memory is not None or self.max_tests is not None

    def as_message(self) -> dict[str, int]:
        """What a worker's init message carries (only the limits that are set)."""
        out = {}
        if self.max_memory is not None:
            out["memory"] = self.max_memory
        if self.max_tests is not None:
            out["tests"] = self.max_tests
        return out

    @classmethod
    def from_message(cls, data: Mapping[str, Any] | None) -> RecyclePolicy:
        data = data or {}
        return cls(data.get("memory"), data.get("tests"))

    def reason(self, tests_run: int, resident: Callable[[], int]) -> str | None:
        """Why a worker that has run ``tests_run`` tests should be replaced now, or None.
        ``resident`` is called only when there is a memory limit."""
        if self.max_tests is not None and tests_run >= self.max_tests:
            return f"ran {tests_run} tests, the most per worker"
        if self.max_memory is not None:
            held = resident()
            if held > self.max_memory:
                return (
                    f"{_size(held, self.max_memory)} resident after {tests_run} tests, over "
                    f"the limit of {_size(self.max_memory, self.max_memory)}"
                )
        return None


def _size(value: int, like: int) -> str:
    """``value`` in decimal units when ``like`` was given in them (500MB), else binary."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6)):
        if like % scale == 0:
            return f"{value / scale:.0f}{unit}" if value >= scale else f"{value}B"
    return format_memory(value)


def parse_max_memory(value: object, where: str = "--ray-max-worker-memory") -> int | None:
    """A size such as ``500MB`` or ``2GiB``, as the ``resources`` marker takes them;
    None for no value (or ``0``, no limit)."""
    if value is None or value == "" or value == 0 or value == "0":
        return None
    size = parse_memory(value, where)
    if size < 1024 * 1024:
        raise UsageError(
            f"{where}: {value!r} is less than a mebibyte, smaller than any Python process; "
            "give a size such as 500MB or 2GiB"
        )
    return size


def parse_max_tests(value: object, where: str = "--ray-max-tests-per-worker") -> int | None:
    """A positive whole number; None for no value (or ``0``, no limit)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UsageError(f"{where}: expected a whole number of tests, got {value!r}")
    try:
        count = int(value)
    except ValueError:
        raise UsageError(f"{where}: expected a whole number of tests, got {value!r}") from None
    if count < 0:
        raise UsageError(f"{where}: must be 1 or more (0: no limit), got {count}")
    return count or None


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes(pid: int | None = None, proc: Path = Path("/proc")) -> int:
    """Resident memory of process ``pid`` (default: this one) and all its descendants."""
    root = os.getpid() if pid is None else pid
    if not (proc / str(root)).is_dir():
        return _resident_psutil(root)
    total = 0
    stack = [root]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            fields = (proc / str(current) / "statm").read_text().split()
            total += int(fields[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        stack.extend(_children(proc, current))
    return total


def _children(proc: Path, pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list((proc / str(pid) / "task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return out


def _resident_psutil(pid: int) -> int:
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        raise UsageError(
            "--ray-max-worker-memory measures memory through /proc, which this system "
            "lacks: install psutil, or use --ray-max-tests-per-worker instead"
        ) from None
    process = psutil.Process(pid)
    total = int(process.memory_info().rss)
    for child in process.children(recursive=True):
        try:
            total += int(child.memory_info().rss)
        except psutil.Error:
            continue
    return total


def oom_kills(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """How many processes the kernel's out-of-memory killer has stopped in this process's
    memory cgroup (v2 ``memory.events``, v1 ``memory.oom_control``), or None where that
    cannot be read."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    candidates: list[Path] = []
    for line in lines:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        relative = path.lstrip("/")
        if number == "0" and not controllers:
            candidates += [cgroup_root / relative / "memory.events", cgroup_root / "memory.events"]
        elif "memory" in controllers.split(","):
            v1 = cgroup_root / "memory"
            candidates += [v1 / relative / "memory.oom_control", v1 / "memory.oom_control"]
    for candidate in candidates:  # in a container the cgroup's own path may not be there
        try:
            rows = candidate.read_text().splitlines()
        except OSError:
            continue
        for row in rows:
            name, _, count = row.partition(" ")
            if name == "oom_kill" and count.strip().isdigit():
                return int(count)
    return None
