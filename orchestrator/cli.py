"""The ``orchestrator`` command: ``run`` a suite on Ray, manage recorded ``durations``,
show a test's ``history``, the ``flaky`` tests, and the ``quarantine``.

``main(argv)`` returns an exit code and never calls ``sys.exit``; our own errors
become one ``ERROR:`` line, unexpected ones keep their traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestrator import __version__
from orchestrator.config import available_cpus, find_project_root, store_path
from orchestrator.errors import OrchestratorError, UsageError
from orchestrator.options import RUN_OPTIONS, as_pytest_args, check_run_args
from orchestrator.pipelines.flaky import Entry, parse_until
from orchestrator.reports.atomic import write_text_atomically
from orchestrator.reports.flaky_list import flaky_lines, quarantine_lines
from orchestrator.reports.metric_compare import compare_lines
from orchestrator.reports.progress import format_duration
from orchestrator.settings import load_settings
from orchestrator.store.durations import DurationStore, read_durations_file
from orchestrator.store.history import HistoryStore, history_lines
from orchestrator.store.quarantine import QuarantineStore, export_entries, import_entries

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
    for option in RUN_OPTIONS:
        run.add_argument(option.run_flag, **option.cli_kwargs())

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
    history.add_argument(
        "--compare",
        default=None,
        metavar="REF",
        help="every metric's newest value against its baseline at a branch, tag or commit",
    )

    flaky = commands.add_parser(
        "flaky",
        help="tests that flaked in their recent runs: rate, last flake, messages, commits",
        description="Tests that failed and then passed on a retry, or failed on a commit "
        "that also passed them, in their last runs (the window under "
        "[tool.orchestrator.quarantine], 20 by default): flake rate, last flake, their "
        "failure messages grouped, and the commits they flaked on.",
    )
    flaky.add_argument("--store", type=Path, default=None, metavar="PATH")
    flaky.add_argument("--top", type=int, default=20, metavar="N")

    quarantine = commands.add_parser(
        "quarantine",
        help="list, add or remove quarantined tests (they run, but do not fail the run)",
        description="A quarantined test still runs and its failure is reported, but a run "
        "whose only failures are quarantined tests' passes. The quarantine is kept in the "
        "store, with the tests named under [tool.orchestrator.quarantine] in pyproject.toml.",
    )
    q_actions = quarantine.add_subparsers(dest="action", metavar="ACTION")
    q_actions.required = True
    q_list = q_actions.add_parser("list", help="the quarantined tests and their progress")
    q_add = q_actions.add_parser("add", help="quarantine a test")
    q_add.add_argument("test", metavar="TEST", help="the test's id (tests/test_x.py::test_y)")
    q_add.add_argument("--reason", required=True, help="why (an issue, a cause)")
    q_add.add_argument("--until", default=None, metavar="YYYY-MM-DD", help="its last day")
    q_remove = q_actions.add_parser("remove", help="take tests out of quarantine")
    q_remove.add_argument("tests", nargs="+", metavar="TEST")
    q_export = q_actions.add_parser("export", help="write the quarantine to a JSON file")
    q_export.add_argument("file", nargs="?", type=Path, default=None, metavar="FILE")
    q_import = q_actions.add_parser("import", help="add the tests of an exported file")
    q_import.add_argument("file", type=Path, metavar="FILE")
    for sub in (q_list, q_add, q_remove, q_export, q_import):
        sub.add_argument("--store", type=Path, default=None, metavar="PATH")

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


def _root() -> Path:
    """The project's root as pytest would find it here (see ``find_project_root``)."""
    return find_project_root(Path.cwd())


def _store_path(explicit: Path | None) -> Path:
    return store_path(_root(), explicit)


def _run(args: argparse.Namespace, pytest_args: list[str]) -> int:
    check_run_args(args)  # fail here, before pytest starts, on a bad value
    import pytest

    verbose = any(
        a == "--verbose" or (a.startswith("-v") and set(a[1:]) == {"v"}) for a in pytest_args
    )
    argv = as_pytest_args(args, verbose=verbose)
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
    quarantine = QuarantineStore(store.path)
    for path, _ in inputs:
        if path.resolve() != store.path.resolve():
            changed = quarantine.absorb(QuarantineStore(path))
            if changed:
                print(f"quarantine: {changed} change(s) from {path} taken into {store.path}")
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
    policy = load_settings(_root()).metrics
    if args.compare is not None:
        if args.test is not None:
            raise UsageError("--compare shows every metric: leave out TEST")
        for line in compare_lines(store, args.compare, policy):
            print(line)
        return 0
    window = policy.window
    for line in history_lines(store, args.test, top=max(1, args.top), window=window):
        print(line)
    return 0


def _flaky(args: argparse.Namespace) -> int:
    settings = load_settings(_root())
    path = _store_path(args.store)
    entries = QuarantineStore(path).entries_with(settings.quarantine)
    lines = flaky_lines(
        HistoryStore(path), entries, settings.flake_policy, max(1, args.top), dt.date.today()
    )
    for line in lines:
        print(line)
    return 0


def _quarantine(args: argparse.Namespace) -> int:
    settings = load_settings(_root())
    store = QuarantineStore(_store_path(args.store))
    today = dt.date.today()
    if args.action == "list":
        for line in quarantine_lines(
            store.entries_with(settings.quarantine), settings.flake_policy, today
        ):
            print(line)
    elif args.action == "add":
        reason = args.reason.strip()
        if not reason:
            raise UsageError('give the reason the test is quarantined: --reason "..."')
        until = parse_until(args.until, "--until") if args.until else None
        if until is not None and until < today:
            raise UsageError(f"--until {until} has passed; give a date from today on")
        store.add([Entry(args.test, reason, until, "manual")])
        print(f"quarantined {args.test}: {reason}" + (f", until {until}" if until else ""))
    elif args.action == "remove":
        named = {e.nodeid for e in settings.quarantine}
        in_pyproject = [t for t in args.tests if t in named]
        if in_pyproject:
            raise UsageError(
                f"{', '.join(in_pyproject)}: named under [tool.orchestrator.quarantine] in "
                "pyproject.toml; take it out of the file's tests list"
            )
        removed = store.remove(args.tests)
        if removed < len(args.tests):
            raise UsageError(
                f"{len(args.tests) - removed} of the tests given are not quarantined; "
                "`orchestrator quarantine list` shows those that are"
            )
        print(f"{removed} test(s) out of quarantine")
    elif args.action == "export":
        text = export_entries(store.entries_with(settings.quarantine))
        if args.file is None:
            print(text, end="")
        else:
            write_text_atomically(args.file, text)
            print(f"wrote the quarantine to {args.file}")
    else:
        entries = import_entries(args.file)
        store.add([e for e in entries if e.source != "pyproject"])
        print(f"imported {len(entries)} quarantined test(s) from {args.file} into {store.path}")
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
    root = _root()
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

    root = _root()
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
        if args.command == "flaky":
            return _flaky(args)
        if args.command == "quarantine":
            return _quarantine(args)
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
