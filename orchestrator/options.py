"""The run's options, each defined once: the plugin, ``orchestrator run`` and docs/options.md
are built from :data:`OPTIONS`.

Every option has its pytest spelling (``--ray-workers``) and, where ``orchestrator run``
takes it, that command's spelling (``--workers``); the command hands it to pytest under the
pytest spelling. Values are checked by :meth:`Option.parse`, whose errors name the spelling
the user typed. ``python -m orchestrator.options`` rewrites the table of docs/options.md;
``--check`` only says whether it is current.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from orchestrator.cluster.shipping import parse_files_mode
from orchestrator.config import parse_retries, parse_timeout, parse_workers
from orchestrator.errors import UsageError
from orchestrator.pipelines.kinds import parse_kinds
from orchestrator.scheduling.retry import compile_pattern
from orchestrator.scheduling.sharding import Shard, parse_shard
from orchestrator.worker.recycle import parse_max_memory, parse_max_tests

T = TypeVar("T")

Action = Literal["store", "store_true", "append"]


@dataclass(frozen=True)
class Option(Generic[T]):
    """One option of a run: both spellings, how it is parsed, its default and help.

    ``parse_value`` checks a value (a string, as typed) and returns what the run uses; the
    validators' :class:`UsageError` starts with the pytest spelling, which :meth:`parse`
    rewrites to the spelling the user typed.
    """

    pytest: str
    #: ``orchestrator run``'s spelling; None where the command has none.
    cli: str | None
    help: str
    default: str | bool | tuple[str, ...] | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    action: Action = "store"
    parse_value: Callable[[str], T] | None = None
    #: The key under ``[tool.orchestrator]`` of pyproject.toml that gives the default, or
    #: for a repeatable option more values (``ship.files``: ``files`` under
    #: ``[tool.orchestrator.ship]``).
    pyproject: str | None = None
    #: What the default is, in Markdown, where the value alone does not say it.
    default_doc: str | None = None
    #: ``orchestrator run`` passes the default on even when not given, so that the
    #: command's default wins over pytest's ``addopts``.
    cli_always: bool = False
    #: ``orchestrator run``'s flag turns off what the pytest flag turns on (which the
    #: command turns on, unless pytest is asked to be verbose); its own help text.
    cli_negates: str | None = None

    @property
    def dest(self) -> str:
        """The attribute pytest stores the value under (``config.getoption(dest)``)."""
        return self.pytest.lstrip("-").replace("-", "_")

    @property
    def run_flag(self) -> str:
        """``orchestrator run``'s spelling, for the options it takes (:data:`RUN_OPTIONS`)."""
        if self.cli is None:
            raise ValueError(f"orchestrator run has no spelling of {self.pytest}")
        return self.cli

    @property
    def cli_dest(self) -> str:
        """The attribute ``orchestrator run``'s namespace stores the value under."""
        return self.run_flag.lstrip("-").replace("-", "_")

    def parse(self, text: str, spelling: str | None = None) -> T:
        """Check ``text``; an error names ``spelling`` (default: the pytest spelling)."""
        if self.parse_value is None:
            raise TypeError(f"{self.pytest} takes no value to parse")
        try:
            return self.parse_value(text)
        except UsageError as exc:
            message = str(exc)
            if spelling and spelling != self.pytest and message.startswith(self.pytest):
                message = spelling + message[len(self.pytest) :]
            raise UsageError(message) from None

    def default_text(self) -> str:
        """The default in Markdown, for the docs' table and (without backticks) help."""
        if self.default_doc is not None:
            return self.default_doc
        if self.default is None or self.default == ():
            return "none"
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return f"`{self.default}`"

    def help_text(self, *, cli: bool = False) -> str:
        """The help line of either command: the text, then its default."""
        if cli and self.cli_negates is not None:
            return self.cli_negates
        if self.action != "store" or (
            self.default is None and self.default_doc is None and self.pyproject is None
        ):
            return self.help  # a flag, a list, or nothing unless given
        default = self.default_text().replace("`", "")
        if self.pyproject:
            default = f"pyproject's {self.pyproject}, else {default}"
        return f"{self.help} (default: {default})"

    def pytest_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of pytest's ``addoption``."""
        kwargs: dict[str, Any] = {"action": self.action, "help": self.help_text()}
        kwargs["default"] = list(self.default) if isinstance(self.default, tuple) else self.default
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        if self.choices is not None:
            kwargs["choices"] = self.choices
        return kwargs

    def cli_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of argparse's ``add_argument`` for ``orchestrator run``.

        Values not given are None (an empty list, a false flag) and not passed on, so
        that pytest's ``addopts`` and the plugin's defaults apply as they would to pytest.
        """
        kwargs: dict[str, Any] = {"action": self.action, "help": self.help_text(cli=True)}
        if self.action == "append":
            kwargs["default"] = []
        elif self.action == "store_true":
            kwargs["default"] = False
        else:
            kwargs["default"] = self.default if self.cli_always else None
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        if self.choices is not None:
            kwargs["choices"] = self.choices
        return kwargs


def _shard(text: str) -> Shard | None:
    return parse_shard(text, os.environ)


RAY: Option[bool] = Option(
    "--ray",
    None,
    "run tests on Ray workers, longest first, balanced by recorded durations",
    default=False,
    action="store_true",
)
WORKERS = Option(
    "--ray-workers",
    "--workers",
    "number of workers; 'auto' takes one per CPU (of the cluster, or of this machine), "
    "but no more than the predicted suite duration keeps busy (each worker costs a "
    "start-up)",
    default="auto",
    metavar="N|auto",
    parse_value=parse_workers,
    cli_always=True,
)
COLLECT: Option[str] = Option(
    "--ray-collect",
    "--collect",
    "import: every worker imports every test file before its first test, as serial "
    "pytest does, and generates a file's tests when first given one; lazy: a worker "
    "imports a test file only when first given one of its tests (faster, for suites whose "
    "modules do not depend on each other's imports); all: every worker collects the whole "
    "suite first, as pytest-xdist's do",
    default="import",
    choices=("import", "lazy", "all"),
)
HEAD_START: Option[str] = Option(
    "--ray-head-start",
    "--head-start",
    "on: while the controller collects, the workers start on the tests the last run with "
    "the same arguments collected, when none of its test, conftest or ini files changed "
    "since; off: they wait for the controller's collection",
    default="on",
    choices=("on", "off"),
)
ADDRESS: Option[str] = Option(
    "--ray-address",
    "--address",
    "use the existing Ray cluster at this address",
    metavar="HOST:PORT",
    default_doc="`$RAY_ADDRESS`, else the instance of `orchestrator up`, else a local "
    "instance started for this run",
)
FILES = Option(
    "--ray-files",
    "--files",
    "how workers on other machines get the project: 'ship' sends the root directory with "
    "Ray's runtime environment (without .git, virtualenvs, caches and what .gitignore "
    "leaves out), 'shared' means every node sees it at the same path; 'auto' ships to a "
    "cluster named by any address but loopback",
    metavar="auto|ship|shared",
    parse_value=parse_files_mode,
    pyproject="ship.files",
    default_doc="`auto`",
)
EXCLUDE: Option[str] = Option(
    "--ray-exclude",
    "--exclude",
    "leave files matching this gitignore-style pattern out of what is shipped, besides "
    "those of pyproject's ship.exclude (repeatable)",
    default=(),
    metavar="PATTERN",
    action="append",
    pyproject="ship.exclude",
)
DURATIONS: Option[str] = Option(
    "--ray-durations",
    "--durations-store",
    "the duration store to read and update",
    metavar="PATH",
    default_doc="`$ORCHESTRATOR_STORE`, else `.orchestrator/durations.db` in the rootdir",
)
RETRIES = Option(
    "--ray-retries",
    "--retries",
    "run a failed test up to N more times, on another worker where there is one; fail "
    "then pass counts as passed (flaky)",
    default="0",
    metavar="N",
    parse_value=parse_retries,
)
RETRY_ONLY = Option(
    "--ray-retry-only",
    "--retry-only",
    "retry only failures whose error text (traceback, or the crash or timeout message) "
    "matches REGEX (transient errors)",
    metavar="REGEX",
    parse_value=compile_pattern,
)
FAIL_ON_FLAKY: Option[bool] = Option(
    "--ray-fail-on-flaky",
    "--fail-on-flaky",
    "fail the run when a test passed only on a retry",
    default=False,
    action="store_true",
)
METRICS_BASELINE: Option[str] = Option(
    "--metrics-baseline",
    "--metrics-baseline",
    "what record_metric compares a metric with: last (the last passing runs), or the "
    "passing runs recorded at a branch (main), a tag, or a commit; where none was "
    "recorded there, the run says so and uses last",
    metavar="REF",
    default="last",
)
QUARANTINE: Option[str] = Option(
    "--quarantine",
    "--quarantine",
    "on: a run whose only failures are quarantined tests' passes (they still run and are "
    "reported; see `orchestrator quarantine`); off: their failures fail the run",
    default="on",
    choices=("on", "off"),
)
STRICT_QUARANTINE: Option[bool] = Option(
    "--ray-strict-quarantine",
    "--strict-quarantine",
    "quarantined tests' failures fail the run (the same as --quarantine off)",
    default=False,
    action="store_true",
)
TIMEOUT = Option(
    "--ray-timeout",
    "--timeout",
    "kill a worker whose test runs longer than this (also stuck in C code) and report the "
    "test as an error; a test's timeout marker (pytest-timeout's) wins",
    metavar="SECONDS",
    parse_value=parse_timeout,
)
MAX_WORKER_MEMORY = Option(
    "--ray-max-worker-memory",
    "--max-worker-memory",
    "replace a worker by a fresh one when its test process (with its children) holds more "
    "than SIZE resident (500MB, 2GiB, ...), checked as each test's call ends; its fixtures "
    "are torn down first",
    metavar="SIZE",
    parse_value=parse_max_memory,
    pyproject="max_worker_memory",
)
MAX_TESTS_PER_WORKER = Option(
    "--ray-max-tests-per-worker",
    "--max-tests-per-worker",
    "replace a worker by a fresh one after it ran N tests",
    metavar="N",
    parse_value=parse_max_tests,
    pyproject="max_tests_per_worker",
)
KINDS = Option(
    "--kinds",
    "--kinds",
    "run only these test kinds or pipelines, comma separated: unit, integration, "
    "data_validation, model_performance; app (unit+integration), ml (the other two)",
    metavar="KINDS",
    parse_value=parse_kinds,
    default_doc="all kinds",
)
JUNIT_PIPELINES: Option[str] = Option(
    "--junit-pipelines",
    "--junit-pipelines",
    "besides --junitxml, write one JUnit file per pipeline: DIR/junit-app.xml and "
    "DIR/junit-ml.xml, or a path containing {pipeline}",
    metavar="DIR|PATTERN",
)
STRICT_RESOURCES: Option[bool] = Option(
    "--strict-resources",
    "--strict-resources",
    "fail the run when a test needs resources no node of the cluster has (default: skip "
    "such tests, naming the missing resource)",
    default=False,
    action="store_true",
)
PROGRESS: Option[bool] = Option(
    "--ray-progress",
    "--no-progress",
    "show one live progress line instead of a character per test",
    default=False,
    action="store_true",
    default_doc="off (`orchestrator run`: on, unless `-v`)",
    cli_negates="print pytest's usual per-test output instead of the live progress line",
)
REPORT_JSON: Option[str] = Option(
    "--report-json",
    "--json",
    "write the run's results (outcomes, timings, workers, attempts, metrics) as JSON, "
    "schema orchestrator-report/1",
    metavar="PATH",
)
REPORT_HTML: Option[str] = Option(
    "--report-html",
    "--html",
    "write a self-contained HTML report: summary per kind, failures, flaky tests, slowest "
    "tests, metric trends and a timeline per worker",
    metavar="PATH",
)
SHARD = Option(
    "--shard",
    "--shard",
    "run only shard K of N (1-based) of the selected tests, split by recorded durations, "
    "longest first onto the lightest shard; 'auto' reads GitLab's CI_NODE_INDEX/"
    "CI_NODE_TOTAL, Buildkite's or CircleCI's parallel-job variables",
    metavar="K/N|auto",
    parse_value=_shard,
)

#: Every option, in the order of ``pytest --help`` and of the docs.
OPTIONS: tuple[Option[Any], ...] = (
    RAY,
    WORKERS,
    COLLECT,
    HEAD_START,
    ADDRESS,
    FILES,
    EXCLUDE,
    DURATIONS,
    RETRIES,
    RETRY_ONLY,
    FAIL_ON_FLAKY,
    METRICS_BASELINE,
    QUARANTINE,
    STRICT_QUARANTINE,
    TIMEOUT,
    MAX_WORKER_MEMORY,
    MAX_TESTS_PER_WORKER,
    KINDS,
    JUNIT_PIPELINES,
    STRICT_RESOURCES,
    PROGRESS,
    REPORT_JSON,
    REPORT_HTML,
    SHARD,
)
#: Those ``orchestrator run`` takes.
RUN_OPTIONS: tuple[Option[Any], ...] = tuple(o for o in OPTIONS if o.cli is not None)


def check_run_args(args: argparse.Namespace) -> None:
    """Check ``orchestrator run``'s values before pytest starts; errors name its spellings."""
    for option in RUN_OPTIONS:
        value = getattr(args, option.cli_dest)
        if option.parse_value is not None and value is not None:
            option.parse(str(value), option.run_flag)


