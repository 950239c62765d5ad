"""Run suites side by side: serial pytest, pytest-xdist, pytest-split and the orchestrator.

    python -m benchmarks.run --workers 2 [--suite NAME ...] [--runners KEY,KEY] [--quick]
        [--repeat N] [--name NAME]

Prints a Markdown table per suite and writes it to ``--out``/NAME.md (``latest.md`` unless
``--name`` says otherwise), with the raw figures in NAME.json and a bar chart in NAME.png.
``latest.*`` is not committed; a named result is, so that every figure the documentation
quotes can be traced to one.

With ``--repeat N`` the runs go in N rounds, each running every runner once, serial pytest
first: drift of the machine weighs on every runner alike. Serial pytest's first run gives
the lower bound and the outcomes the others are compared with; pytest-split's durations
come from one more serial run, unmeasured, so the measured one is plain pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.cluster import WarmCluster
from benchmarks.measure import (
    Measurement,
    differences,
    durations_by_test,
    outcomes,
    run_concurrently,
)
from benchmarks.report import (
    RunResult,
    SuiteResult,
    as_json,
    chart,
    markdown,
    markdown_suite,
    markdown_tail,
)
from benchmarks.runners import (
    BY_KEY,
    RUNNERS,
    SERIAL,
    SPLIT_DURATIONS,
    Context,
    Runner,
    Store,
    Target,
)
from benchmarks.targets import NAMES, make_target

QUICK_SCALE = 0.2
_PROJECT = Path(__file__).resolve().parent.parent
_PACKAGES = ("pytest", "pytest-xdist", "pytest-split", "ray", "scikit-learn")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _warm_up(target: Target, timeout: float) -> None:
    """Collect once, unmeasured, so no runner pays for compiling and rewriting the modules."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *target.args,
            "-q",
            "--collect-only",
            "-p",
            "no:cacheprovider",
        ],
        cwd=target.cwd,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


@contextlib.contextmanager
def _cluster_for(runner: Runner, ctx: Context) -> Iterator[Context]:
    """``ctx`` with the address of a Ray cluster started for this one run of a cluster runner,
    and stopped after it: an idle cluster takes some CPU, which must not weigh on the runs
    of other runners."""
    if not runner.cluster:
        yield ctx
        return
    with WarmCluster(ctx.workers) as cluster:
        yield replace(ctx, cluster_address=cluster.address)


def _prepare_store(runner: Runner, ctx: Context, timeout: float) -> None:
    # The warm runners share the suite's store, which a cold run empties: in every round,
    # they find what that round's cold run left (and then each other's runs).
    if runner.store is Store.FRESH:
        shutil.rmtree(ctx.store.parent, ignore_errors=True)
    ctx.store.parent.mkdir(parents=True, exist_ok=True)
    if runner.store is not Store.WARM or ctx.store.exists():
        return
    # Warm means a run before this one: seeded with pytest-split's durations (a serial
    # run's), it leaves its own durations and what it collected (the next run's head start).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "durations",
            "import",
            str(ctx.split_durations),
            "--store",
            str(ctx.store),
        ],
        cwd=ctx.target.cwd,
        capture_output=True,
        timeout=timeout,
        check=True,
    )
    _log(f"  {runner.key}: a run to warm the store, unmeasured")
    warm = replace(ctx, run_dir=ctx.run_dir.with_name(f"{runner.key}-warm-up"))
    with _cluster_for(runner, warm) as ready:
        _run(runner, ready, timeout)


def _run(runner: Runner, ctx: Context, timeout: float) -> tuple[Measurement, list[str]]:
    """One run of ``runner``'s command lines, as they are, and the commands as shown."""
    commands, junits = runner.commands(ctx)
    # The embedded-cluster runs must start their own Ray, whatever the caller's shell says.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    measurement = run_concurrently(
        commands,
        cwd=ctx.target.cwd,
        env=env,
        run_dir=ctx.run_dir,
        junits=junits,
        timeout=timeout,
    )
    return measurement, [_shown(c, ctx.work_dir) for c in commands]


def _measure(runner: Runner, ctx: Context, timeout: float) -> tuple[Measurement, list[str]]:
    """One measured run; the store and the cluster it needs are made ready outside the
    measurement."""
    _prepare_store(runner, ctx, timeout)
    with _cluster_for(runner, ctx) as ready:
        return _run(runner, ready, timeout)


