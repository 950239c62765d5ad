"""The options (defined in orchestrator.options) and their values; registers the Ray
session only when ``--ray`` is given.

Nothing here imports Ray: without ``--ray`` the plugin changes nothing.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Generator
from pathlib import Path
from typing import TypeVar

import pytest

from orchestrator.config import RunOptions, store_path
from orchestrator.errors import UsageError
from orchestrator.options import (
    ADDRESS,
    DURATIONS,
    EXCLUDE,
    FAIL_ON_FLAKY,
    FILES,
    HEAD_START,
    JUNIT_PIPELINES,
    KINDS,
    MAX_TESTS_PER_WORKER,
    MAX_WORKER_MEMORY,
    OPTIONS,
    PROGRESS,
    QUARANTINE,
    RAY,
    REPORT_HTML,
    REPORT_JSON,
    RETRIES,
    RETRY_ONLY,
    SHARD,
    STRICT_QUARANTINE,
    TIMEOUT,
    WORKERS,
    Option,
)
from orchestrator.pipelines.kinds import marker_lines
from orchestrator.settings import load_settings
from orchestrator.worker.recycle import RecyclePolicy
from pytest_orchestrator.metrics import pytest_runtest_makereport, record_metric
from pytest_orchestrator.pipelines import Pipelines, pipeline_paths

T = TypeVar("T")

__all__ = ["pytest_runtest_makereport", "record_metric"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("orchestrator", "run the suite on Ray workers (orchestrator)")
    for option in OPTIONS:
        group.addoption(option.pytest, **option.pytest_kwargs())


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


def _value(config: pytest.Config, option: Option[T]) -> T | None:
    """The option's checked value; None when not given (and without default)."""
    text = config.getoption(option.dest)
    return None if text is None else option.parse(str(text))


def _store_path(config: pytest.Config) -> Path:
    return store_path(config.rootpath, config.getoption(DURATIONS.dest))


def _options(config: pytest.Config) -> RunOptions:
    try:
        workers = _value(config, WORKERS)
        retries = _value(config, RETRIES) or 0
        timeout = _value(config, TIMEOUT)
        retry_only = config.getoption(RETRY_ONLY.dest)
        _value(config, RETRY_ONLY)
        settings = load_settings(config.rootpath)
        files = _value(config, FILES) or settings.files or "auto"
        recycle = _recycle_policy(config, settings.recycle)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("numprocesses", None):
        raise pytest.UsageError(
            "--ray and -n (pytest-xdist) both distribute tests: use one of them "
            "(drop -n, or pass -n 0 when your configuration adds it)"
        )
    address = config.getoption(ADDRESS.dest) or os.environ.get("RAY_ADDRESS") or None
    if address is None:  # a local instance kept warm by `orchestrator up`
        from orchestrator.cluster.local_cluster import read_record

        record = read_record(config.rootpath)
        address = record.address if record is not None else None
    return RunOptions(
        workers=workers,
        address=address,
        store_path=_store_path(config),
        progress=bool(config.getoption(PROGRESS.dest)),
        retries=retries,
        retry_only=retry_only,
        fail_on_flaky=bool(config.getoption(FAIL_ON_FLAKY.dest)),
        timeout=timeout,
        files=files,
        excludes=(*settings.ship_excludes, *config.getoption(EXCLUDE.dest)),
        head_start=config.getoption(HEAD_START.dest) == "on",
        recycle=recycle,
    )