def as_pytest_args(args: argparse.Namespace, *, verbose: bool) -> list[str]:
    """``orchestrator run``'s options as pytest's, ``--ray`` first.

    Values are attached (``--option=value``): pytest picks its rootdir from arguments that
    name existing paths, and a separate value (a duration store, a report directory) would
    count as one. The live progress line is on unless turned off or pytest is ``verbose``.
    """
    argv = [RAY.pytest]
    for option in RUN_OPTIONS:
        value = getattr(args, option.cli_dest)
        if option.cli_negates is not None:
            if not value and not verbose:
                argv.append(option.pytest)
        elif option.action == "store_true":
            if value:
                argv.append(option.pytest)
        elif option.action == "append":
            argv.extend(f"{option.pytest}={item}" for item in value)
        elif value is not None:
            argv.append(f"{option.pytest}={value}")
    return argv


# --- docs/options.md -------------------------------------------------------------------

START_MARKER = "<!-- options:start -->"
END_MARKER = "<!-- options:end -->"
#: The page the table lives in, from the project's root.
DOCS_PAGE = Path("docs") / "options.md"
#: The command that rewrites the table.
REGENERATE = "python -m orchestrator.options"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _spelled(flag: str, option: Option[Any]) -> str:
    shown = option.metavar or ("|".join(option.choices) if option.choices else None)
    if option.action == "store_true" or shown is None:
        return f"`{flag}`"
    return f"`{flag} {shown}`"


