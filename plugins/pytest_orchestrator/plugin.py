"""Options and their validation; registers the Ray session only when ``--ray`` is given.

Nothing here imports Ray: without ``--ray`` the plugin changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest

from orchestrator.cluster.shipping import parse_files_mode
from orchestrator.config import (
    RunOptions,
    default_store_path,
    parse_retries,
    parse_timeout,
    parse_workers,
)
from orchestrator.errors import UsageError
from orchestrator.pipelines.kinds import marker_lines, parse_kinds
from orchestrator.scheduling.retry import compile_pattern
from orchestrator.scheduling.sharding import parse_shard
from orchestrator.settings import load_settings
from orchestrator.worker.recycle import RecyclePolicy, parse_max_memory, parse_max_tests
from pytest_orchestrator.metrics import pytest_runtest_makereport, record_metric
from pytest_orchestrator.pipelines import Pipelines, pipeline_paths

__all__ = ["pytest_runtest_makereport", "record_metric"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("orchestrator", "run the suite on Ray workers (orchestrator)")
    group.addoption(
        "--ray",
        action="store_true",
        default=False,
        help="run tests on Ray workers, longest first, balanced by recorded durations",
    )
    group.addoption(
        "--ray-workers",
        default="auto",
        metavar="N|auto",
        help="number of workers; 'auto' (default) picks from the CPUs and the predicted "
        "suite duration",
    )
    group.addoption(
        "--ray-collect",
        choices=("import", "lazy", "all"),
        default="import",
        help="import (default): every worker imports every test file before its first "
        "test, as serial pytest does, and generates a file's tests when first given one; "
        "lazy: a worker imports a test file only when first given one of its tests (faster, "
        "for suites whose modules do not depend on each other's imports); all: every worker "
        "collects the whole suite first, as pytest-xdist's do",
    )
    group.addoption(
        "--ray-head-start",
        choices=("on", "off"),
        default="on",
        help="on (default): while the controller collects, the workers start on the tests "
        "the last run with the same arguments collected, when none of its test, conftest "
        "or ini files changed since; off: they wait for the controller's collection",
    )
    group.addoption(
        "--ray-address",
        default=None,
        metavar="HOST:PORT",
        help="use the existing Ray cluster at this address (default: $RAY_ADDRESS, else the "
        "instance of `orchestrator up`, else start a local instance for this run)",
    )
    group.addoption(
        "--ray-files",
        default=None,
        metavar="auto|ship|shared",
        help="how workers on other machines get the project: 'ship' sends the root "
        "directory with Ray's runtime environment (without .git, virtualenvs, caches and "
        "what .gitignore leaves out), 'shared' means every node sees it at the same path; "
        "'auto' (default) ships to a cluster named by any address but loopback",
    )
    group.addoption(
        "--ray-exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave files matching this gitignore-style pattern out of what is shipped "
        "(repeatable)",
    )
    group.addoption(
        "--ray-durations",
        default=None,
        metavar="PATH",
        help="duration store to read and update (default: $ORCHESTRATOR_STORE, else "
        "<rootdir>/.orchestrator/durations.db)",
    )
    group.addoption(
        "--ray-retries",
        default="0",
        metavar="N",
        help="run a failed test up to N more times, on another worker where there is one; "
        "fail then pass counts as passed (flaky)",
    )
    group.addoption(
        "--ray-retry-only",
        default=None,
        metavar="REGEX",
        help="retry only failures whose error text matches REGEX (transient errors)",
    )
    group.addoption(
        "--ray-fail-on-flaky",
        action="store_true",
        default=False,
        help="fail the run when a test passed only on a retry",
    )
    group.addoption(
        "--ray-timeout",
        default=None,
        metavar="SECONDS",
        help="kill a worker whose test runs longer than this (also stuck in C code) and "
        "report the test as failed; a test's timeout marker (pytest-timeout's) wins",
    )
    group.addoption(
        "--ray-max-worker-memory",
        default=None,
        metavar="SIZE",
        help="replace a worker by a fresh one when its test process (with its children) "
        "holds more than SIZE resident (500MB, 2GiB, ...), checked as each test's call ends; "
        "its fixtures are torn down first (default: pyproject's max_worker_memory, else none)",
    )
    group.addoption(
        "--ray-max-tests-per-worker",
        default=None,
        metavar="N",
        help="replace a worker by a fresh one after it ran N tests (default: pyproject's "
        "max_tests_per_worker, else none)",
    )
    group.addoption(
        "--kinds",
        default=None,
        metavar="KINDS",
        help="run only these test kinds or pipelines, comma separated: unit, integration, "
        "data_validation, model_performance; app (unit+integration), ml (the other two)",
    )
    group.addoption(
        "--junit-pipelines",
        default=None,
        metavar="DIR|PATTERN",
        help="besides --junitxml, write one JUnit file per pipeline: DIR/junit-app.xml and "
        "DIR/junit-ml.xml, or a path containing {pipeline}",
    )
    group.addoption(
        "--strict-resources",
        action="store_true",
        default=False,
        help="with --ray, fail the run when a test needs resources no node of the cluster "
        "has (default: skip such tests, naming the missing resource)",
    )
    group.addoption(
        "--ray-progress",
        action="store_true",
        default=False,
        help="show one live progress line instead of a character per test",
    )
    group.addoption(
        "--report-json",
        default=None,
        metavar="PATH",
        help="write the run's results (outcomes, timings, workers, attempts, metrics) as "
        "JSON, schema orchestrator-report/1",
    )
    group.addoption(
        "--report-html",
        default=None,
        metavar="PATH",
        help="write a self-contained HTML report: summary per kind, failures, flaky tests, "
        "slowest tests, metric trends and a timeline per worker",
    )
    group.addoption(
        "--shard",
        default=None,
        metavar="K/N|auto",
        help="run only shard K of N (1-based) of the selected tests, split by recorded "
        "durations, longest first onto the lightest shard; 'auto' reads GitLab's "
        "CI_NODE_INDEX/CI_NODE_TOTAL, Buildkite's or CircleCI's parallel-job variables. "
        "With or without --ray.",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> Generator[None, object, object]:
    """Under ``--ray``, plugins that decide here whether the run is distributed see one,
    as under ``pytest -n``: pytest-cov then measures the controller as xdist's does and
    combines what the workers measured (its test is ``--dist``/``-d``/``-n``)."""
    namespace = early_config.known_args_namespace
    distributed = bool(getattr(namespace, "ray", False)) and not getattr(
        namespace, "distload", False
    )
    missing = object()
    before = getattr(namespace, "distload", missing)
    if distributed:
        namespace.distload = True
    try:
        return (yield)
    finally:
        if distributed:
            if before is missing:
                del namespace.distload
            else:
                namespace.distload = before


def _options(config: pytest.Config) -> RunOptions:
    try:
        workers = parse_workers(str(config.getoption("ray_workers")))
        retries = parse_retries(str(config.getoption("ray_retries")))
        timeout = parse_timeout(config.getoption("ray_timeout"))
        retry_only = config.getoption("ray_retry_only")
        compile_pattern(retry_only)
        settings = load_settings(config.rootpath)
        files = config.getoption("ray_files")
        files = parse_files_mode(files) if files is not None else settings.files or "auto"
        recycle = _recycle_policy(config, settings.recycle)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("numprocesses", None):
        raise pytest.UsageError(
            "--ray and -n (pytest-xdist) both distribute tests: use one of them "
            "(drop -n, or pass -n 0 when your configuration adds it)"
        )
    address = config.getoption("ray_address") or os.environ.get("RAY_ADDRESS") or None
    if address is None:  # a local instance kept warm by `orchestrator up`
        from orchestrator.cluster.local_cluster import read_record

        record = read_record(config.rootpath)
        address = record.address if record is not None else None
    store = config.getoption("ray_durations")
    store_path = Path(store) if store else default_store_path(config.rootpath)
    return RunOptions(
        workers=workers,
        address=address,
        store_path=store_path,
        progress=bool(config.getoption("ray_progress")),
        retries=retries,
        retry_only=retry_only,
        fail_on_flaky=bool(config.getoption("ray_fail_on_flaky")),
        timeout=timeout,
        files=files,
        excludes=(*settings.ship_excludes, *config.getoption("ray_exclude")),
        head_start=config.getoption("ray_head_start") == "on",
        recycle=recycle,
    )


def _recycle_policy(config: pytest.Config, configured: RecyclePolicy) -> RecyclePolicy:
    """The command line's recycling limits, else pyproject's."""
    memory = config.getoption("ray_max_worker_memory")
    tests = config.getoption("ray_max_tests_per_worker")
    return RecyclePolicy(
        parse_max_memory(memory) if memory is not None else configured.max_memory,
        parse_max_tests(tests) if tests is not None else configured.max_tests,
    )


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "retries(n): with --ray, run this test up to n more times when it fails"
    )
    if not config.pluginmanager.has_plugin("timeout"):
        config.addinivalue_line(
            "markers", "timeout(seconds): with --ray, kill the test after this many seconds"
        )
    config.addinivalue_line(
        "markers",
        'resources(cpus=1, gpus=0, memory="8GiB", **custom): with --ray, run this test only '
        "on a worker holding these Ray resources",
    )
    for line in marker_lines():
        config.addinivalue_line("markers", line)
    ray = bool(config.getoption("ray", False)) and not hasattr(config, "workerinput")
    pipelines = _pipelines(config, ray)
    _shard(config, ray)
    _reports(config, pipelines)
    if not ray:
        return
    options = _options(config)
    assert pipelines is not None  # always registered for --ray
    from pytest_orchestrator.session import RaySession
    from pytest_orchestrator.xdist_nodes import declare_hooks

    declare_hooks(config)

    session = RaySession(config, options, pipelines)
    config.pluginmanager.register(session, "orchestrator-session")


def _shard(config: pytest.Config, ray: bool) -> None:
    """Register ``--shard`` on the process that selects the tests (not on workers)."""
    text = config.getoption("shard", None)
    if not text or hasattr(config, "workerinput"):
        return
    try:
        shard = parse_shard(str(text), os.environ)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    if shard is None:  # --shard auto in a job that is not split
        return
    from pytest_orchestrator.shard import ShardPlugin

    store = config.getoption("ray_durations")
    store_path = Path(store) if store else default_store_path(config.rootpath)
    # Under --ray the Ray session records durations; plain runs record them here.
    config.pluginmanager.register(
        ShardPlugin(shard, store_path, record=not ray), "orchestrator-shard"
    )


def _reports(config: pytest.Config, pipelines: Pipelines | None) -> None:
    json_path, html_path = config.getoption("report_json"), config.getoption("report_html")
    if not (json_path or html_path) or pipelines is None or hasattr(config, "workerinput"):
        return
    from pytest_orchestrator.reports import ReportsPlugin

    store = config.getoption("ray_durations")
    plugin = ReportsPlugin(
        config,
        pipelines,
        json_path=Path(json_path) if json_path else None,
        html_path=Path(html_path) if html_path else None,
        store_path=Path(store) if store else default_store_path(config.rootpath),
    )
    config.pluginmanager.register(plugin, "orchestrator-reports")


def _pipelines(config: pytest.Config, ray: bool) -> Pipelines | None:
    """Register kind handling when the run asks for it (``--ray``, ``--kinds``, ...)."""
    kinds_option = config.getoption("kinds", None)
    pattern = config.getoption("junit_pipelines", None)
    reports = not hasattr(config, "workerinput") and (
        config.getoption("report_json", None) or config.getoption("report_html", None)
    )
    if not (ray or kinds_option or pattern or reports):
        return None
    if pattern and not config.option.xmlpath:
        raise pytest.UsageError(
            "--junit-pipelines splits the JUnit report by pipeline: also give --junitxml PATH"
        )
    try:
        selected = parse_kinds(kinds_option) if kinds_option else None
        settings = load_settings(config.rootpath)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    pipelines = Pipelines(config, settings, selected, pipeline_paths(pattern))
    config.pluginmanager.register(pipelines, "orchestrator-pipelines")
    return pipelines
