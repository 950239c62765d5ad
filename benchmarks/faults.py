"""How long a `--ray` run takes to settle each fault the README promises to settle quickly.

    python -m benchmarks.faults [--repeat 1]

The tests (tests/test_reliability.py, tests/test_worker_visibility.py) check what each of
these runs ends with; how long it takes depends on the machine and its load, so it is
measured here instead: every test crashing its worker, hard timeouts in Python and in C,
an address where something other than Ray answers, a worker whose conftest fails, and
SIGTERM or Ctrl-C (SIGINT to the process group) after a few tests. The interrupts run with
the Ray instance the run starts itself; the rest against one cluster kept running, as the
tests' shared cluster is. Prints one Markdown row per fault: the median wall seconds (for an
interrupt: from the signal to the exit) and the exit code, which must be the expected one.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.cluster import WarmCluster

_PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]


@dataclass(frozen=True)
class Fault:
    """A suite that provokes one fault, the options to run it with, and the exit it ends with."""

    name: str
    files: dict[str, str]
    args: tuple[str, ...]
    exit_code: int
    interrupt: Callable[[subprocess.Popen[str]], None] | None = None
    needs_listener: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)


_SLOW = """
import time, pytest
@pytest.mark.parametrize("i", range(40))
def test_slow(i):
    time.sleep(0.5)
"""

FAULTS = (
    Fault(
        "every test crashes its worker (12 tests, 2 workers)",
        {
            "test_doom.py": "import os, pytest\n@pytest.mark.parametrize('i', range(12))\n"
            "def test_dies(i):\n    os._exit(1)\n"
        },
        ("--ray-workers", "2"),
        1,
    ),
    Fault(
        "hard timeouts in Python and in C (--ray-timeout 3, 2 workers)",
        {
            "test_hang.py": textwrap.dedent(
                """
                import re, time, pytest
                def test_sleeps_forever():
                    time.sleep(600)
                @pytest.mark.timeout(2)
                def test_catastrophic_regex():
                    re.match(r"(a+)+$", "a" * 64 + "b")
                @pytest.mark.parametrize("i", range(4))
                def test_quick(i):
                    pass
                """
            )
        },
        ("--ray-workers", "2", "--ray-timeout", "3"),
        1,
    ),
    Fault(
        "something other than Ray answers at the address",
        {"test_x.py": "def test_x():\n    pass\n"},
        (),
        4,
        needs_listener=True,
    ),
    Fault(
        "a worker's conftest fails (2 workers)",
        {
            "conftest.py": "def pytest_configure(config):\n"
            "    if hasattr(config, 'workerinput'):\n"
            "        raise RuntimeError('cannot start')\n",
            "test_a.py": "def test_a():\n    pass\ndef test_b():\n    pass\n",
        },
        ("--ray-workers", "2"),
        4,
    ),
    Fault(
        "SIGTERM after 4 tests (own Ray instance, 2 workers): signal to exit",
        {"test_slow.py": _SLOW},
        ("--ray-workers", "2"),
        2,
        interrupt=lambda proc: proc.send_signal(signal.SIGTERM),
    ),
    Fault(
        "Ctrl-C after 4 tests (own Ray instance, 2 workers): signal to exit",
        {"test_slow.py": _SLOW},
        ("--ray-workers", "2"),
        2,
        interrupt=lambda proc: os.killpg(proc.pid, signal.SIGINT),
    ),
)


def _not_ray() -> tuple[socket.socket, str]:
    """A listener that accepts connections and never speaks Ray's protocol."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    return listener, f"127.0.0.1:{listener.getsockname()[1]}"


def _interrupted(cmd: list[str], cwd: Path, env: dict[str, str], fault: Fault) -> tuple[float, int]:
    assert fault.interrupt is not None
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        seen = ""
        while "." * 4 not in seen:
            char = proc.stdout.read(1)
            if not char:
                raise RuntimeError(f"{fault.name}: the run ended before 4 tests passed:\n{seen}")
            seen += char
        start = time.perf_counter()
        fault.interrupt(proc)
        proc.communicate(timeout=300)
        return time.perf_counter() - start, proc.returncode
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def measure(fault: Fault, address: str) -> tuple[float, int]:
    """Wall seconds of one run of ``fault`` and its exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, text in fault.files.items():
            (root / name).write_text(text, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        cmd = [*_PYTEST, "--ray", *fault.args]
        if fault.interrupt is not None:
            return _interrupted(cmd, root, env, fault)
        listener = None
        if fault.needs_listener:
            listener, address = _not_ray()
        try:
            start = time.perf_counter()
            proc = subprocess.run(
                [*cmd, "--ray-address", address],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            return time.perf_counter() - start, proc.returncode
        finally:
            if listener is not None:
                listener.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per fault (the median)")
    args = parser.parse_args()
    print("| fault | seconds | exit code |\n|---|---:|---:|")
    wrong = 0
    with WarmCluster(cpus=4) as cluster:
        for fault in FAULTS:
            runs = [measure(fault, cluster.address) for _ in range(args.repeat)]
            codes = sorted({code for _, code in runs})
            seconds = statistics.median(s for s, _ in runs)
            shown = ", ".join(str(c) for c in codes)
            if codes != [fault.exit_code]:
                wrong += 1
                shown += f" (expected {fault.exit_code})"
            print(f"| {fault.name} | {seconds:.2f} | {shown} |", flush=True)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