def options_table() -> str:
    """The Markdown table of :data:`OPTIONS`."""
    rows = [
        "| pytest option | `orchestrator run` option | pyproject key | default | what it does |",
        "|---|---|---|---|---|",
    ]
    for option in OPTIONS:
        cli = _spelled(option.cli, option) if option.cli else "always on"
        pyproject = f"`{option.pyproject}`" if option.pyproject else ""
        what = option.help
        if option.cli_negates is not None:
            what = f"{what}; `{option.cli}`: {option.cli_negates}"
        cells = (_spelled(option.pytest, option), cli, pyproject, option.default_text(), what)
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows) + "\n"


def with_table(page: str) -> str:
    """``page`` with the text between its markers replaced by :func:`options_table`."""
    pattern = re.compile(re.escape(START_MARKER) + r"\n.*?" + re.escape(END_MARKER), re.DOTALL)
    if not pattern.search(page):
        raise UsageError(f"{DOCS_PAGE}: no {START_MARKER} ... {END_MARKER} section")
    block = f"{START_MARKER}\n{options_table()}{END_MARKER}"
    return pattern.sub(lambda _: block, page, count=1)


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the table of docs/options.md (``--check``: only say whether it is current)."""
    parser = argparse.ArgumentParser(
        prog=REGENERATE, description="Regenerate the option table of docs/options.md."
    )
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    parser.add_argument(
        "--page",
        type=Path,
        default=Path(__file__).resolve().parents[1] / DOCS_PAGE,
        help="the page to rewrite (default: the checkout's docs/options.md)",
    )
    args = parser.parse_args(argv)
    page = args.page.read_text(encoding="utf-8")
    updated = with_table(page)
    if updated == page:
        print(f"{args.page} is up to date")
        return 0
    if args.check:
        print(f"{args.page} is out of date: run `{REGENERATE}`", file=sys.stderr)
        return 1
    args.page.write_text(updated, encoding="utf-8")
    print(f"rewrote the option table of {args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
