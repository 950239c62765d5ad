"""Fault injection: flaky, failing, crashing, hanging and interrupted tests on the shared cluster.

Every run is checked against the invariant: each collected test ends with exactly one final
outcome, in the terminal and in the JUnit file. The tests check outcomes, and bound a hang
with a timeout; how long each fault takes to settle is measured by `benchmarks/faults.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import xmlschema

from orchestrator.reports.junit import RETRY_ELEMENTS
from tests.test_acceptance import _cluster_processes

pytestmark = pytest.mark.ray_cluster

FLAKY = """
import os, pytest
from pathlib import Path

def attempt(name):
    marker = Path(os.environ["STATE_DIR"]) / name
    n = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(n))
    with open(Path(os.environ["STATE_DIR"]) / (name + ".workers"), "a") as fh:
        fh.write(os.environ["ORCHESTRATOR_WORKER"] + "\\n")
    return n
"""


def _junit(path: Path) -> list[ET.Element]:
    return list(ET.parse(path).getroot().iter("testcase"))


def _validate_without_retry_elements(path: Path, schema: Path, tmp: Path) -> None:
    tree = ET.parse(path)
    for case in tree.getroot().iter("testcase"):
        for child in list(case):
            if child.tag in RETRY_ELEMENTS:
                case.remove(child)
    stripped = tmp / "stripped.xml"
    tree.write(stripped, encoding="utf-8", xml_declaration=True)
    xmlschema.validate(str(stripped), str(schema))


def _one_verdict_each(path: Path, expected: int) -> None:
    names = Counter(f"{c.get('classname')}::{c.get('name')}" for c in _junit(path))
    assert len(names) == expected, names
    assert set(names.values()) == {1}, names


@pytest.fixture
def state(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = pytester.path / "state"
    path.mkdir()
    monkeypatch.setenv("STATE_DIR", str(path))
    return path


def test_flaky_test_passes_on_another_worker(
    pytester: pytest.Pytester, on_cluster: str, state: Path, junit_schema: Path
) -> None:
    pytester.makepyfile(
        test_flaky=FLAKY
        + """
def test_flaky():
    print("attempt output")
    assert attempt("flaky") > 1, "first attempt fails"

@pytest.mark.parametrize("i", range(4))
def test_steady(i):
    pass
"""
    )
    result = pytester.runpytest_subprocess(
        "--ray", "--ray-workers", "2", "--ray-retries", "2", "--junitxml=r.xml", timeout=240
    )
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        [
            "flaky tests (passed on a retry; counted passed):",
            "  test_flaky.py::test_flaky (passed on attempt 2)",
        ]
    )
    workers = (state / "flaky.workers").read_text().split()
    assert len(workers) == 2 and workers[0] != workers[1]
    _one_verdict_each(pytester.path / "r.xml", 5)
    (case,) = [c for c in _junit(pytester.path / "r.xml") if c.get("name") == "test_flaky"]
    (flaky,) = case.findall("flakyFailure")
    assert flaky.get("type") == "AssertionError"
    assert "first attempt fails" in flaky.findtext("stackTrace", "")
    assert "attempt output" in flaky.findtext("system-out", "")
    assert case.find("failure") is None
    _validate_without_retry_elements(pytester.path / "r.xml", junit_schema, pytester.path)


def test_fail_on_flaky(pytester: pytest.Pytester, on_cluster: str, state: Path) -> None:
    pytester.makepyfile(test_flaky=FLAKY + "\ndef test_flaky():\n    assert attempt('f') > 1\n")
    result = pytester.runpytest_subprocess(
        "--ray", "--ray-retries", "1", "--ray-fail-on-flaky", timeout=240
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["flaky tests (passed on a retry; they fail the run*"])


def test_always_failing_test_has_one_verdict_and_its_reruns(
    pytester: pytest.Pytester, on_cluster: str, state: Path, junit_schema: Path
) -> None:
    pytester.makepyfile(
        test_fail=FLAKY
        + """
def test_always():
    attempt("always")
    assert False, "broken for good"
"""
    )
    result = pytester.runpytest_subprocess(
        "--ray", "--ray-workers", "2", "--ray-retries", "2", "--junitxml=r.xml", timeout=240
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    assert (state / "always").read_text() == "3"
    result.stdout.fnmatch_lines(
        ["failed on every attempt:", "  test_fail.py::test_always (3 attempts)"]
    )
    (case,) = _junit(pytester.path / "r.xml")
    tags = [child.tag for child in case]
    assert tags.index("failure") < tags.index("rerunFailure")
    assert tags.count("rerunFailure") == 2
    _validate_without_retry_elements(pytester.path / "r.xml", junit_schema, pytester.path)


def test_retry_only_matching_errors_and_marker(
    pytester: pytest.Pytester, on_cluster: str, state: Path
) -> None:
    pytester.makepyfile(
        test_select=FLAKY
        + """
