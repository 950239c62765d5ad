"""Quarantine: the store, the commands, and runs with and without ``--ray``."""

from __future__ import annotations

import datetime as dt
import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.config import STORE_ENV
from orchestrator.errors import UsageError
from orchestrator.pipelines.flaky import Entry, RunOfTest
from orchestrator.reports.run_report import flake_series
from orchestrator.store.durations import DurationStore
from orchestrator.store.history import HistoryStore, TestResult
from orchestrator.store.quarantine import (
    QuarantineStore,
    export_entries,
    import_entries,
    with_streaks,
)

TODAY = dt.date.today()


# -- the store ---------------------------------------------------------------------------
def test_entries_are_added_kept_with_their_streaks_released_and_removed(tmp_path: Path) -> None:
    store = QuarantineStore(tmp_path / "s.db")
    assert store.entries() == []  # no store yet: nothing, and nothing created
    assert not store.path.exists()
    a = Entry("t.py::a", "#1", dt.date(2027, 1, 31))
    b = Entry("t.py::b", "#2")
    store.add([a, b])
    assert store.entries() == [a, b]
    store.apply([Entry("t.py::a", "#1", dt.date(2027, 1, 31), streak=3)], [(b, "passed 10")])
    assert store.entries() == [Entry("t.py::a", "#1", dt.date(2027, 1, 31), streak=3)]
    assert [(n, r, why) for n, r, _, why in store.released()] == [("t.py::b", "#2", "passed 10")]
    store.add([Entry("t.py::a", "#1, again")])  # a new reason; the streak stays
    assert store.entries() == [Entry("t.py::a", "#1, again", None, streak=3)]
    assert store.remove(["t.py::a", "t.py::zzz"]) == 1
    assert store.entries() == []


def test_pyproject_entries_take_the_stores_streak_and_stay_out_once_released() -> None:
    configured = [
        Entry("t.py::a", "#1", source="pyproject"),
        Entry("t.py::b", "#2", source="pyproject"),
    ]
    stored = [
        Entry("t.py::a", "#1", source="pyproject", streak=4),
        Entry("t.py::gone", "dropped from the file", source="pyproject", streak=1),
        Entry("t.py::c", "by hand"),
    ]
    released = {("t.py::b", "#2")}
    assert with_streaks(configured, stored, released) == [
        Entry("t.py::a", "#1", source="pyproject", streak=4),
        Entry("t.py::c", "by hand"),
    ]
    # Named again with another reason, it counts afresh.
    again = [Entry("t.py::b", "#2 came back", source="pyproject")]
    assert with_streaks(again, [], released) == again


