"""Run one benchmark command (one or several concurrent processes) and read what it left."""

from __future__ import annotations

import os
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PROBE_DIR = Path(__file__).resolve().parent / "probe"
PROBE_MODULE = "orchestrator_bench_probe"
PROBE_DIR_ENV = "BENCH_FIRST_TEST_DIR"  # the probe module's DIRECTORY_ENV

# pytest's exit codes for "ran, some tests failed" and "ran, all passed".
_RAN = (0, 1)


@dataclass(frozen=True)
class Measurement:
    """One timed run: its wall time, when its first test started, and its JUnit reports."""

    wall: float
    startup: float | None  # command start to the first test's setup in any process
    returncode: int
    junits: tuple[Path, ...]
    log_tail: str

    @property
    def ok(self) -> bool:
        return self.returncode in _RAN


def probe_env(base: Mapping[str, str], first_test_dir: Path) -> dict[str, str]:
    """``base`` plus what loads the first-test probe into every pytest process."""
    env = dict(base)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(PROBE_DIR) + (os.pathsep + path if path else "")
    plugins = env.get("PYTEST_PLUGINS")
    env["PYTEST_PLUGINS"] = PROBE_MODULE + ("," + plugins if plugins else "")
    env[PROBE_DIR_ENV] = str(first_test_dir)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def run_concurrently(
    commands: Sequence[Sequence[str]],
    *,
    cwd: Path,
    env: Mapping[str, str],
    run_dir: Path,
    junits: Sequence[Path],
    timeout: float,
) -> Measurement:
    """Start every command at once; the wall time ends when the last one exits.

    Output goes to ``run_dir/log-<i>.txt``; the probe writes into ``run_dir/first-test``.
    """
    first_test_dir = run_dir / "first-test"
    first_test_dir.mkdir(parents=True)
    full_env = probe_env(env, first_test_dir)
    logs = [run_dir / f"log-{i}.txt" for i in range(len(commands))]
    started_at = time.time()
    start = time.perf_counter()
    procs = []
    for command, log in zip(commands, logs, strict=True):
        with log.open("w") as out:
            procs.append(
                subprocess.Popen(
                    list(command), cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT
                )
            )
    deadline = start + timeout
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(max(1.0, deadline - time.perf_counter())))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    wall = time.perf_counter() - start
    stamps = [float(p.read_text()) for p in first_test_dir.iterdir() if p.read_text()]
    startup = min(stamps) - started_at if stamps else None
    failed = [c for c in codes if c not in _RAN]
    tail = "".join(log.read_text()[-3000:] for log in logs)
    return Measurement(
        wall=wall,
        startup=startup,
        returncode=max(failed or codes),
        junits=tuple(j for j in junits if j.exists()),
        log_tail=tail,
    )


def durations_by_test(junits: Sequence[Path]) -> dict[str, float]:
    """Each test's time (setup + call + teardown, pytest's default) by JUnit identity."""
    times: dict[str, float] = {}
    for junit in junits:
        for case in ET.parse(junit).getroot().iter("testcase"):
            key = _key(case)
            times[key] = times.get(key, 0.0) + float(case.get("time") or 0.0)
    return times


def outcomes(junits: Sequence[Path]) -> dict[str, str]:
    """Each test's outcome by JUnit identity; several entries for one test are joined."""
    found: dict[str, set[str]] = {}
    for junit in junits:
        for case in ET.parse(junit).getroot().iter("testcase"):
            found.setdefault(_key(case), set()).add(_outcome(case))
    return {key: "+".join(sorted(values)) for key, values in found.items()}


def differences(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """Tests whose outcome differs, including tests that ran in only one of the runs."""
    keys = sorted(set(expected) | set(actual))
    return [
        f"{key}: {expected.get(key, 'not run')} -> {actual.get(key, 'not run')}"
        for key in keys
        if expected.get(key) != actual.get(key)
    ]


def _key(case: ET.Element) -> str:
    return f"{case.get('classname', '')}::{case.get('name', '')}"


def _outcome(case: ET.Element) -> str:
    for tag, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        element = case.find(tag)
        if element is not None:
            if tag == "skipped" and element.get("type") == "pytest.xfail":
                return "xfailed"
            return outcome
    return "passed"