def test_transient():
    if attempt("transient") < 2:
        raise ConnectionError("connection reset by peer")

def test_real_bug():
    attempt("bug")
    assert 1 == 2

@pytest.mark.retries(3)
def test_marked():
    if attempt("marked") < 4:
        raise ConnectionError("still down")
"""
    )
    result = pytester.runpytest_subprocess(
        "--ray", "--ray-retries", "1", "--ray-retry-only", "ConnectionError", timeout=240
    )
    result.assert_outcomes(passed=2, failed=1)
    assert (state / "transient").read_text() == "2"
    assert (state / "bug").read_text() == "1"  # an assertion is not transient: no retry
    assert (state / "marked").read_text() == "4"  # the marker's own count


def test_crashes_are_named_retried_and_capped(
    pytester: pytest.Pytester, on_cluster: str, state: Path, junit_schema: Path
) -> None:
    pytester.makepyfile(
        test_crash=FLAKY
        + """
import ctypes

def test_exit_once():
    if attempt("exit") == 1:
        os._exit(3)

def test_segfault():
    attempt("segv")
    ctypes.string_at(0)

@pytest.mark.parametrize("i", range(3))
def test_fine(i):
    pass
"""
    )
    result = pytester.runpytest_subprocess(
        "--ray", "--ray-workers", "2", "--ray-retries", "1", "--junitxml=r.xml", timeout=240
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        ["*worker gw* crashed while running test_crash.py::test_segfault (signal 11 (SIGSEGV))*"]
    )
    result.stdout.fnmatch_lines(["*Fatal Python error: Segmentation fault*"])
    assert (state / "segv").read_text() == "2"
    cases = {c.get("name"): c for c in _junit(pytester.path / "r.xml")}
    assert cases["test_exit_once"].find("flakyError") is not None
    assert cases["test_segfault"].find("error") is not None
    assert cases["test_segfault"].find("rerunError").get("type") == "WorkerCrash"
    _one_verdict_each(pytester.path / "r.xml", 5)
    _validate_without_retry_elements(pytester.path / "r.xml", junit_schema, pytester.path)


def test_every_test_crashing_gets_its_own_verdict(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makepyfile(
        test_doom="""
        import os, pytest
        @pytest.mark.parametrize("i", range(12))
        def test_dies(i):
            os._exit(1)
        """
    )
    result = pytester.runpytest_subprocess(
        "--ray", "--ray-workers", "2", "--junitxml=r.xml", timeout=240
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(errors=12)
    # Each crash is its test's: every test ran, none is "not run".
    for i in range(12):
        result.stdout.fnmatch_lines(
            [f"*worker gw* crashed while running test_doom.py::test_dies[[]{i}[]] (exit code 1)*"]
        )
    assert "not run" not in result.stdout.str()
    _one_verdict_each(pytester.path / "r.xml", 12)


def test_a_few_crashes_and_hangs_cost_no_healthy_test_its_run(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makepyfile(
        test_faults="""
        import ctypes, os, re, time, pytest

        @pytest.mark.parametrize("i", range(20))
        def test_healthy(i):
            pass

        def test_exits():
            os._exit(3)

        def test_segfaults():
            ctypes.string_at(0)

        def test_hangs_in_python():
            time.sleep(600)

        def test_hangs_in_c():
            re.match(r"(a+)+$", "a" * 64 + "b")
        """
    )
    result = pytester.runpytest_subprocess(
        "--ray", "--ray-workers", "2", "--ray-retries", "1", "--ray-timeout", "2", timeout=240
    )
    result.assert_outcomes(passed=20, errors=4)
    assert "not run" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*test_hangs_in_c timed out after 2 s*"])
    result.stdout.fnmatch_lines(["*crashed while running test_faults.py::test_segfaults*"])


def test_hard_timeouts_in_python_and_in_c(pytester: pytest.Pytester, on_cluster: str) -> None:
    pytester.makepyfile(
        test_hang="""
        import re, time, pytest

        def test_sleeps_forever():
            time.sleep(600)

        @pytest.mark.timeout(2)
        def test_catastrophic_regex():
            re.match(r"(a+)+$", "a" * 64 + "b")  # never returns to Python

        @pytest.mark.parametrize("i", range(4))
        def test_quick(i):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "--ray", "--ray-workers", "2", "--ray-timeout", "3", timeout=240
    )
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        ["*test_hang.py::test_sleeps_forever timed out after 3 s; worker gw* was stopped*"]
    )
    result.stdout.fnmatch_lines(
        ["*test_hang.py::test_catastrophic_regex timed out after 2 s; worker gw* was stopped*"]
    )