def test_an_export_reads_back(tmp_path: Path) -> None:
    entries = [Entry("t.py::a", "#1", dt.date(2027, 1, 31)), Entry("t.py::b", "#2", None, "auto")]
    path = tmp_path / "q.json"
    path.write_text(export_entries(entries))
    assert import_entries(path) == entries


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{", "is not JSON"),
        ('{"tests": 3}', "has no list of tests"),
        ('{"tests": [{"reason": "x"}]}', "test 1 has no test id"),
        ('{"tests": [{"test": "t.py::a"}]}', r"test 1 \(t.py::a\) has no reason"),
        ('{"tests": [{"test": "a", "reason": "x", "until": "soon"}]}', "YYYY-MM-DD"),
    ],
)
def test_a_bad_import_file_says_what_is_wrong(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "q.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=match):
        import_entries(path)


def test_the_history_keeps_failure_messages_and_finds_flake_candidates(tmp_path: Path) -> None:
    history = HistoryStore(tmp_path / "s.db")
    history.record_run(
        [
            TestResult("t.py::a", "failed", 0.1, message="boom"),
            TestResult("t.py::b", "passed", 0.1),
        ],
        commit="c1",
    )
    history.record_run(
        [TestResult("t.py::a", "passed", 0.1), TestResult("t.py::b", "passed", 0.1)], commit="c1"
    )
    found = history.flake_candidates(10)
    assert found == {
        "t.py::a": [RunOfTest(1, "c1", "failed"), RunOfTest(2, "c1", "passed")],
    }
    assert history.failure_messages("t.py::a", {1, 2}) == ["boom"]
    assert history.failure_messages("t.py::a", {2}) == []


def test_the_flake_rate_over_time_is_a_rolling_share() -> None:
    assert flake_series([1, 2, 3, 4, 5, 6], [2, 6]) == [0.0, 0.5, 1 / 3, 0.25, 0.2, 0.4]


# -- the commands ------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORE_ENV, raising=False)
    (tmp_path / "pyproject.toml").write_text(
        "[tool.orchestrator.quarantine]\nrelease_after = 5\n"
        'tests = [{ test = "t.py::pinned", reason = "#9" }]\n'
    )
    return tmp_path


def test_quarantine_commands(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quarantine", "list"]) == 0
    assert "t.py::pinned" in capsys.readouterr().out
    assert (
        main(["quarantine", "add", "t.py::a", "--reason", "#12 races", "--until", "2099-01-01"])
        == 0
    )
    assert "quarantined t.py::a: #12 races, until 2099-01-01" in capsys.readouterr().out
    assert main(["quarantine", "list"]) == 0
    out = capsys.readouterr().out
    assert "2 quarantined test(s); each leaves after 5 clean passes in a row" in out
    assert "#12 races, until 2099-01-01  (manual; 0/5 clean passes)" in out
    assert main(["quarantine", "export", "q.json"]) == 0
    exported = json.loads((project / "q.json").read_text())
    assert [t["test"] for t in exported["tests"]] == ["t.py::pinned", "t.py::a"]
    assert main(["quarantine", "remove", "t.py::a"]) == 0
    assert main(["quarantine", "import", "q.json"]) == 0  # pyproject's own stay in the file
    assert [
        e.nodeid for e in QuarantineStore(project / ".orchestrator/durations.db").entries()
    ] == ["t.py::a"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["quarantine", "remove", "t.py::pinned"], "take it out of the file's tests list"),
        (["quarantine", "remove", "t.py::nothing"], "1 of the tests given are not quarantined"),
        (["quarantine", "add", "t.py::a", "--reason", " "], "give the reason"),
        (["quarantine", "add", "t.py::a", "--reason", "x", "--until", "2001-01-01"], "has passed"),
        (["quarantine", "add", "t.py::a", "--reason", "x", "--until", "May"], "YYYY-MM-DD"),
    ],
)
def test_quarantine_commands_refuse_what_they_cannot_do(
    project: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 4
    assert message in capsys.readouterr().err


def test_flaky_lists_rate_messages_and_commits(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["flaky"]) == 0
    assert "no runs recorded yet" in capsys.readouterr().out
    history = HistoryStore(project / ".orchestrator/durations.db")
    for outcome, flaky, message in [
        ("passed", True, "ConnectionResetError: reset"),
        ("passed", False, None),
        ("failed", False, "ConnectionResetError: reset"),
        ("passed", False, None),
    ]:
        history.record_run(
            [TestResult("t.py::net", outcome, 0.1, flaky=flaky, message=message)],
            commit="a" * 40,
        )
    assert main(["flaky"]) == 0
    out = capsys.readouterr().out
    assert "1 test(s) flaked in their last 20 runs" in out
    assert " 50% (2/4 runs)  last flake: run #3" in out
    assert "2x  ConnectionResetError: reset" in out
    assert "commits: flaked on 1 of the 1 seen (aaaaaaaa)" in out


# -- runs ----------------------------------------------------------------------------------
QUARANTINED = """
[tool.orchestrator.quarantine]
release_after = 2
tests = [{ test = "test_q.py::test_flaky", reason = "#12 races on CI" }]
"""
SUITE = """
import os

def test_flaky():
    assert os.environ.get("FLAKY_PASS") == "1", "the service answered 502"

def test_ok():
    pass
"""


def _cases(path: Path) -> dict[str, ET.Element]:
    return {c.get("name", ""): c for c in ET.parse(path).getroot().iter("testcase")}


def test_a_quarantined_failure_is_reported_and_does_not_fail_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyprojecttoml(QUARANTINED)
    pytester.makepyfile(test_q=SUITE)
    result = pytester.runpytest_subprocess("--junitxml=r.xml", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*= quarantine =*",
            "FAILED (quarantined: #12 races on CI) test_q.py::test_flaky",
            "1 failure(s) of quarantined tests did not fail the run*",
            "*1 failed, 1 passed*",
        ]
    )
    case = _cases(pytester.path / "r.xml")["test_flaky"]
    assert case.find("failure") is not None  # the evidence stays in the report
    assert {p.get("name"): p.get("value") for p in case.iter("property")} == {
        "quarantined": "#12 races on CI"
    }
    assert _cases(pytester.path / "r.xml")["test_ok"].find("properties") is None
    # -x does not stop at a quarantined test's failure: the rest of the suite runs.
    stop_first = pytester.runpytest_subprocess("-x", "-p", "no:cacheprovider")
    assert stop_first.ret == 0
    stop_first.stdout.fnmatch_lines(["*1 failed, 1 passed*"])
    for off in (["--quarantine", "off"], ["--ray-strict-quarantine"]):
        strict = pytester.runpytest_subprocess(*off, "-p", "no:cacheprovider")
        assert strict.ret == 1
        assert "= quarantine =" not in strict.stdout.str()
    # Two clean passes in a row release it, and the run says so; its next failure counts.
    monkeypatch.setenv("FLAKY_PASS", "1")
    assert pytester.runpytest_subprocess("-p", "no:cacheprovider").ret == 0
    released = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    released.stdout.fnmatch_lines(
        ["released: test_q.py::test_flaky: passed 2 runs in a row (remove it from pyproject.toml)"]
    )
    monkeypatch.delenv("FLAKY_PASS")
    assert pytester.runpytest_subprocess("-p", "no:cacheprovider").ret == 1


