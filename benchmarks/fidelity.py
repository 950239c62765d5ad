"""Fidelity on real suites: each suite serially, then under ``--ray`` several times in a row.

    python -m benchmarks.fidelity [--runs 3] [--workers 2] [--suite NAME ...] [--out DIR]
        [--name NAME]

Third-party suites run unchanged: click's tests from the sdist of the installed click (the
package itself imported from site-packages), more-itertools' from its sdist (imported from
the unpacked source), scikit-learn's with ``--pyargs``. The first ``--ray`` run of a suite
has no recorded durations; the later ones have them and a head start, so the order changes
from run to run as it does for a user. Every test's verdict (its JUnit outcome) is compared
with the serial run's. Writes NAME.md and NAME.json to ``--out`` (``fidelity.md`` and
``fidelity.json`` unless ``--name`` says otherwise); commit a named result that the
documentation quotes.

Run it in the ``.[bench]`` environment: plugins installed besides (the dev extras' matrix)
apply to every run, serial and ``--ray`` alike.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from benchmarks.measure import differences, outcomes
from benchmarks.run import machine_info, result_name


@dataclass(frozen=True)
class Suite:
    """A third-party suite: how to get it, and the pytest arguments that run it."""

    name: str
    #: Prepares the suite under the work directory; returns (directory to run in, args).
    prepare: Callable[[Path], tuple[Path, list[str]]]


@dataclass
class Run:
    label: str
    wall: float
    exit_code: int
    #: Tests whose verdict differs from the serial run's ("key: serial -> this run").
    differences: list[str] = field(default_factory=list)


@dataclass
class SuiteResult:
    name: str
    command: str
    tests: int = 0
    runs: list[Run] = field(default_factory=list)


def _sdist(project: str, version: str | None, work: Path) -> Path:
    """Download and unpack ``project``'s source distribution; the unpacked directory."""
    spec = f"{project}=={version}" if version else project
    download = work / f"{project}-sdist"
    download.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    subprocess.run([*pip, "--no-binary", ":all:", spec, "-d", str(download)], check=True)
    (archive,) = download.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(download, filter="data")
    (unpacked,) = (p for p in download.iterdir() if p.is_dir())
    return unpacked


def _click(work: Path) -> tuple[Path, list[str]]:
    return _sdist("click", metadata.version("click"), work), ["tests"]


def _more_itertools(work: Path) -> tuple[Path, list[str]]:
    return _sdist("more-itertools", None, work), ["tests"]


def _sklearn(work: Path) -> tuple[Path, list[str]]:
    scratch = work / "sklearn-run"
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch, ["--pyargs", "sklearn.feature_extraction", "sklearn.impute"]


SUITES = {
    suite.name: suite
    for suite in (
        Suite("click", _click),
        Suite("more-itertools", _more_itertools),
        Suite("scikit-learn", _sklearn),
    )
}


def _pytest(cwd: Path, args: Sequence[str], junit: Path, timeout: float) -> tuple[float, int]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    start = time.perf_counter()
    proc = subprocess.run(
        [*command, f"--junitxml={junit}"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=timeout,
    )
    return time.perf_counter() - start, proc.returncode


def run_suite(suite: Suite, work: Path, runs: int, workers: int, timeout: float) -> SuiteResult:
    cwd, args = suite.prepare(work)
    store = work / f"{suite.name}.db"
    store.unlink(missing_ok=True)
    ray = ["--ray", "--ray-workers", str(workers), f"--ray-durations={store}"]
    result = SuiteResult(suite.name, shlex.join(["pytest", *args]))
    serial_junit = work / f"{suite.name}-serial.xml"
    wall, code = _pytest(cwd, args, serial_junit, timeout)
    if code not in (0, 1) or not serial_junit.exists():
        raise SystemExit(
            f"[{suite.name}] serial pytest did not run the suite (exit code {code}): run "
            f"`python -m pytest {shlex.join(args)}` in {cwd} to see why"
        )
    expected = outcomes([serial_junit])
    result.tests = len(expected)
    result.runs.append(Run("serial", wall, code))
    _log(f"[{suite.name}] serial: {len(expected)} tests, {wall:.2f} s, exit code {code}")
    for number in range(1, runs + 1):
        junit = work / f"{suite.name}-ray{number}.xml"
        wall, code = _pytest(cwd, [*args, *ray], junit, timeout)
        found = outcomes([junit]) if junit.exists() else {}
        run = Run(f"--ray run {number}", wall, code, differences(expected, found))
        result.runs.append(run)
        _log(f"[{suite.name}] {run.label}: {wall:.2f} s, {len(run.differences)} differences")
    return result


def markdown(results: Sequence[SuiteResult], workers: int) -> str:
    runs = max((len(r.runs) - 1 for r in results), default=0)
    head = "| suite | tests | serial (s) | " + " | ".join(
        f"`--ray` run {n}: differences, wall (s)" for n in range(1, runs + 1)
    )
    lines = [head + " |", "|---|---:|---:|" + "---:|" * runs]
    for result in results:
        serial, *ray = result.runs
        cells = [f"{len(run.differences)}, {run.wall:.2f}" for run in ray]
        lines.append(
            f"| {result.name} | {result.tests} | {serial.wall:.2f} | " + " | ".join(cells) + " |"
        )
    notes = [
        "",
        f"Workers: {workers}. Run 1 without recorded durations, later runs with them.",
        "",
    ]
    for result in results:
        notes.append(f"- {result.name}: `{result.command}`")
        for run in result.runs[1:]:
            for line in run.differences[:10]:
                notes.append(f"  - {run.label}: {line}")
    return "\n".join(lines + notes) + "\n"


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fidelity",
        description="Compare every test's verdict under --ray with serial pytest's, on "
        "third-party suites run unchanged.",
    )
    parser.add_argument("--runs", type=int, default=3, help="--ray runs per suite")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--suite", action="append", choices=sorted(SUITES), help="a suite (default: all)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--name",
        type=result_name,
        default="fidelity",
        help="results go to NAME.md and NAME.json (default: fidelity)",
    )
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="fidelity-") as tmp:
        for name in args.suite or list(SUITES):
            results.append(
                run_suite(SUITES[name], Path(tmp), args.runs, args.workers, args.timeout)
            )
    text = markdown(results, args.workers)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(text)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"machine": machine_info(), "suites": [asdict(r) for r in results]}, indent=2)
    )
    print(text)
    return 1 if any(run.differences for r in results for run in r.runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
