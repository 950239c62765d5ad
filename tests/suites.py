"""Test suites the acceptance tests run, serially and on Ray, as pytester file contents."""

import xml.etree.ElementTree as ET
from pathlib import Path

OUTCOMES = {
    "test_outcomes.py": r"""
import sys
import unittest

import pytest


def test_passes():
    pass


def test_fails():
    print("stdout of a failing test")
    print("stderr of a failing test", file=sys.stderr)
    assert 1 + 1 == 3


@pytest.fixture
def talks_at_teardown():
    yield
    print("said at teardown")


def test_fails_and_talks_at_teardown(talks_at_teardown):
    assert 2 + 2 == 5


@pytest.fixture
def broken_setup():
    raise RuntimeError("setup went wrong")


def test_setup_error(broken_setup):
    pass


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown went wrong")


def test_teardown_error(broken_teardown):
    pass


@pytest.mark.skip(reason="skipped by marker")
def test_skip_marker():
    pass


def test_skip_runtime():
    pytest.skip("skipped at runtime")


class TestUnittest(unittest.TestCase):
    @unittest.skip("unittest skip")
    def test_skipped(self):
        pass

    def test_ok(self):
        self.assertEqual(2, 2)


@pytest.mark.xfail(reason="known bug")
def test_xfailed():
    assert False


@pytest.mark.xfail(reason="fixed already", strict=False)
def test_xpassed():
    pass


@pytest.mark.xfail(reason="strict", strict=True)
def test_xpassed_strict():
    pass


@pytest.mark.parametrize(
    "value",
    ["with space", "[brackets]", "a::b", "ünïcødé", "日本"],
)
def test_ids(value):
    assert value


@pytest.mark.slow
def test_marked_slow():
    pass
""",
    "conftest.py": r"""
def pytest_configure(config):
    config.addinivalue_line("markers", "slow: slow tests")
""",
}

#: A conftest hook that records every report the *controller* sees, as JSON lines.
RECORDER = r"""
import json
import os


def pytest_runtest_logreport(report):
    path = os.environ.get("OUTCOMES_FILE")
    # Worker processes see the reports first; only the controller's view counts here.
    if not path or os.environ.get("ORCHESTRATOR_WORKER_FDS"):
        return
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps([report.nodeid, report.when, report.outcome,
                             bool(getattr(report, "wasxfail", None) is not None)]) + "\n")
"""


def junit_cases(path: Path) -> dict[tuple[str, str], str]:
    """A JUnit report's test cases, (classname, name), with their outcome."""
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        cases[(case.get("classname", ""), case.get("name", ""))] = ",".join(kinds) or "passed"
    return cases


def junit_case_contents(path: Path) -> dict[tuple[str, str], str]:
    """A JUnit report's test cases, (classname, name), with everything pytest wrote of
    each but its time: attributes, failures, skips, captured output."""
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        case.attrib.pop("time", None)
        cases[(case.get("classname", ""), case.get("name", ""))] = ET.tostring(
            case, encoding="unicode"
        )
    return cases
