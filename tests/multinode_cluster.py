"""A two-node Ray cluster on this machine, for the multi-node tests.

Run as a script: starts a head (1 CPU, resource ``head``) with ``ray start --head`` and a
second node (1 CPU, 1 GPU, resource ``second``) with ``ray start --address``, both with
token authentication, and prints the address once both are up. When the file
``<control>/kill`` appears, the second node's raylet is killed (as if its machine died);
when ``<control>/stop`` appears or standard input closes, both nodes are stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

RAY = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
START_TIMEOUT = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*RAY, "start", "--block", "--node-ip-address=127.0.0.1", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _alive_nodes(address: str) -> int:
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        return sum(1 for node in ray.nodes() if node.get("Alive"))
    finally:
        ray.shutdown()


def _wait(what: str, ready: object, procs: list[subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if callable(ready) and ready():
            return
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.5)
    tails = "\n".join(p.read_text(errors="replace")[-1500:] for p in sorted(logs.glob("*.log")))
    raise SystemExit(f"{what} did not start:\n{tails}")


def _raylet_of(proc: subprocess.Popen[bytes]) -> int | None:
    """The raylet among the processes ``ray start`` started (its session's children)."""
    out = subprocess.run(
        ["ps", "-o", "pid=,sid=,comm=", "-e"], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        pid, sid, comm = line.split(None, 2)
        if int(sid) == proc.pid and comm.strip() == "raylet":
            return int(pid)
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` then stops its node
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(45)
    # Whatever the node left behind.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def main(control: Path) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    # Set to 0, this would keep the nodes on loopback, where `ray start --address`
    # refuses to add a second node; unset, the nodes take this machine's address.
    os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    logs = control / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    head = _start(
        [
            *("--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"),
            "--resources=" + json.dumps({"head": 1}),
        ],
        logs / "head.log",
    )
    procs = [head]
    try:

        def head_up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                    return True
            except OSError:
                return False

        _wait("the head", head_up, procs, logs)
        second = _start(
            [
                *(f"--address={address}", "--num-cpus=1", "--num-gpus=1"),
                "--resources=" + json.dumps({"second": 1}),
            ],
            logs / "second.log",
        )
        procs.append(second)
        _wait("the second node", lambda: _alive_nodes(address) == 2, procs, logs)
        print(address, flush=True)
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        while not stop.is_set() and not (control / "stop").exists():
            if (control / "kill").exists():
                (control / "kill").unlink()
                raylet = _raylet_of(second)
                if raylet is not None:
                    os.kill(raylet, signal.SIGKILL)
                print("second node killed", flush=True)
            time.sleep(0.1)
    finally:
        for proc in reversed(procs):
            _stop(proc)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
