"""The plugins people run with pytest, under ``--ray``: each alone and all together.

Each case runs one small project serially and on the shared cluster and compares every
test's verdict (the JUnit report) and the plugin's own effect. "Alone" blocks the other
plugins of the matrix (and pytest-xdist, as if it were not installed) with ``-p no:``;
"together" runs with every one of them loaded, pytest-xdist included.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import pytest

from tests.suites import junit_cases

pytestmark = pytest.mark.ray_cluster

#: The plugins of the matrix, by the names pytest registers them under.
PLUGINS = {
    "cov": ("pytest_cov",),
    "randomly": ("randomly",),
    "rerunfailures": ("rerunfailures",),
    "asyncio": ("asyncio",),
    "mock": ("pytest_mock",),
    "timeout": ("timeout",),
    "html": ("html", "html_fixtures"),
    "benchmark": ("benchmark",),
    "hypothesis": ("hypothesispytest",),
    "django": ("django",),
    "xdist": ("xdist", "xdist.looponfail"),
}

PROJECT = {
    "pkg/__init__.py": """
        def add(a, b):
            return a + b


        def clip(value, low, high):
            if value < low:
                return low
            if value > high:
                return high
            return value


        def never_called():
            return "not covered"
    """,
    "tests/__init__.py": "",
    "tests/test_app.py": """
        import pytest

        import pkg


        @pytest.mark.parametrize("a, b", [(1, 2), (3, 4), (5, 6)])
        def test_add(a, b):
            assert pkg.add(a, b) == a + b


        def test_clip_low():
            assert pkg.clip(-1, 0, 10) == 0


        def test_clip_high():
            assert pkg.clip(11, 0, 10) == 10


        def test_fails():
            assert pkg.add(1, 1) == 3


        @pytest.mark.skip(reason="not today")
        def test_skipped():
            pass


        @pytest.mark.xfail(reason="known")
        def test_xfails():
            assert False
    """,
    "tests/test_random.py": """
        import json
        import os
        import random

        import pytest


        @pytest.mark.parametrize("n", range(6))
        def test_draw(n, request):
            # What the test saw of the random state pytest-randomly seeds per test.
            path = os.path.join(os.environ["DRAWS_DIR"], request.node.name + ".json")
            with open(path, "w") as fh:
                json.dump(random.random(), fh)
    """,
    "tests/test_flaky.py": """
        import os

        import pytest


        def _attempt(name):
            path = os.path.join(os.environ["DRAWS_DIR"], "attempts-" + name)
            count = int(open(path).read()) + 1 if os.path.exists(path) else 1
            with open(path, "w") as fh:
                fh.write(str(count))
            return count


        @pytest.mark.flaky(reruns=2)
        def test_passes_on_second_try():
            assert _attempt("marked") >= 2


        def test_flaky_by_option(request):
            # Fails once; passes on a rerun given with --reruns.
            assert _attempt("option") >= 2
    """,
    "tests/test_async.py": """
        import asyncio

        import pytest
        import pytest_asyncio


        @pytest.mark.asyncio
        async def test_sleeps():
            await asyncio.sleep(0.01)
            assert True


        @pytest_asyncio.fixture
        async def value():
            await asyncio.sleep(0)
            return 42


        @pytest.mark.asyncio
        async def test_async_fixture(value):
            assert value == 42
    """,
    "tests/test_mock.py": """
        import os


        def test_mocker(mocker):
            mocker.patch("os.getcwd", return_value="/mocked")
            assert os.getcwd() == "/mocked"


        def test_spy(mocker):
            import pkg

            spy = mocker.spy(pkg, "add")
            assert pkg.add(2, 2) == 4
            assert spy.call_count == 1
    """,
    "tests/test_timeout.py": """
        import time

        import pytest


        @pytest.mark.timeout(1)
        def test_too_slow():
            time.sleep(20)


        def test_quick():
            time.sleep(0.01)
    """,
    "tests/test_bench.py": """
        import pkg


        def test_benchmarked(benchmark):
            assert benchmark(pkg.add, 1, 2) == 3
    """,
    "tests/test_hyp.py": """
        from hypothesis import given, settings, strategies as st

        import pkg


        @settings(max_examples=30, deadline=None)
        @given(st.integers(), st.integers(min_value=-5, max_value=0), st.integers(0, 5))
        def test_clip_stays_in_range(value, low, high):
            assert low <= pkg.clip(value, low, high) <= high


        @settings(max_examples=50, deadline=None)
        @given(st.integers())
        def test_a_property_that_does_not_hold(value):
            assert pkg.add(value, 1) < 100
    """,
}

DJANGO = {
    "djproject/__init__.py": "",
    "djproject/settings.py": """
        SECRET_KEY = "test"
        INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
        DATABASES = {
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": "db.sqlite3",
                "TEST": {"NAME": "test_db.sqlite3"},
            }
        }
        USE_TZ = True
    """,
    "djtests/__init__.py": "",
    "djtests/test_db.py": """
        import pytest
        from django.contrib.auth.models import User
        from django.db import connection


        @pytest.mark.parametrize("name", ["ada", "grace", "linus", "guido"])
        def test_user_is_saved(name, db, request):
            User.objects.create(username=name)
            assert User.objects.count() == 1
            # The test database of this process, for the test to compare.
            print("DATABASE", connection.settings_dict["NAME"])
    """,
}

#: The files of each plugin's case (the plain tests run in every case).
FILES = {
    "cov": ["tests/test_app.py"],
    "randomly": ["tests/test_app.py", "tests/test_random.py"],
    "rerunfailures": ["tests/test_app.py", "tests/test_flaky.py"],
    "asyncio": ["tests/test_app.py", "tests/test_async.py"],
    "mock": ["tests/test_app.py", "tests/test_mock.py"],
    "timeout": ["tests/test_app.py", "tests/test_timeout.py"],
    "html": ["tests/test_app.py"],
    "benchmark": ["tests/test_app.py", "tests/test_bench.py"],
    "hypothesis": ["tests/test_app.py", "tests/test_hyp.py"],
    "django": ["djtests"],
}

#: The arguments of each case, on top of the files.
ARGS = {
    "cov": [
        "--cov=pkg",
        "--cov-report=term",
        "--cov-report=xml:cov-{tag}.xml",
        "--cov-report=html:cov-{tag}",
        "--cov-fail-under=50",
    ],
    "randomly": ["-p", "randomly", "--randomly-seed=1234"],
    "rerunfailures": ["--reruns", "1"],
    "asyncio": [],
    "mock": [],
    "timeout": ["--timeout=60"],
    "html": ["--html=report-{tag}.html", "--self-contained-html"],
    "benchmark": [],
    "hypothesis": [],
    "django": ["--ds=djproject.settings", "-s"],
}


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    for name, text in {**PROJECT, **DJANGO}.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester.path


def _blocked(plugin: str, alone: bool) -> list[str]:
    """``-p no:`` for the other plugins of the matrix when ``alone``."""
    if not alone:
        return []
    names = [n for other, names in PLUGINS.items() if other != plugin for n in names]
    if plugin == "html":  # pytest-html needs pytest-metadata
        names = [n for n in names if n != "metadata"]
    return [arg for name in names for arg in ("-p", f"no:{name}")]


def _run(
    pytester: pytest.Pytester, plugin: str, alone: bool, tag: str, *extra: str
) -> pytest.RunResult:
    draws = pytester.path / f"draws-{tag}"
    draws.mkdir()
    args = [a.format(tag=tag) for a in ARGS[plugin]]
    os.environ["DRAWS_DIR"] = str(draws)
    addopts = os.environ.pop("PYTEST_ADDOPTS", None)  # every plugin of the matrix loads
    ci = os.environ.pop("CI", None)  # hypothesis' profile for CI has no example database
    try:
        return pytester.runpytest_subprocess(
            *FILES[plugin],
            *_blocked(plugin, alone),
            *args,
            f"--junitxml=junit-{tag}.xml",
            "-p",
            "no:cacheprovider",
            *extra,
            timeout=240,
        )
    finally:
        del os.environ["DRAWS_DIR"]
        if addopts is not None:
            os.environ["PYTEST_ADDOPTS"] = addopts
        if ci is not None:
            os.environ["CI"] = ci


def _pair(
    pytester: pytest.Pytester, plugin: str, alone: bool
) -> tuple[pytest.RunResult, pytest.RunResult]:
    """The case run serially, then under ``--ray``; the verdicts of both are the same."""
    serial = _run(pytester, plugin, alone, "serial")
    ray = _run(pytester, plugin, alone, "ray", "--ray", "--ray-workers", "2")
    cases = junit_cases(pytester.path / "junit-serial.xml")
    assert cases, serial.stdout.str()
    assert junit_cases(pytester.path / "junit-ray.xml") == cases, ray.stdout.str()
    assert ray.ret == serial.ret, ray.stdout.str() + ray.stderr.str()
    assert _counts(ray) == _counts(serial), ray.stdout.str()
    for text in (ray.stdout.str(), ray.stderr.str()):
        assert "INTERNALERROR" not in text and "see the errors above" not in text
    return serial, ray


def _counts(result: pytest.RunResult) -> dict[str, int]:
    counts = result.parseoutcomes()
    if "warning" in counts:
        counts["warnings"] = counts.pop("warning")
    return counts


def _cov_total(result: pytest.RunResult) -> str:
    match = re.search(r"^TOTAL\s+.*?(\d+%)$", result.stdout.str(), re.MULTILINE)
    assert match, result.stdout.str()
    return match.group(0)


BOTH = pytest.mark.parametrize("alone", [True, False], ids=["alone", "together"])


@BOTH
def test_cov_measures_the_workers_as_serial_pytest_does(
    pytester: pytest.Pytester, project: Path, on_cluster: str, alone: bool
) -> None:
    serial, ray = _pair(pytester, "cov", alone)
    assert _cov_total(ray) == _cov_total(serial)
    serial_xml = (project / "cov-serial.xml").read_text()
    ray_xml = (project / "cov-ray.xml").read_text()
    assert _line_rates(ray_xml) == _line_rates(serial_xml)
    assert (project / "cov-ray" / "index.html").exists()
    ray.stdout.fnmatch_lines(["*Required test coverage of 50% reached*"])
    assert "failed workers" not in ray.stdout.str()


def _line_rates(xml: str) -> list[tuple[str, str]]:
    return re.findall(
        r'<class name="([^"]+)" filename="[^"]+" complexity="[^"]+" '
        r'line-rate="([^"]+)"',
        xml,
    )


def test_cov_fail_under_fails_the_run_as_serial_pytest_does(
    pytester: pytest.Pytester, project: Path, on_cluster: str
) -> None:
    before = ARGS["cov"]
    ARGS["cov"] = ["--cov=pkg", "--cov-fail-under=99"]
    try:
        _serial, ray = _pair(pytester, "cov", True)
    finally:
        ARGS["cov"] = before
    ray.stdout.fnmatch_lines(["*FAIL Required test coverage of 99% not reached*"])


@BOTH
def test_randomly_gives_every_worker_the_runs_seed(
    pytester: pytest.Pytester, project: Path, on_cluster: str, alone: bool
) -> None:
    _serial, ray = _pair(pytester, "randomly", alone)
    assert ray.stdout.str().count("Using --randomly-seed=1234") == 1
    # Every test saw the random state pytest-randomly gives it in a serial run.
    assert _draws(project / "draws-ray") == _draws(project / "draws-serial")


def _draws(folder: Path) -> dict[str, float]:
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("test_draw*.json")}


@BOTH
def test_rerunfailures_reruns_on_the_worker_with_one_verdict(
    pytester: pytest.Pytester, project: Path, on_cluster: str, alone: bool
) -> None:
    serial, ray = _pair(pytester, "rerunfailures", alone)
    assert _counts(ray)["rerun"] == _counts(serial)["rerun"] >= 2


def test_rerunfailures_with_ray_retries_never_reruns_one_failure_twice(
    pytester: pytest.Pytester, project: Path, on_cluster: str
) -> None:
    ray = _run(pytester, "rerunfailures", True, "ray", "--ray", "--ray-retries", "2")
    # test_fails fails its rerun too: that is its verdict, not retried again on Ray.
    assert "failed on every attempt" not in ray.stdout.str()
    assert "attempts)" not in ray.stdout.str()
    ray.stdout.fnmatch_lines(["*1 failed*3 rerun*"])


@pytest.mark.parametrize("mode", ["strict", "auto"])
@BOTH
def test_asyncio_runs_coroutines_in_both_modes(
    pytester: pytest.Pytester, project: Path, on_cluster: str, alone: bool, mode: str
) -> None:
    ARGS["asyncio"] = ["--asyncio-mode", mode]
    try:
        _serial, ray = _pair(pytester, "asyncio", alone)
    finally:
        ARGS["asyncio"] = []
    assert _counts(ray)["passed"] == 7


@BOTH
def test_mock(pytester: pytest.Pytester, project: Path, on_cluster: str, alone: bool) -> None:
    _serial, ray = _pair(pytester, "mock", alone)
    assert _counts(ray)["passed"] == 7


@BOTH
def test_timeout_stops_the_test_in_its_worker(
    pytester: pytest.Pytester, project: Path, on_cluster: str, alone: bool
) -> None:
    _serial, ray = _pair(pytester, "timeout", alone)
    ray.stdout.fnmatch_lines(["*Failed: Timeout (>1.0s) from pytest-timeout*"])
    # pytest-timeout's own verdict, not the controller's backstop.
    assert "timed out after" not in ray.stdout.str()


@BOTH
def test_html_lists_every_test(
    pytester: pytest.Pytester, project: Path, on_cluster: str, alone: bool
) -> None:
    _pair(pytester, "html", alone)
    html = (project / "report-ray.html").read_text()
    for name in ("test_add[1-2]", "test_clip_low", "test_fails", "test_skipped", "test_xfails"):
        assert name in html
    rows = re.findall(r"&#34;result&#34;: &#34;(\w+)&#34;", html)
    serial_html = (project / "report-serial.html").read_text()
    serial_rows = re.findall(r"&#34;result&#34;: &#34;(\w+)&#34;", serial_html)
    assert sorted(rows) == sorted(serial_rows) and rows


@BOTH
def test_benchmark_runs_as_under_xdist(
    pytester: pytest.Pytester, project: Path, on_cluster: str, alone: bool
) -> None:
    serial, ray = _pair(pytester, "benchmark", alone)
    # As on pytest-xdist's workers: the benchmarked function runs, without timing rounds.
    assert "benchmark: 1 tests" in serial.stdout.str()
    assert "benchmark: 1 tests" not in ray.stdout.str()


@BOTH
def test_hypothesis_shares_its_example_database(
    pytester: pytest.Pytester, project: Path, on_cluster: str, alone: bool
) -> None:
    _serial, ray = _pair(pytester, "hypothesis", alone)
    # The failing example was shrunk and saved where a serial run saves it.
    ray.stdout.fnmatch_lines(["*value=99,*"])
    assert (project / ".hypothesis" / "examples").is_dir()


@BOTH
def test_django_gives_each_worker_its_own_test_database(
    pytester: pytest.Pytester, project: Path, on_cluster: str, alone: bool
) -> None:
    serial, ray = _pair(pytester, "django", alone)
    assert set(re.findall(r"DATABASE (\S+)", serial.stdout.str())) == {"test_db.sqlite3"}
    names = set(re.findall(r"DATABASE (\S+)", ray.stdout.str()))
    assert names and names <= {"test_db.sqlite3_gw0", "test_db.sqlite3_gw1"}, names
