"""The command line: argument handling and the durations commands (``main(argv)``, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.config import STORE_ENV, find_project_root
from orchestrator.store.durations import DurationStore


def test_durations_import_and_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORE_ENV, raising=False)
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    (tmp_path / ".test_durations").write_text(json.dumps({"t.py::a": 3.0, "t.py::b": 1.0}))
    assert main(["durations", "import", ".test_durations"]) == 0
    out = capsys.readouterr().out
    assert "imported 2 test durations" in out
    store = tmp_path / ".orchestrator" / "durations.db"
    assert DurationStore(store).load() == {"t.py::a": 3.0, "t.py::b": 1.0}
    assert main(["durations", "show", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 tests" in out and "t.py::a" in out and "t.py::b" not in out


def test_import_of_a_bad_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "report.xml"
    bad.write_text("<testsuite><testcase name='x'")
    assert main(["durations", "import", str(bad), "--store", str(tmp_path / "s.db")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and str(bad) in err and "not well-formed" in err


def test_bad_worker_count_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--workers", "-3"]) == 4
    assert "--workers must be at least 1" in capsys.readouterr().err


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_durations_show_on_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["durations", "show", "--store", str(tmp_path / "none.db")]) == 0
    assert "no durations recorded" in capsys.readouterr().out


def test_shard_durations_are_shown_waiting_and_merge_folds_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "d.db"
    DurationStore(store).record({"t::a": 2.0, "t::b": 1.0}, apart=True)
    assert main(["durations", "show", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "2 durations recorded by --shard runs wait apart" in out
    assert "no durations recorded" in out
    assert main(["durations", "merge", "--store", str(store)]) == 0
    assert "2 durations of --shard runs folded into" in capsys.readouterr().out
    assert main(["durations", "show", "--store", str(store)]) == 0
    assert "2 tests, 3.00s in total" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--retries", "x"], "--retries expects a whole number"),
        (["--timeout", "-2"], "--timeout must be positive"),
        (["--retry-only", "["], "--retry-only '[' is not a valid regular expression"),
        (["--max-worker-memory", "lots"], "--max-worker-memory: expected a size"),
        (["--max-tests-per-worker", "-3"], "--max-tests-per-worker: must be 1 or more"),
    ],
)
def test_run_validates_reliability_options(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", *args]) == 4
    assert message in capsys.readouterr().err


def _pytest_argv(monkeypatch: pytest.MonkeyPatch, *args: str) -> list[str]:
    """What ``orchestrator run ARGS`` hands to pytest."""
    handed: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        handed.append(list(argv))
        return 0

    monkeypatch.setattr(pytest, "main", fake_main)
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    assert main(["run", *args]) == 0
    (argv,) = handed
    return argv


def test_run_hands_its_options_to_pytest_under_their_pytest_spelling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = _pytest_argv(
        monkeypatch,
        *("--workers", "2", "--address=10.0.0.5:6379", "--files", "ship"),
        *("--exclude", "data/raw", "--exclude=*.ckpt", "--durations-store", "d.db"),
        *("--retries", "1", "--retry-only", "Timeout", "--fail-on-flaky", "--timeout", "30"),
        *("--max-worker-memory", "2GiB", "--max-tests-per-worker", "50", "--kinds", "app"),
        *("--junit-pipelines", "out", "--strict-resources", "--json", "r.json"),
        *("--html", "r.html", "--shard", "1/2", "--collect", "lazy", "--head-start", "off"),
        *("tests/", "-k", "not slow", "--junitxml", "report.xml", "--ray-timeout=5"),
    )
    ours, theirs = argv[:-6], argv[-6:]
    assert ours[0] == "--ray"
    assert sorted(ours[1:]) == sorted(
        [
            "--ray-workers=2",
            "--ray-address=10.0.0.5:6379",
            "--ray-files=ship",
            "--ray-exclude=data/raw",
            "--ray-exclude=*.ckpt",
            "--ray-durations=d.db",
            "--ray-retries=1",
            "--ray-retry-only=Timeout",
            "--ray-fail-on-flaky",
            "--ray-timeout=30",
            "--ray-max-worker-memory=2GiB",
            "--ray-max-tests-per-worker=50",
            "--kinds=app",
            "--junit-pipelines=out",
            "--strict-resources",
            "--report-json=r.json",
            "--report-html=r.html",
            "--shard=1/2",
            "--ray-collect=lazy",
            "--ray-head-start=off",
            "--ray-progress",
        ]
    )
    # The rest goes to pytest as typed, after ours: a pytest spelling given there wins.
    assert theirs == ["tests/", "-k", "not slow", "--junitxml", "report.xml", "--ray-timeout=5"]


def test_run_defaults_and_the_progress_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _pytest_argv(monkeypatch) == ["--ray", "--ray-workers=auto", "--ray-progress"]
    assert _pytest_argv(monkeypatch, "--no-progress") == ["--ray", "--ray-workers=auto"]
    assert _pytest_argv(monkeypatch, "-vv") == ["--ray", "--ray-workers=auto", "-vv"]
    assert _pytest_argv(monkeypatch, "--", "--workers") == [
        "--ray",
        "--ray-workers=auto",
        "--ray-progress",
        "--workers",
    ]


#: Directory layouts: files (path: text), and the directory both are started in.
LAYOUTS = {
    "pytest.ini above a pyproject.toml without pytest's table": (
        {"pytest.ini": "", "sub/pyproject.toml": "[project]\nname = 'x'\n"},
        "sub",
    ),
    "pyproject.toml with pytest's table above a tox.ini without": (
        {"pyproject.toml": "[tool.pytest.ini_options]\n", "sub/tox.ini": "[tox]\n"},
        "sub",
    ),
    "setup.cfg with [tool:pytest] below a pyproject.toml": (
        {"pyproject.toml": "", "sub/setup.cfg": "[tool:pytest]\n"},
        "sub",
    ),
    "tox.ini with [pytest]": ({"tox.ini": "[pytest]\n", "sub/keep": ""}, "sub/"),
    "the nearest pyproject.toml before a setup.py": (
        {"pyproject.toml": "", "sub/setup.py": "", "sub/deeper/keep": ""},
        "sub/deeper",
    ),
    "a setup.py": ({"setup.py": "", "sub/keep": ""}, "sub"),
    "nothing: where it started": ({"sub/keep": ""}, "sub"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_project_root_is_pytests_rootdir(
    layout: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, start = LAYOUTS[layout]
    for name, text in files.items():
        (pytester.path / name).parent.mkdir(parents=True, exist_ok=True)
        (pytester.path / name).write_text(text)
    monkeypatch.chdir(pytester.path / start)
    assert find_project_root(Path.cwd()) == pytester.parseconfig().rootpath


def test_durations_commands_read_the_store_a_run_in_the_same_directory_wrote(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(STORE_ENV, raising=False)
    pytester.makefile(".ini", pytest="[pytest]\n")
    sub = pytester.mkdir("pkg")
    (sub / "pyproject.toml").write_text("[project]\nname = 'pkg'\n")
    (sub / "test_a.py").write_text("def test_a():\n    pass\n")
    monkeypatch.chdir(sub)
    pytester.runpytest_subprocess("--shard=1/1").assert_outcomes(passed=1)
    assert (pytester.path / ".orchestrator" / "durations.db").is_file()
    assert main(["durations", "show"]) == 0
    assert "1 durations recorded by --shard runs wait apart" in capsys.readouterr().out
