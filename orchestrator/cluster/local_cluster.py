"""``orchestrator up`` / ``down``: keep a local Ray instance warm between runs.

``up`` starts a small daemon process that owns a Ray head on loopback (no dashboard)
and records its address in ``<root>/.orchestrator/cluster.json``. Runs in that project
then use it instead of starting and stopping Ray themselves, which saves Ray's start
and stop (seconds) on every run. The daemon also keeps one idle worker relay (a Ray
actor process) per CPU, which runs lease instead of waiting for Ray to start new ones.
``down`` stops the daemon, and Ray with it. A record whose daemon is gone is ignored
and removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.config import STORE_DIRNAME
from orchestrator.errors import ClusterError

STATE_FILENAME = "cluster.json"
LOG_FILENAME = "cluster.log"
#: Seconds to wait for the daemon to report its address, or to stop.
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
#: Starts the daemon's line that says why Ray did not start (a :class:`ClusterError`):
#: ``up`` shows that message alone, not the log's traceback.
FAILED = "cannot start: "


@dataclass(frozen=True)
class ClusterRecord:
    address: str
    pid: int
    cpus: int
    gpus: int
    started: float


def state_path(root: Path) -> Path:
    return root / STORE_DIRNAME / STATE_FILENAME


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2.0):
            return True
    except (OSError, ValueError):
        return False


def read_record(root: Path) -> ClusterRecord | None:
    """The running cluster of this project, or None (a stale record is removed)."""
    path = state_path(root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = ClusterRecord(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    if _alive(record.pid) and _listening(record.address):
        return record
    with contextlib.suppress(OSError):
        path.unlink()
    return None


def _write_record(root: Path, record: ClusterRecord) -> None:
    path = state_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(record)), encoding="utf-8")
    os.replace(tmp, path)


def start(root: Path, cpus: int, gpus: int | None, resources: dict[str, float]) -> ClusterRecord:
    """Start the daemon (unless one runs) and wait for its address."""
    existing = read_record(root)
    if existing is not None:
        return existing
    log = root / STORE_DIRNAME / LOG_FILENAME
    log.parent.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "orchestrator.cluster.local_cluster",
        str(root),
        str(cpus),
        "" if gpus is None else str(gpus),
        json.dumps(resources),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command and its terminal
        )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        record = read_record(root)
        if record is not None and record.pid == proc.pid:
            return record
        if proc.poll() is not None:
            raise ClusterError(_why_not_started(log))
        time.sleep(0.2)
    proc.terminate()
    raise ClusterError(f"the local Ray instance did not start within {START_TIMEOUT:.0f} s")


def _why_not_started(log: Path) -> str:
    """What the daemon said when it could not start Ray, else the end of its log."""
    text = log.read_text(errors="replace")
    for line in text.splitlines():
        if line.startswith(FAILED):
            return line[len(FAILED) :]
    return f"the local Ray instance did not start; its log ends with:\n{text[-2000:]}"


def stop(root: Path) -> ClusterRecord | None:
    """Stop the daemon of this project; returns what was stopped (None if nothing ran)."""
    record = read_record(root)
    if record is None:
        return None
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(record.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(record.pid):
        os.killpg(record.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        state_path(root).unlink()
    return record


def _serve(root: Path, cpus: int, gpus: int | None, resources: dict[str, float]) -> None:
    """The daemon: own a Ray head until told to stop."""
    from orchestrator.cluster.ray_executor import start_local_head, start_pool

    stop_now = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop_now
        stop_now = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    address, shutdown, detected_gpus = start_local_head(cpus, gpus, resources)
    try:
        relays = start_pool(cpus)  # warm relays for runs to lease; they live as we do
        _write_record(
            root,
            ClusterRecord(address, os.getpid(), cpus, detected_gpus, time.time()),
        )
        print(f"Ray head at {address}, {len(relays)} warm worker relays", flush=True)
        while not stop_now:
            time.sleep(0.5)
    finally:
        with contextlib.suppress(OSError):
            state_path(root).unlink()
        shutdown()


def _main(argv: list[str]) -> int:
    root, cpus, gpus, resources = argv[:4]
    try:
        _serve(Path(root), int(cpus), int(gpus) if gpus else None, json.loads(resources))
    except ClusterError as exc:
        print(f"{FAILED}{exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