def _shown(command: list[str], work_dir: Path | None) -> str:
    """``command`` as the report shows it: ``python`` for this interpreter and ``$WORK`` for
    the benchmark's directory, so that it reads the same on any machine."""
    line = shlex.join("python" if arg == sys.executable else arg for arg in command)
    return line if work_dir is None else line.replace(str(work_dir), "$WORK")


def _median(runs: list[tuple[Measurement, list[str]]]) -> tuple[Measurement, list[str]]:
    return sorted(runs, key=lambda r: r[0].wall)[(len(runs) - 1) // 2]


def schedule(runners: Sequence[Runner], repeat: int) -> list[tuple[int, Runner]]:
    """The measured runs in order, as (round, runner): every round runs every runner once,
    serial pytest first, the others in the order given.

    Interleaved rather than each runner's repeats in a row, so that the machine drifting over
    time (its temperature, other load) weighs on every runner alike instead of posing as a
    difference between them.
    """
    ordered = [SERIAL, *(r for r in runners if r is not SERIAL)]
    return [(round_, runner) for round_ in range(repeat) for runner in ordered]


def _result(
    runner: Runner, workers: int, runs: list[tuple[Measurement, list[str]]]
) -> tuple[RunResult, Measurement]:
    """The runner's row, from its median run; every run's wall in ``walls``, in run order."""
    measurement, commands = _median(runs)
    result = RunResult(
        runner=runner.key,
        label=runner.title(workers),
        parallelism=workers if runner.parallel else 1,
        commands=commands,
        wall=measurement.wall,
        startup=measurement.startup,
        returncode=measurement.returncode,
        walls=[m.wall for m, _ in runs],
    )
    if not measurement.ok or not measurement.junits:
        result.error = f"exit code {measurement.returncode}"
        result.log_tail = measurement.log_tail
        _log(f"{result.label} failed ({result.error}); its output ends:\n{result.log_tail}")
    return result, measurement


def _store_split_durations(base: Context, timeout: float) -> RunResult | None:
    """Write pytest-split's durations file, unmeasured; the failed run's row if it failed."""
    _log(f"[{base.target.name}] {SPLIT_DURATIONS.label}, unmeasured")
    ctx = replace(base, run_dir=base.run_dir / SPLIT_DURATIONS.key)
    ran = _run(SPLIT_DURATIONS, ctx, timeout)
    result, measurement = _result(SPLIT_DURATIONS, base.workers, [ran])
    if not result.failed and not base.split_durations.exists():
        result.error = "no durations file"
        result.log_tail = measurement.log_tail
    return result if result.failed else None


def _failed_suite(name: str, workers: int, repeat: int, run: RunResult) -> SuiteResult:
    return SuiteResult(name, workers, 0, 0.0, 0.0, repeat=repeat, runs=[run])


def bench_suite(
    name: str,
    runners: list[Runner],
    *,
    workers: int,
    scale: float,
    repeat: int,
    timeout: float,
    work_dir: Path,
) -> SuiteResult:
    """Generate (or locate) one suite and run it ``repeat`` times with every runner, in
    interleaved rounds (see ``schedule``)."""
    target = make_target(name, work_dir / "suites", scale)
    _warm_up(target, timeout)
    base = Context(
        target=target,
        workers=workers,
        run_dir=work_dir / "runs" / name,
        split_durations=work_dir / "runs" / f"{name}.test_durations",
        store=work_dir / "stores" / name / "durations.db",
        work_dir=work_dir,
    )
    order = schedule(runners, repeat)
    if any(runner.needs_split_durations for _, runner in order):
        failed = _store_split_durations(base, timeout)
        if failed is not None:
            return _failed_suite(name, workers, repeat, failed)
    runs: dict[str, list[tuple[Measurement, list[str]]]] = {}
    for round_, runner in order:
        ctx = replace(base, run_dir=base.run_dir / f"{runner.key}-{round_}")
        measurement, commands = _measure(runner, ctx, timeout)
        runs.setdefault(runner.key, []).append((measurement, commands))
        _log(f"[{name}] round {round_ + 1}, {runner.title(workers)}: {measurement.wall:.2f} s")
        if runner is SERIAL and round_ == 0 and (not measurement.ok or not measurement.junits):
            # Nothing to compare the others with.
            serial, _ = _result(SERIAL, workers, runs[SERIAL.key])
            return _failed_suite(name, workers, repeat, serial)
    # The lower bound and the expected outcomes come from serial pytest's first run: the one
    # known to have run the suite before the others ran (each test's outcome and time do
    # not depend on which of serial's runs had the median wall).
    first = runs[SERIAL.key][0][0]
    times = durations_by_test(first.junits)
    expected = outcomes(first.junits)
    suite = SuiteResult(
        suite=name,
        workers=workers,
        tests=len(times),
        total_test_seconds=sum(times.values()),
        longest_test_seconds=max(times.values(), default=0.0),
        repeat=repeat,
    )
    for runner in (r for round_, r in order if round_ == 0):
        result, measurement = _result(runner, workers, runs[runner.key])
        if runner is not SERIAL and not result.failed:
            result.differences = differences(expected, outcomes(measurement.junits))
        _log(f"[{name}] {result.label}: " + ("FAILED" if result.failed else f"{result.wall:.2f} s"))
        suite.runs.append(result)
    return suite


def machine_info() -> dict[str, Any]:
    """What the figures depend on: hardware, load, versions and the project's commit."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    for package in _PACKAGES:
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    info["commit"] = _commit()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _commit() -> str:
    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=_PROJECT, capture_output=True, text=True, check=False
        )
        return proc.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    return (head or "unknown") + (" (with uncommitted changes)" if dirty else "")


def _runner_list(text: str) -> list[Runner]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown runner(s) {', '.join(unknown)}; choose from {', '.join(BY_KEY)}"
        )
    return [r for r in RUNNERS if r.key in keys]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workers", type=int, default=2, help="W, workers per runner")
    parser.add_argument(
        "--suite",
        choices=NAMES,
        action="append",
        help="a suite to run (repeatable; default: all)",
    )
    parser.add_argument(
        "--runners",
        type=_runner_list,
        default=list(RUNNERS),
        help=f"comma-separated runners (default: all): {','.join(BY_KEY)}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smaller suites for a smoke run (scale {QUICK_SCALE}; one sklearn subpackage)",
    )
    parser.add_argument("--scale", type=float, default=None, help="suite size factor")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per runner, in interleaved rounds; the table shows the median wall",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results"), help="where results go"
    )
    parser.add_argument(
        "--name",
        type=result_name,
        default="latest",
        help="results go to NAME.md, NAME.json and NAME.png (default: latest, not committed)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the generated suites, reports and logs here (default: a temporary directory)",
    )
    return parser


def result_name(text: str) -> str:
    """``--name``: a file name without its suffix, so results stay in ``--out``."""
    if not text or text in (".", "..") or "/" in text or os.sep in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file name (no directories)")
    return text


def _write(
    out: Path, name: str, suites: list[SuiteResult], machine: dict[str, Any], command: str
) -> str | None:
    """Write NAME.md, NAME.json and NAME.png; say why the chart is missing if it is."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(markdown(suites, machine, command))
    (out / f"{name}.json").write_text(as_json(suites, machine, command) + "\n")
    return chart(suites, out / f"{name}.png")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.workers < 1 or args.repeat < 1:
        parser.error("--workers and --repeat must be at least 1")
    scale = args.scale if args.scale is not None else (QUICK_SCALE if args.quick else 1.0)
    runners = [SERIAL, *(r for r in args.runners if r is not SERIAL)]
    command = shlex.join(
        ["python", "-m", "benchmarks.run", *(sys.argv[1:] if argv is None else argv)]
    )
    machine = machine_info()
    suites: list[SuiteResult] = []
    why_not: str | None = None
    with contextlib.ExitStack() as stack:
        if args.work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        else:
            shutil.rmtree(args.work_dir, ignore_errors=True)
            work_dir = args.work_dir.resolve()
        for name in args.suite or NAMES:
            suite = bench_suite(
                name,
                runners,
                workers=args.workers,
                scale=scale,
                repeat=args.repeat,
                timeout=args.timeout,
                work_dir=work_dir,
            )
            suites.append(suite)
            print(markdown_suite(suite) + "\n", flush=True)
            # After every suite, so an interrupted run keeps what it measured.
            why_not = _write(args.out, args.name, suites, machine, command)
    print(markdown_tail(machine, command))
    suffixes = ["md", "json"] + ([] if why_not else ["png"])
    written = [f"{args.name}.{suffix}" for suffix in suffixes]
    print(f"written to {args.out}: {', '.join(written)}")
    if why_not:
        print(why_not)
    failed = any(run.failed for suite in suites for run in suite.runs)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
