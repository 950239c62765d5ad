"""Run suites side by side: serial pytest, pytest-xdist and the orchestrator.

    python -m benchmarks.run --workers 2 --out benchmarks/results

Prints a Markdown table and writes it, with the raw figures as JSON, to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks.suites import SUITES


def _pytest(suite: Path, *args: str, junit: Path | None = None) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "pytest", str(suite), "-q", "-p", "no:cacheprovider", *args]
    if junit is not None:
        cmd.append(f"--junitxml={junit}")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=suite)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.returncode


def _test_times(junit: Path) -> list[float]:
    return [float(c.get("time", 0)) for c in ET.parse(junit).getroot().iter("testcase")]


_CLUSTER = """
import logging, os, sys
import ray
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, logging_level=logging.ERROR,
         log_to_driver=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


class WarmCluster:
    """A Ray cluster kept running for the duration of a benchmark, like `ray start`."""

    def __init__(self, cpus: int) -> None:
        env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CLUSTER, str(cpus)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().strip()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)


def run_suite(name: str, workers: int, work_dir: Path) -> dict[str, object]:
    suite = SUITES[name](work_dir / name)
    store = work_dir / f"{name}-durations.db"
    serial_junit = work_dir / f"{name}-serial.xml"
    rows: dict[str, float] = {}
    rows["serial pytest"], _ = _pytest(suite, junit=serial_junit)
    times = _test_times(serial_junit)
    total, longest = sum(times), max(times)
    for dist in ("load", "worksteal"):
        rows[f"xdist --dist {dist} -n {workers}"], _ = _pytest(
            suite, "-n", str(workers), "--dist", dist
        )
    ray_args = ["--ray", "--ray-workers", str(workers), "--ray-durations", str(store)]
    rows[f"orchestrator cold, {workers} workers"], _ = _pytest(suite, *ray_args)
    rows[f"orchestrator warm, {workers} workers"], _ = _pytest(suite, *ray_args)
    cluster = WarmCluster(workers)
    try:
        rows[f"orchestrator warm, {workers} workers, running cluster"], _ = _pytest(
            suite, *ray_args, "--ray-address", cluster.address
        )
    finally:
        cluster.close()
    return {
        "suite": name,
        "workers": workers,
        "tests": len(times),
        "serial_test_seconds": total,
        "longest_test_seconds": longest,
        "lower_bound_seconds": max(total / workers, longest),
        "wall_seconds": rows,
    }


def markdown(result: dict[str, object]) -> str:
    walls: dict[str, float] = result["wall_seconds"]  # type: ignore[assignment]
    serial = walls["serial pytest"]
    bound = float(result["lower_bound_seconds"])  # type: ignore[arg-type]
    lines = [
        f"**{result['suite']}**: {result['tests']} tests, "
        f"{float(result['serial_test_seconds']):.1f} s of tests, "  # type: ignore[arg-type]
        f"lower bound {bound:.1f} s with {result['workers']} workers",
        "",
        "| runner | wall (s) | vs serial | bound / wall |",
        "|---|---:|---:|---:|",
    ]
    for runner, wall in walls.items():
        lines.append(f"| {runner} | {wall:.2f} | {wall / serial:.2f} | {bound / wall:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--suite", choices=sorted(SUITES), action="append")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    results = []
    with tempfile.TemporaryDirectory(prefix="orchestrator-bench-") as tmp:
        for name in args.suite or sorted(SUITES):
            results.append(run_suite(name, args.workers, Path(tmp)))
    text = "\n\n".join(markdown(r) for r in results) + f"\n\nMachine: {machine}\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(text)
    (args.out / "latest.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2)
    )
    shutil.rmtree(args.out / "tmp", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
