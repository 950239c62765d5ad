"""The command line: argument handling and the durations commands (``main(argv)``, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.config import STORE_ENV
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
    assert "--ray-workers must be at least 1" in capsys.readouterr().err


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
        (["--retries", "x"], "--ray-retries expects a whole number"),
        (["--timeout", "-2"], "--ray-timeout must be positive"),
        (["--retry-only", "["], "is not a valid regular expression"),
        (["--max-worker-memory", "lots"], "--max-worker-memory: expected a size"),
        (["--max-tests-per-worker", "-3"], "--max-tests-per-worker: must be 1 or more"),
    ],
)
def test_run_validates_reliability_options(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", *args]) == 4
    assert message in capsys.readouterr().err
