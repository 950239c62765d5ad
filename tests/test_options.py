"""The option table: docs/options.md matches it, pytest and ``orchestrator run`` take every
option in it, and a wrong value is reported under the spelling typed (no Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main
from orchestrator.errors import UsageError
from orchestrator.options import (
    DOCS_PAGE,
    END_MARKER,
    OPTIONS,
    REGENERATE,
    RUN_OPTIONS,
    START_MARKER,
    WORKERS,
    Option,
    options_table,
)
from orchestrator.settings import settings_from_table
from tests.test_cli import _pytest_argv

ROOT = Path(__file__).resolve().parents[1]

#: A good value of each option that takes one (flags: None).
SAMPLES: dict[str, str | None] = {
    "--ray": None,
    "--ray-workers": "3",
    "--ray-collect": "lazy",
    "--ray-head-start": "off",
    "--ray-address": "10.0.0.5:6379",
    "--ray-files": "ship",
    "--ray-exclude": "data/raw",
    "--ray-durations": "store.db",
    "--ray-retries": "2",
    "--ray-retry-only": "ConnectionError",
    "--ray-fail-on-flaky": None,
    "--metrics-baseline": "main",
    "--quarantine": "off",
    "--ray-strict-quarantine": None,
    "--ray-timeout": "30",
    "--ray-max-worker-memory": "2GiB",
    "--ray-max-tests-per-worker": "100",
    "--kinds": "app",
    "--junit-pipelines": "reports",
    "--strict-resources": None,
    "--ray-progress": None,
    "--report-json": "r.json",
    "--report-html": "r.html",
    "--shard": "2/4",
}


def _pytest_name(option: Option[Any]) -> str:
    return option.pytest


#: A wrong value of each option that checks its value.
WRONG: dict[str, str] = {
    "--ray-workers": "0",
    "--ray-files": "copy",
    "--ray-retries": "x",
    "--ray-retry-only": "[",
    "--ray-timeout": "-2",
    "--ray-max-worker-memory": "lots",
    "--ray-max-tests-per-worker": "-3",
    "--kinds": "nonsense",
    "--shard": "5/4",
}


def _typed(flag: str, value: str | None) -> list[str]:
    return [flag] if value is None else [flag, value]


def test_docs_table_is_generated_from_the_options() -> None:
    page = (ROOT / DOCS_PAGE).read_text(encoding="utf-8")
    assert START_MARKER in page and END_MARKER in page, f"{DOCS_PAGE} lost its markers"
    table = page.split(START_MARKER, 1)[1].split(END_MARKER, 1)[0].lstrip("\n")
    assert table == options_table(), (
        f"{DOCS_PAGE}'s option table differs from orchestrator/options.py: "
        f"run `{REGENERATE}` to regenerate it"
    )


def test_every_option_has_test_values() -> None:
    assert set(SAMPLES) == {o.pytest for o in OPTIONS}
    assert set(WRONG) == {o.pytest for o in OPTIONS if o.parse_value is not None}
    assert len({o.pytest for o in OPTIONS}) == len(OPTIONS)
    assert len({o.cli for o in RUN_OPTIONS}) == len(RUN_OPTIONS)


@pytest.mark.parametrize("option", OPTIONS, ids=_pytest_name)
def test_pytest_takes_the_option(pytester: pytest.Pytester, option: Option[Any]) -> None:
    default = pytester.parseconfig().getoption(option.dest)
    expected_default: object = option.default
    if isinstance(expected_default, tuple):
        expected_default = list(expected_default)
    assert default == expected_default
    value = SAMPLES[option.pytest]
    config = pytester.parseconfig(*_typed(option.pytest, value))
    expected: object = True if value is None else value
    assert config.getoption(option.dest) == ([value] if option.action == "append" else expected)


@pytest.mark.parametrize("option", RUN_OPTIONS, ids=lambda o: o.run_flag)
def test_orchestrator_run_hands_the_option_to_pytest(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, option: Option[Any]
) -> None:
    """``orchestrator run OPTION VALUE`` runs pytest as ``pytest --ray OPTION VALUE`` would."""
    value = SAMPLES[option.pytest]
    argv = _pytest_argv(monkeypatch, *_typed(option.run_flag, value))
    assert argv[0] == "--ray"
    if option.cli_negates is None:
        direct = pytester.parseconfig("--ray", *_typed(option.pytest, value))
        assert pytester.parseconfig(*argv).getoption(option.dest) == direct.getoption(option.dest)
    else:  # --no-progress turns off what `orchestrator run` turns on by default
        assert option.pytest not in argv
        assert option.pytest in _pytest_argv(monkeypatch)


def test_orchestrator_run_passes_its_workers_default() -> None:
    """It always has: the command's default wins over ``--ray-workers`` in ``addopts``."""
    assert WORKERS.cli_always and WORKERS.cli_kwargs()["default"] == "auto"


@pytest.mark.parametrize("option", [o for o in RUN_OPTIONS if o.pytest in WRONG], ids=_pytest_name)
def test_orchestrator_run_names_its_own_spelling(
    option: Option[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", option.run_flag, WRONG[option.pytest]]) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"ERROR: {option.run_flag}")
    if option.run_flag != option.pytest:
        assert option.pytest not in err


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.pytest in WRONG], ids=_pytest_name)
def test_pytest_names_its_own_spelling(pytester: pytest.Pytester, option: Option[Any]) -> None:
    result = pytester.runpytest_inprocess("--ray", f"{option.pytest}={WRONG[option.pytest]}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {option.pytest}*"])


def test_a_typed_spelling_replaces_the_pytest_one_only_at_the_start() -> None:
    with pytest.raises(UsageError, match=r"^--workers must be at least 1"):
        WORKERS.parse("0", "--workers")
    with pytest.raises(UsageError, match=r"^--ray-workers expects a positive integer"):
        WORKERS.parse("x")


@pytest.mark.parametrize("option", [o for o in OPTIONS if o.pyproject], ids=_pytest_name)
def test_pyproject_keys_are_the_settings_keys(option: Option[Any]) -> None:
    value = SAMPLES[option.pytest]
    assert value is not None and option.pyproject is not None
    *tables, key = option.pyproject.split(".")
    table: dict[str, Any] = {key: [value] if option.action == "append" else value}
    for name in reversed(tables):
        table = {name: table}
    settings_from_table(table, "pyproject.toml")  # a known key: no error
