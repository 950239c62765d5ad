"""The ``orchestrator`` command: ``run`` a suite on Ray, manage recorded ``durations``,
show a test's ``history``.

``main(argv)`` returns an exit code and never calls ``sys.exit``; our own errors
become one ``ERROR:`` line, unexpected ones keep their traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator import __version__
from orchestrator.cluster.shipping import parse_files_mode
from orchestrator.config import (
    available_cpus,
    default_store_path,
    find_project_root,
    parse_retries,
    parse_timeout,
    parse_workers,
)
from orchestrator.errors import OrchestratorError, UsageError
from orchestrator.pipelines.kinds import parse_kinds
from orchestrator.reports.progress import format_duration
from orchestrator.scheduling.retry import compile_pattern
from orchestrator.scheduling.sharding import parse_shard
from orchestrator.settings import load_settings
from orchestrator.store.durations import DurationStore, read_durations_file
from orchestrator.store.history import HistoryStore, history_lines
from orchestrator.worker.recycle import parse_max_memory, parse_max_tests

#: Exit code for usage errors, as pytest uses it.
EXIT_USAGE = 4


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Run pytest suites on Ray workers, longest tests first.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser(
        "run",
        help="run a pytest suite on Ray workers (other arguments go to pytest)",
        description="Run a pytest suite on Ray workers. Arguments not listed here "
        "(paths, -k, -m, -x, --junitxml, --pyargs, ...) go to pytest unchanged.",
        allow_abbrev=False,
    )
    run.add_argument("--workers", default="auto", metavar="N|auto", help="workers (default auto)")
    run.add_argument(
        "--address",
        default=None,
        metavar="HOST:PORT",
        help="existing Ray cluster (default $RAY_ADDRESS, else a local instance)",
    )
    run.add_argument(
        "--files",
        default=None,
        metavar="auto|ship|shared",
        help="how workers on other machines get the project (default auto: shipped to a "
        "cluster named by any address but loopback)",
    )
    run.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="leave files matching this gitignore-style pattern out of what is shipped",
    )
    run.add_argument("--durations-store", default=None, metavar="PATH", help="duration store")
    run.add_argument("--retries", default=None, metavar="N", help="retry a failed test N times")
    run.add_argument(
        "--retry-only", default=None, metavar="REGEX", help="retry only errors matching REGEX"
    )
    run.add_argument(
        "--fail-on-flaky", action="store_true", help="fail the run when a test passed on a retry"
    )
    run.add_argument(
        "--timeout", default=None, metavar="SECONDS", help="kill a test running longer than this"
    )
    run.add_argument(
        "--max-worker-memory",
        default=None,
        metavar="SIZE",
        help="replace a worker by a fresh one when its test process holds more than SIZE "
        "resident (500MB, 2GiB, ...)",
    )
    run.add_argument(
        "--max-tests-per-worker",
        default=None,
        metavar="N",
        help="replace a worker by a fresh one after N tests",
    )
    run.add_argument(
        "--kinds",
        default=None,
        metavar="KINDS",
        help="run only these kinds or pipelines (unit, integration, data_validation, "
        "model_performance; app, ml), comma separated",
    )
    run.add_argument(
        "--junit-pipelines",
        default=None,
        metavar="DIR|PATTERN",
        help="with --junitxml, also write one JUnit file per pipeline (DIR/junit-app.xml, "
        "DIR/junit-ml.xml, or a path containing {pipeline})",
    )
    run.add_argument(
        "--strict-resources",
        action="store_true",
        help="fail when a test needs resources no node has (default: skip it)",
    )
    run.add_argument(
        "--json", default=None, metavar="PATH", help="write the results as JSON (see README)"
    )
    run.add_argument(
        "--html",
        default=None,
        metavar="PATH",
        help="write a self-contained HTML report with a timeline per worker",
    )
    run.add_argument(
        "--shard",
        default=None,
        metavar="K/N|auto",
        help="run only shard K of N, split by recorded durations ('auto': from the CI's "
        "parallel-job variables)",
    )
    run.add_argument(
        "--collect",
        default=None,
        choices=("import", "lazy", "all"),
        help="import (default): every worker imports every test file first and generates "
        "a file's tests when first given one; lazy: a worker imports a test file only when "
        "first given one of its tests; all: every worker collects the whole suite first",
    )
    run.add_argument(
        "--head-start",
        default=None,
        choices=("on", "off"),
        help="on (default): workers start on the tests the last run collected while the "
        "controller collects (when no test, conftest or ini file changed); off: they wait",
    )
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="print pytest's usual per-test output instead of the live progress line",
    )

    durations = commands.add_parser("durations", help="inspect or seed the duration store")
    actions = durations.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    imp = actions.add_parser(
        "import",
        help="seed the store from JUnit XML reports or pytest-split .test_durations files",
    )
    imp.add_argument("files", nargs="+", type=Path, metavar="FILE")
    imp.add_argument("--store", type=Path, default=None, metavar="PATH")
    combine = actions.add_parser(
        "merge",
        help="add the duration stores of parallel jobs to this one",
        description="Merge duration stores (the .orchestrator/durations.db files that parallel "
        "CI jobs left) into the project's store (or --store): the next split uses all of "
        "them. A test in several stores keeps its most recently recorded value. The "
        "durations that --shard runs kept apart, in the inputs and in the store itself, "
        "are folded in; without STORE, only the store's own are.",
    )
    combine.add_argument("stores", nargs="*", type=Path, metavar="STORE")
    combine.add_argument("--store", type=Path, default=None, metavar="PATH")
    show = actions.add_parser("show", help="list the longest recorded tests")
    show.add_argument("--store", type=Path, default=None, metavar="PATH")
    show.add_argument("--top", type=int, default=20, metavar="N")

    history = commands.add_parser(
        "history",
        help="duration, flake rate and metric trends of recorded runs",
        description="Without TEST: the recent runs, the slowest and flakiest tests and the "
        "metrics. With TEST (any part of a test id): that test's trends.",
    )
    history.add_argument("test", nargs="?", default=None, metavar="TEST")
    history.add_argument("--store", type=Path, default=None, metavar="PATH")
    history.add_argument("--top", type=int, default=10, metavar="N")

    up = commands.add_parser(
        "up",
        help="keep a local Ray instance running for this project's runs",
        description="Start a local Ray instance (loopback only, no dashboard) that later "
        "runs in this project use instead of starting their own; saves Ray's start and "
        "stop on every run. Stop it with `orchestrator down`.",
    )
    up.add_argument("--cpus", type=int, default=None, metavar="N", help="default: all")
    up.add_argument("--gpus", type=int, default=None, metavar="N", help="default: detected")
    up.add_argument(
        "--resources",
        default="{}",
        metavar="JSON",
        help="custom resources to declare, e.g. '{\"fast_disk\": 2}'",
    )
    commands.add_parser("down", help="stop the local Ray instance of `orchestrator up`")

    merge = commands.add_parser(
        "merge",
        help="merge JUnit XML reports (CI jobs, pipelines) into one",
        description="Merge JUnit XML reports into OUT: one <testsuite> per suite name, a test "
        "found in several inputs (a retried job) once, with its earlier failures as "
        "flaky/rerun elements, totals recomputed. OUT is written only if the merge succeeds.",
    )
    merge.add_argument("out", type=Path, metavar="OUT")
    merge.add_argument("inputs", nargs="+", metavar="IN", help="files or glob patterns")
    merge.add_argument(
        "--time",
        choices=("sum", "wall"),
        default="sum",
        help="the report's total time: the inputs' times added up (default), or the "
        "longest input's (jobs that ran in parallel)",
    )
    return parser


def _store_path(explicit: Path | None) -> Path:
    return explicit if explicit is not None else default_store_path(find_project_root(Path.cwd()))


def _run(args: argparse.Namespace, pytest_args: list[str]) -> int:
    # Fail here, before pytest starts, on a bad value.
    parse_workers(args.workers)
    if args.retries is not None:
        parse_retries(args.retries)
    parse_timeout(args.timeout)
    compile_pattern(args.retry_only)
    if args.kinds is not None:
        parse_kinds(args.kinds)
    if args.shard is not None:
        parse_shard(args.shard, os.environ)
    if args.files is not None:
        parse_files_mode(args.files)
    parse_max_memory(args.max_worker_memory, "--max-worker-memory")
    parse_max_tests(args.max_tests_per_worker, "--max-tests-per-worker")
    import pytest

    # "--option=value": pytest picks its rootdir from arguments that name existing paths,
    # and a separate value (a duration store, a report directory) would count as one.
    argv = ["--ray", f"--ray-workers={args.workers}"]
    if args.address:
        argv.append(f"--ray-address={args.address}")
    if args.durations_store:
        argv.append(f"--ray-durations={args.durations_store}")
    for value, option in (
        (args.retries, "--ray-retries"),
        (args.retry_only, "--ray-retry-only"),
        (args.timeout, "--ray-timeout"),
        (args.kinds, "--kinds"),
        (args.junit_pipelines, "--junit-pipelines"),
        (args.shard, "--shard"),
        (args.files, "--ray-files"),
        (args.json, "--report-json"),
        (args.html, "--report-html"),
        (args.collect, "--ray-collect"),
        (args.head_start, "--ray-head-start"),
        (args.max_worker_memory, "--ray-max-worker-memory"),
        (args.max_tests_per_worker, "--ray-max-tests-per-worker"),
    ):
        if value is not None:
            argv.append(f"{option}={value}")
    argv.extend(f"--ray-exclude={pattern}" for pattern in args.exclude)
    if args.fail_on_flaky:
        argv.append("--ray-fail-on-flaky")
    if args.strict_resources:
        argv.append("--strict-resources")
    verbose = any(
        a == "--verbose" or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in pytest_args
    )
    if not args.no_progress and not verbose:
        argv.append("--ray-progress")
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        argv = ["-p", "pytest_orchestrator.plugin", *argv]
    if pytest_args and pytest_args[0] == "--":
        pytest_args = pytest_args[1:]
    return int(pytest.main([*argv, *pytest_args]))


def _import(args: argparse.Namespace) -> int:
    store = DurationStore(_store_path(args.store))
    for path in args.files:
        durations = read_durations_file(path)
        if not durations:
            raise OrchestratorError(f"{path}: no test durations found")
        written = store.record(durations, replace=True)
        print(f"imported {written} test durations from {path} into {store.path}")
    return 0


def _merge_stores(args: argparse.Namespace) -> int:
    store = DurationStore(_store_path(args.store))
    inputs = [(path, DurationStore(path).rows()) for path in args.stores]  # all checked first
    for path, rows in inputs:
        if path.resolve() == store.path.resolve():
            continue
        written = store.absorb(rows)
        print(f"{len(rows)} tests in {path}: {written} added or newer than in {store.path}")
    folded = store.fold()
    if folded or not inputs:
        print(f"{folded} durations of --shard runs folded into {store.path}")
    return 0


def _show(args: argparse.Namespace) -> int:
    store = DurationStore(_store_path(args.store))
    durations = store.load()
    apart = store.apart()
    if apart:
        print(
            f"{apart} durations recorded by --shard runs wait apart; "
            "`orchestrator durations merge` folds them in"
        )
    if not durations:
        print(f"no durations recorded in {store.path}")
        return 0
    longest = sorted(durations.items(), key=lambda kv: -kv[1])[: max(1, args.top)]
    total = sum(durations.values())
    print(f"{len(durations)} tests, {format_duration(total)} in total, in {store.path}")
    for nodeid, seconds in longest:
        print(f"{format_duration(seconds):>9}  {nodeid}")
    entries = sorted(store.entry_costs().items(), key=lambda kv: -kv[1])[: max(1, args.top)]
    if entries:
        print("entering a file (its module fixtures), the costliest:")
        for path, seconds in entries:
            print(f"{format_duration(seconds):>9}  {path}")
    return 0


def _history(args: argparse.Namespace) -> int:
    store = HistoryStore(_store_path(args.store))
    # Baselines as the runs compute them: the project's configured window.
    window = load_settings(find_project_root(Path.cwd())).metrics.window
    for line in history_lines(store, args.test, top=max(1, args.top), window=window):
        print(line)
    return 0


def _up(args: argparse.Namespace) -> int:
    from orchestrator.cluster import local_cluster

    cpus = args.cpus if args.cpus is not None else available_cpus()
    if cpus < 1 or (args.gpus is not None and args.gpus < 0):
        raise UsageError("--cpus must be at least 1 and --gpus at least 0")
    try:
        resources = json.loads(args.resources)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--resources is not JSON ({exc}); e.g. '{{\"fast_disk\": 2}}'") from None
    if not isinstance(resources, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in resources.values()
    ):
        raise UsageError("--resources must be a JSON object of numbers, e.g. '{\"fast_disk\": 2}'")
    root = find_project_root(Path.cwd())
    before = local_cluster.read_record(root)
    record = local_cluster.start(root, cpus, args.gpus, resources)
    state = "already running" if before is not None else "started"
    print(
        f"local Ray instance {state} at {record.address} ({record.cpus} CPUs, "
        f"{record.gpus} GPUs); runs in {root} use it until `orchestrator down`"
    )
    return 0


def _down(args: argparse.Namespace) -> int:
    from orchestrator.cluster import local_cluster

    root = find_project_root(Path.cwd())
    record = local_cluster.stop(root)
    if record is None:
        print(f"no local Ray instance of `orchestrator up` is running for {root}")
    else:
        print(f"stopped the local Ray instance at {record.address}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from orchestrator.reports.junit_merge import expand, merge

    inputs = [p for p in expand(args.inputs) if p.resolve() != args.out.resolve()]
    result = merge(args.out, inputs, time=args.time)
    retried = f", {result.duplicates} repeated test(s) kept once" if result.duplicates else ""
    print(
        f"merged {result.files} file(s) into {args.out}: {result.tests} tests in "
        f"{result.suites} suite(s), {result.failures} failed, {result.errors} errors, "
        f"{result.skipped} skipped{retried}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "run":
            return _run(args, extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command == "history":
            return _history(args)
        if args.command == "up":
            return _up(args)
        if args.command == "down":
            return _down(args)
        if args.command == "merge":
            return _merge(args)
        if args.action == "import":
            return _import(args)
        if args.action == "merge":
            return _merge_stores(args)
        return _show(args)
    except UsageError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OrchestratorError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
