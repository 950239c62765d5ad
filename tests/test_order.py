"""End to end: suites whose tests depend on pytest's order pass under --ray, run after run.

One suite holds the patterns real suites have without knowing it: a class that clears a
cache later tests fill, a parametrized module fixture, a class-scoped fixture, unittest's
``setUpClass``, a module whose first test sets state the others read, and a test file whose
import makes a submodule that another file's tests patch. It runs serially, then under
``--ray`` three times: without recorded durations, with them, and with a head start.
"""

from __future__ import annotations

from collections import Counter

import pytest

pytestmark = pytest.mark.ray_cluster

SETUPS_LOG = "setups.log"

CONFTEST = """
import os

import pytest


@pytest.fixture(autouse=True)
def _log_order(request):
    # Which worker ran which test, in order (shown when a run fails).
    with open(os.path.join(os.path.dirname(__file__), "order.log"), "a") as fh:
        worker = os.environ.get("ORCHESTRATOR_WORKER", "serial")
        fh.write(worker + " " + request.node.nodeid + "\\n")


def log_setup(what):
    # One line per set-up: which worker (or the serial run) built what.
    with open(os.path.join(os.path.dirname(__file__), "setups.log"), "a") as fh:
        fh.write(os.environ.get("ORCHESTRATOR_WORKER", "serial") + " " + what + "\\n")
"""

ORDER_SUITE = {
    "conftest.py": CONFTEST,
    # Serially the class runs first and each of its tests starts with an empty cache; the
    # tests after it are the slowest, so longest first alone would run them before it.
    "test_cache.py": """
import functools
import time

import pytest


@functools.lru_cache(maxsize=None)
def lookup(key):
    return key * 2


class TestClearsTheCache:
    def teardown_method(self):
        lookup.cache_clear()

    @pytest.mark.parametrize("key", range(3))
    def test_starts_empty(self, key):
        assert lookup.cache_info().currsize == 0
        lookup(key)


@pytest.mark.parametrize("key", range(6))
def test_fills_the_cache(key):
    time.sleep(0.1)
    lookup(key)
""",
    "test_models.py": """
import time

import pytest

from conftest import log_setup


@pytest.fixture(scope="module", params=["small", "large"])
def model(request):
    log_setup("model-" + request.param)
    return request.param


@pytest.mark.parametrize("case", range(25))
def test_scores(model, case):
    time.sleep(0.01 if model == "small" else 0.03)
    assert model in ("small", "large")
""",
    "test_classes.py": """
import time
import unittest

import pytest

from conftest import log_setup


class TestWithAClassFixture:
    @pytest.fixture(scope="class")
    @classmethod
    def service(cls):
        log_setup("service")
        return object()

    @pytest.mark.parametrize("i", range(8))
    def test_request(self, service, i):
        time.sleep(0.02 * (i % 3))


class TestUnittestClass(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        log_setup("setUpClass")
        cls.shared = []

    def test_a(self):
        time.sleep(0.05)

    def test_b(self):
        time.sleep(0.15)

    def test_c(self):
        time.sleep(0.01)
""",
    "test_state.py": """
STATE = {}


def test_first_sets_the_state():
    STATE["ready"] = True


def test_second_reads_it():
    assert STATE["ready"]


def test_third_reads_it():
    assert STATE["ready"]
""",
    "pkg/__init__.py": "",
    "pkg/_impl.py": "def value():\n    return 'real'\n",
    "test_uses_impl.py": "import pkg._impl\n\n\ndef test_real():\n    assert pkg._impl.value()\n",
    "test_patches.py": """
import time

import pkg


def test_patched(monkeypatch):
    time.sleep(0.3)
    monkeypatch.setattr(pkg._impl, "value", lambda: "patched")
    assert pkg._impl.value() == "patched"
""",
    "test_other.py": """
import time

import pytest


@pytest.mark.parametrize("i", range(20))
def test_work(i):
    time.sleep(0.02 * (i % 4))
""",
}

TESTS = 3 + 6 + 50 + 8 + 3 + 3 + 1 + 1 + 20


def _setups(pytester: pytest.Pytester) -> Counter[tuple[str, str]]:
    log = pytester.path / SETUPS_LOG
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return Counter(tuple(line.split(" ", 1)) for line in lines)  # type: ignore[misc]


def test_order_dependent_suite_passes_run_after_run(
    pytester: pytest.Pytester, on_cluster: str
) -> None:
    for name, text in ORDER_SUITE.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"))
    serial = pytester.runpytest_subprocess("-p", "no:randomly", timeout=240)
    serial.assert_outcomes(passed=TESTS)
    assert set(_setups(pytester).values()) == {1}
    (pytester.path / "order.log").unlink()
    runs = {
        "without durations": ("--ray-head-start", "off"),
        "with durations": (),  # no collection recorded yet: it records one
        "with a head start": (),
    }
    for what, extra in runs.items():
        result = pytester.runpytest_subprocess(
            "-p", "no:randomly", "--ray", "--ray-workers", "2", *extra, timeout=240
        )
        order = (pytester.path / "order.log").read_text()
        (pytester.path / "order.log").unlink()
        assert result.ret == 0, f"{what}:\n{result.stdout.str()}\n{order}"
        result.assert_outcomes(passed=TESTS)
        setups = _setups(pytester)
        # Each model, class fixture and setUpClass built at most once per worker.
        again = {key: count for key, count in setups.items() if count > 1}
        assert not again, f"{what}: set up more than once on one worker: {again}"
        assert {what for _, what in setups} == {
            "model-small",
            "model-large",
            "service",
            "setUpClass",
        }
        if what == "with a head start":
            result.stdout.fnmatch_lines(["orchestrator: head start: *"])


def test_fixture_groups_follow_classes_and_higher_scoped_parameters(
    pytester: pytest.Pytester,
) -> None:
    from pytest_orchestrator.groups import fixture_group

    from orchestrator.scheduling.planner import number_groups

    pytester.makepyfile(
        test_groups="""
        import pytest

        @pytest.fixture(scope="module", params=["small", "large"])
        def model(request):
            return request.param

        @pytest.mark.parametrize("case", range(3))
        def test_scores(model, case):
            pass

        class TestOne:
            def test_a(self):
                pass

            def test_b(self):
                pass

        def test_plain():
            pass
        """
    )
    items = pytester.getitems(pytester.path / "test_groups.py")
    groups = number_groups([fixture_group(item) for item in items])
    by_id = dict(zip((item.nodeid for item in items), groups, strict=True))
    # pytest runs each model's tests together; each model is a group of its own.
    small = {by_id[f"test_groups.py::test_scores[small-{c}]"] for c in range(3)}
    large = {by_id[f"test_groups.py::test_scores[large-{c}]"] for c in range(3)}
    assert len(small) == len(large) == 1 and small != large
    assert by_id["test_groups.py::TestOne::test_a"] == by_id["test_groups.py::TestOne::test_b"]
    assert by_id["test_groups.py::test_plain"] not in small | large
    assert by_id["test_groups.py::test_plain"] != by_id["test_groups.py::TestOne::test_a"]