def _recycle_policy(config: pytest.Config, configured: RecyclePolicy) -> RecyclePolicy:
    """The command line's recycling limits, else pyproject's."""
    given_memory = config.getoption(MAX_WORKER_MEMORY.dest) is not None
    given_tests = config.getoption(MAX_TESTS_PER_WORKER.dest) is not None
    return RecyclePolicy(
        _value(config, MAX_WORKER_MEMORY) if given_memory else configured.max_memory,
        _value(config, MAX_TESTS_PER_WORKER) if given_tests else configured.max_tests,
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
    ray = bool(config.getoption(RAY.dest, False)) and not hasattr(config, "workerinput")
    pipelines = _pipelines(config, ray)
    _shard(config, ray)
    _reports(config, pipelines)
    if not ray:
        _quarantine(config)
        return
    options = _options(config)
    assert pipelines is not None  # always registered for --ray
    from pytest_orchestrator.session import RaySession
    from pytest_orchestrator.terminal import SummaryLookups
    from pytest_orchestrator.xdist_nodes import declare_hooks

    declare_hooks(config)

    session = RaySession(config, options, pipelines)
    config.pluginmanager.register(session, "orchestrator-session")
    config.pluginmanager.register(SummaryLookups(session.terminal), "orchestrator-summary")
    _quarantine(config)  # after the session: its end of session hook runs before the session's


def _quarantine(config: pytest.Config) -> None:
    """Register the quarantine on the process that reports (not on workers), unless it is
    turned off."""
    if hasattr(config, "workerinput"):
        return
    if config.getoption(QUARANTINE.dest, "on") == "off" or config.getoption(
        STRICT_QUARANTINE.dest, False
    ):
        return
    try:
        settings = load_settings(config.rootpath)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    store = _store_path(config)
    if not (settings.quarantine or settings.flake_policy.auto or store.exists()):
        return  # nothing quarantined, nothing to read
    from pytest_orchestrator.quarantine import quarantine_plugin

    plugin = quarantine_plugin(settings, store, dt.date.today())
    if plugin is not None:
        config.pluginmanager.register(plugin, "orchestrator-quarantine")


def _shard(config: pytest.Config, ray: bool) -> None:
    """Register ``--shard`` on the process that selects the tests (not on workers)."""
    if not config.getoption(SHARD.dest, None) or hasattr(config, "workerinput"):
        return
    try:
        shard = _value(config, SHARD)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    if shard is None:  # --shard auto in a job that is not split
        return
    from pytest_orchestrator.shard import ShardPlugin

    # Under --ray the Ray session records durations; plain runs record them here.
    config.pluginmanager.register(
        ShardPlugin(shard, _store_path(config), record=not ray), "orchestrator-shard"
    )


def _reports(config: pytest.Config, pipelines: Pipelines | None) -> None:
    json_path = config.getoption(REPORT_JSON.dest)
    html_path = config.getoption(REPORT_HTML.dest)
    if not (json_path or html_path) or pipelines is None or hasattr(config, "workerinput"):
        return
    from pytest_orchestrator.reports import ReportsPlugin

    plugin = ReportsPlugin(
        config,
        pipelines,
        json_path=Path(json_path) if json_path else None,
        html_path=Path(html_path) if html_path else None,
        store_path=_store_path(config),
    )
    config.pluginmanager.register(plugin, "orchestrator-reports")


def _pipelines(config: pytest.Config, ray: bool) -> Pipelines | None:
    """Register kind handling when the run asks for it (``--ray``, ``--kinds``, ...)."""
    kinds_option = config.getoption(KINDS.dest, None)
    pattern = config.getoption(JUNIT_PIPELINES.dest, None)
    reports = not hasattr(config, "workerinput") and (
        config.getoption(REPORT_JSON.dest, None) or config.getoption(REPORT_HTML.dest, None)
    )
    if not (ray or kinds_option or pattern or reports):
        return None
    if pattern and not config.option.xmlpath:
        raise pytest.UsageError(
            "--junit-pipelines splits the JUnit report by pipeline: also give --junitxml PATH"
        )
    try:
        selected = _value(config, KINDS) if kinds_option else None
        settings = load_settings(config.rootpath)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    pipelines = Pipelines(config, settings, selected, pipeline_paths(pattern))
    config.pluginmanager.register(pipelines, "orchestrator-pipelines")
    return pipelines