def test_a_failure_outside_the_quarantine_still_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(QUARANTINED)
    pytester.makepyfile(test_q=SUITE + "\ndef test_broken():\n    assert False\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["FAILED (quarantined: #12 races on CI) test_q.py::test_flaky"])
    assert "did not fail the run" not in result.stdout.str()


def test_with_ray_flaky_tests_are_quarantined_by_rate_and_excused(
    pytester: pytest.Pytester, on_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--ray: a test that fails on its first attempt and passes on the retry, run after
    run, reaches the threshold and is quarantined; then its failure does not fail the run."""
    pytester.makepyprojecttoml(
        "[tool.orchestrator.quarantine]\nauto = true\nthreshold = 0.5\nmin_flakes = 2\n"
    )
    pytester.makepyfile(
        test_f="""
        import os, pathlib

        def test_retried():
            marker = pathlib.Path(os.environ["MARK"])
            if not marker.exists():
                marker.write_text("x")
                raise ConnectionResetError("connection reset by peer")
            assert os.environ.get("BROKEN") != "1", "broken for good"

        def test_ok():
            pass
        """
    )
    args = ("--ray", "--ray-workers", "2", "--ray-retries", "1", "-p", "no:cacheprovider")
    for run in (1, 2):
        monkeypatch.setenv("MARK", str(pytester.path / f"mark{run}"))
        result = pytester.runpytest_subprocess(*args, timeout=240)
        assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["quarantined from the next run: test_f.py::test_retried: flaky in 2 of its last 2 runs*"]
    )
    monkeypatch.setenv("MARK", str(pytester.path / "mark3"))
    monkeypatch.setenv("BROKEN", "1")
    result = pytester.runpytest_subprocess(*args, "--report-html=r.html", timeout=240)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["FAILED (quarantined: flaky in 2 of its last 2 runs*"])
    assert 'id="flake-history"' in (pytester.path / "r.html").read_text()
    # --ray-fail-on-flaky: a quarantined test's flake is known and does not fail the run.
    monkeypatch.setenv("MARK", str(pytester.path / "mark4"))
    monkeypatch.delenv("BROKEN")
    result = pytester.runpytest_subprocess(*args, "--ray-fail-on-flaky", timeout=240)
    assert result.ret == 0, result.stdout.str()


def test_pyproject_quarantine_table_is_read_into_the_settings() -> None:
    from orchestrator.settings import settings_from_table

    settings = settings_from_table(
        {"quarantine": {"auto": True, "tests": [{"test": "t.py::a", "reason": "#1"}]}}, "p"
    )
    assert settings.flake_policy.auto
    assert settings.quarantine == (Entry("t.py::a", "#1", None, "pyproject"),)
    with pytest.raises(UsageError, match=r"p: \[tool.orchestrator.quarantine\]: unknown key"):
        settings_from_table({"quarantine": {"treshold": 0.2}}, "p")


def test_parallel_jobs_stores_merge_their_quarantine_changes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two --shard jobs start from one store; each runs some quarantined tests. Merging
    their stores keeps each test's newest streak and the release one of them made."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORE_ENV, raising=False)
    main_store = tmp_path / "main.db"
    a, b, c = Entry("t.py::a", "#1"), Entry("t.py::b", "#2"), Entry("t.py::c", "#3")
    DurationStore(main_store).record({"t.py::a": 1.0})  # what a run leaves
    QuarantineStore(main_store).add([a, b, c])
    jobs = [tmp_path / "job1.db", tmp_path / "job2.db"]
    for job in jobs:
        job.write_bytes(main_store.read_bytes())
    time.sleep(0.01)  # the jobs' changes come after the store they restored
    QuarantineStore(jobs[0]).apply([Entry("t.py::a", "#1", streak=1), c], [])
    QuarantineStore(jobs[1]).apply([b], [(c, "passed 10 runs in a row")])
    argv = ["durations", "merge", *map(str, jobs), "--store", str(main_store)]
    assert main(argv) == 0
    assert "quarantine: " in capsys.readouterr().out
    assert QuarantineStore(main_store).entries() == [Entry("t.py::a", "#1", streak=1), b]
    assert [r[0] for r in QuarantineStore(main_store).released()] == ["t.py::c"]
    # Merging again changes nothing.
    assert main(argv) == 0
    assert "quarantine: " not in capsys.readouterr().out