@pytest.mark.parametrize(
    "interrupt",
    [
        pytest.param(lambda proc: proc.send_signal(signal.SIGTERM), id="SIGTERM"),
        # What a terminal's Ctrl-C does: SIGINT to every process of the foreground group,
        # the Ray processes the run started included.
        pytest.param(lambda proc: os.killpg(proc.pid, signal.SIGINT), id="ctrl-c"),
    ],
)
def test_interrupt_keeps_finished_results_and_cleans_up(
    pytester: pytest.Pytester, interrupt: Callable[[subprocess.Popen[str]], None]
) -> None:
    pytester.makepyfile(
        test_slow="""
        import time, pytest
        @pytest.mark.parametrize("i", range(40))
        def test_slow(i):
            time.sleep(0.5)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "--ray",
            "--ray-workers",
            "2",
            "--junitxml=r.xml",
            "-p",
            "no:cacheprovider",
        ],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    try:
        assert proc.stdout is not None
        seen = ""
        while "." * 4 not in seen:  # a few tests have finished
            char = proc.stdout.read(1)
            assert char, seen
            seen += char
        assert _cluster_processes(pytester.path)  # the check below can see them
        interrupt(proc)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, seen + out
    assert "KeyboardInterrupt" in out
    assert "orchestrator summary" in out
    finished = _junit(pytester.path / "r.xml")
    assert 4 <= len(finished) < 40
    assert all(case.find("failure") is None and case.find("error") is None for case in finished)
    time.sleep(1)
    assert not _cluster_processes(pytester.path)


def test_importing_a_test_file_does_not_count_against_its_first_test_timeout(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    # The workers import the file when they are given its first test, and take longer
    # than the timeout to do it (the controller, which imports it first, does not wait).
    pytester.makepyfile(
        test_slow_import="""
        import os, time
        if os.environ.get("ORCHESTRATOR_WORKER"):
            time.sleep(4)

        def test_quick():
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "--ray", "--ray-workers", "1", "--ray-timeout", "2", timeout=240
    )
    result.assert_outcomes(passed=1)


def test_a_store_that_cannot_be_written_is_named_and_the_run_stands(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    (pytester.path / "not-a-dir").write_text("a file where the store's directory should be")
    result = pytester.runpytest_subprocess(
        "--ray", "--ray-durations=not-a-dir/durations.db", "--junitxml=r.xml", timeout=240
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*could not save durations to *not-a-dir?durations.db*"])
    assert [case.get("name") for case in _junit(pytester.path / "r.xml")] == ["test_x"]


def test_bad_options_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    for args, message in [
        (["--ray-retries", "-1"], "*--ray-retries must be 0 or more*"),
        (["--ray-timeout", "soon"], "*--ray-timeout expects seconds*"),
        (["--ray-retry-only", "(unclosed"], "*--ray-retry-only '(unclosed' is not a valid*"),
    ]:
        result = pytester.runpytest_subprocess("--ray", *args, timeout=120)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([message])


def test_broken_environment_is_reported_once(pytester: pytest.Pytester, on_cluster: str) -> None:
    pytester.makepyfile(
        test_ok="def test_ok(): pass",
        test_broken="import no_such_module_here\n\ndef test_never(): pass",
    )
    store = pytester.path / "store.db"
    store.write_bytes(b"garbage" * 200)
    result = pytester.runpytest_subprocess(
        "--ray", "--continue-on-collection-errors", "--ray-durations", str(store), timeout=240
    )
    result.assert_outcomes(passed=1, errors=1)
    assert (
        result.stdout.str().count("ModuleNotFoundError: No module named 'no_such_module_here'") == 1
    )
    result.stdout.fnmatch_lines(["*duration store * is unreadable*starting a new one*"])
    # And without --continue-on-collection-errors: pytest's own interruption, no workers.
    result = pytester.runpytest_subprocess("--ray", timeout=240)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*Interrupted: 1 error during collection*"])


def test_wrong_port_fails_fast_naming_the_address(pytester: pytest.Pytester) -> None:
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_subprocess("--ray", "--ray-address", address, timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {address} answers, but not as a Ray cluster*"])
    listener.close()
