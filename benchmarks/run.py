"""Run suites side by side: serial pytest, pytest-xdist, pytest-split and the orchestrator.

    python -m benchmarks.run --workers 2 [--suite NAME ...] [--runners KEY,KEY] [--quick]

Prints a Markdown table per suite and writes it to ``--out``/latest.md, with the raw figures
in latest.json and a bar chart in latest.png. Serial pytest always runs first: the lower
bound, pytest-split's durations and the outcome comparison come from it.
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
from benchmarks.runners import BY_KEY, RUNNERS, SERIAL, Context, Runner, Store, Target
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


def _prepare_store(runner: Runner, ctx: Context, timeout: float) -> None:
    if runner.store is Store.FRESH:
        shutil.rmtree(ctx.store.parent, ignore_errors=True)
    ctx.store.parent.mkdir(parents=True, exist_ok=True)
    if runner.store is not Store.WARM or ctx.store.exists():
        return
    # Warm means a run before this one: seeded with the serial run's durations, it
    # leaves its own durations and what it collected (the next run's head start).
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
    commands, junits = runner.commands(warm)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run_concurrently(
        commands, cwd=ctx.target.cwd, env=env, run_dir=warm.run_dir, junits=junits, timeout=timeout
    )


def _measure(runner: Runner, ctx: Context, timeout: float) -> tuple[Measurement, list[str]]:
    _prepare_store(runner, ctx, timeout)
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


def _shown(command: list[str], work_dir: Path | None) -> str:
    """``command`` as the report shows it: ``python`` for this interpreter and ``$WORK`` for
    the benchmark's directory, so that it reads the same on any machine."""
    line = shlex.join("python" if arg == sys.executable else arg for arg in command)
    return line if work_dir is None else line.replace(str(work_dir), "$WORK")


def _median(runs: list[tuple[Measurement, list[str]]]) -> tuple[Measurement, list[str]]:
    return sorted(runs, key=lambda r: r[0].wall)[(len(runs) - 1) // 2]


def _run_runner(
    runner: Runner, base: Context, repeat: int, timeout: float
) -> tuple[RunResult, Measurement]:
    runs = []
    for i in range(repeat):
        ctx = replace(base, run_dir=base.run_dir / f"{runner.key}-{i}")
        runs.append(_measure(runner, ctx, timeout))
    measurement, commands = _median(runs)
    result = RunResult(
        runner=runner.key,
        label=runner.title(base.workers),
        parallelism=base.workers if runner.parallel else 1,
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
    """Generate (or locate) one suite and run it with every runner, serial pytest first."""
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
    serial, measurement = _run_runner(SERIAL, base, repeat, timeout)
    _log(f"[{name}] {serial.label}: {serial.wall:.2f} s")
    if serial.failed:
        return SuiteResult(name, workers, 0, 0.0, 0.0, runs=[serial])
    times = durations_by_test(measurement.junits)
    expected = outcomes(measurement.junits)
    suite = SuiteResult(
        suite=name,
        workers=workers,
        tests=len(times),
        total_test_seconds=sum(times.values()),
        longest_test_seconds=max(times.values(), default=0.0),
        runs=[serial],
    )
    for runner in runners:
        if runner is SERIAL:
            continue
        if runner.cluster:
            with WarmCluster(workers) as cluster:
                ctx = replace(base, cluster_address=cluster.address)
                result, measurement = _run_runner(runner, ctx, repeat, timeout)
        else:
            result, measurement = _run_runner(runner, base, repeat, timeout)
        if not result.failed:
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
    parser.add_argument("--repeat", type=int, default=1, help="runs per runner; median wall")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results"), help="where results go"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="keep the generated suites, reports and logs here (default: a temporary directory)",
    )
    return parser


def _write(
    out: Path, suites: list[SuiteResult], machine: dict[str, Any], command: str
) -> str | None:
    """Write latest.md, latest.json and latest.png; say why the chart is missing if it is."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.md").write_text(markdown(suites, machine, command))
    (out / "latest.json").write_text(as_json(suites, machine, command) + "\n")
    return chart(suites, out / "latest.png")


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
            why_not = _write(args.out, suites, machine, command)
    print(markdown_tail(machine, command))
    written = ["latest.md", "latest.json"] + ([] if why_not else ["latest.png"])
    print(f"written to {args.out}: {', '.join(written)}")
    if why_not:
        print(why_not)
    failed = any(run.failed for suite in suites for run in suite.runs)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
