"""How long `orchestrator merge` takes on large reports, and how much memory it needs.

    python -m benchmarks.merge [--tests 100000] [--files 8]

Writes ``--files`` JUnit reports holding ``--tests`` test cases between them (one in twenty
failing with a traceback and captured output, like a real suite's report, and the last file
repeating the first file's tests as a retried job would), merges them in a fresh process and
prints the input size, the wall time and the merging process's peak memory.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_TRACE = "    def test():\n>       assert compute() == expected\nE       AssertionError\n" * 8

_MEASURE = """
import resource, sys, time
from pathlib import Path
from orchestrator.reports.junit_merge import merge
start = time.perf_counter()
result = merge(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
seconds = time.perf_counter() - start
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{seconds:.2f} {peak_mib:.0f} {result.tests} {result.duplicates}")
"""


def _report(path: Path, first: int, count: int, stamp: str) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="utf-8"?>\n<testsuites>\n')
        out.write(
            f'<testsuite name="pytest" tests="{count}" failures="0" errors="0" '
            f'time="1.0" timestamp="{stamp}">\n'
        )
        for i in range(first, first + count):
            name = f'classname="tests.test_module_{i // 500}" name="test_case_{i}[param-{i}]"'
            if i % 20 == 0:
                out.write(
                    f'<testcase {name} time="0.012"><failure message="AssertionError" '
                    f'type="AssertionError">{_TRACE}</failure>'
                    f"<system-out>captured line {i}\n</system-out></testcase>\n"
                )
            else:
                out.write(f'<testcase {name} time="0.003"/>\n')
        out.write("</testsuite>\n</testsuites>\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        per_file = args.tests // args.files
        inputs = []
        for k in range(args.files):
            path = work / f"job-{k}.xml"
            # The last file is a retried first job: the same tests, an hour later.
            first = 0 if k == args.files - 1 else k * per_file
            stamp = f"2026-01-01T{10 + (k == args.files - 1):02d}:00:00"
            _report(path, first, per_file, stamp)
            inputs.append(str(path))
        size_mib = sum(Path(p).stat().st_size for p in inputs) / 2**20
        started = time.perf_counter()
        measured = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(work / "merged.xml"), *inputs],
            capture_output=True,
            text=True,
            check=True,
        )
        total = time.perf_counter() - started
        seconds, peak, tests, duplicates = measured.stdout.split()
        print(
            f"{len(inputs)} files, {per_file * len(inputs)} test cases, {size_mib:.1f} MiB in: "
            f"merged {tests} tests ({duplicates} repeated) in {seconds} s "
            f"({total:.2f} s with the interpreter's start), peak memory {peak} MiB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
