"""The owner's handle on one worker process: start it, talk to it, notice how it ended.

Used inside a Ray actor (one per worker) and usable without Ray, which keeps the
worker protocol testable on its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator.protocol import FDS_ENV, Message, encode

#: How much of a dead worker's output goes into the error that reports it.
LOG_TAIL_LINES = 25
#: How long an exchange waits for more events after the first one.
LINGER_SECONDS = 0.05
#: Most events handed over in one exchange.
MAX_EVENTS = 2000
#: How a worker's request for work starts (see protocol.encode).
NEED_PREFIX = b'{"t":"need"'


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``signal 11 (SIGSEGV)``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
        return f"signal {-returncode} ({name})"
    return f"exit code {returncode}"


def _match_priority(pid: int, nice: int | None) -> None:
    """Run the tests at the controller's priority (Ray starts workers at nice 15).

    Raising a priority needs privileges; without them the worker keeps Ray's.
    """
    if nice is None:
        return
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, nice)


class EventQueue:
    """The worker's events, read from its pipe as they come by a thread of their own.

    Between two exchanges the owner is busy elsewhere (a Ray round trip, the
    controller); a worker running tiny tests would fill the pipe in that time and
    stall on its next write. Draining the pipe continuously keeps it running.
    """

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self._partial = b""
        self._lines: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._pump, name=name, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:
                chunk = b""
            lines = (self._partial + chunk).split(b"\n") if chunk else []
            if lines:
                self._partial = lines.pop()
            with self._cond:
                # Whole lines only, all of this read at once: one wake-up per read.
                self._lines.extend(line + b"\n" for line in lines)
                if not chunk:
                    self._eof = True
                self._cond.notify_all()
            if not chunk:
                return

    def readline(self, timeout: float) -> bytes | None:
        """The next line, waiting up to ``timeout``; None on timeout or at the end."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._lines and not self._eof:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._lines.popleft() if self._lines else None

    @property
    def done(self) -> bool:
        """The worker closed its end and every line was taken."""
        with self._cond:
            return self._eof and not self._lines

    def close(self) -> None:
        self._thread.join(timeout=2.0)
        with contextlib.suppress(OSError):
            os.close(self.fd)


class WorkerProcess:
    """A ``python -m orchestrator.worker`` child with a command pipe and an event pipe."""

    def __init__(
        self,
        init: Message,
        *,
        cwd: str,
        env: Mapping[str, str],
        python: str | None = None,
    ) -> None:
        self.worker_id: str = init["worker"]
        cmd_read, cmd_write = os.pipe()
        evt_read, evt_write = os.pipe()
        log_fd, self.log_path = tempfile.mkstemp(
            prefix=f"orchestrator-{self.worker_id}-", suffix=".log"
        )
        child_env = dict(env)
        child_env[FDS_ENV] = f"{cmd_read},{evt_write}"
        # Which worker this is, under our name and pytest-xdist's (plugins that isolate
        # databases or ports per worker read the latter).
        count = str(init.get("workercount", 1))
        child_env["ORCHESTRATOR_WORKER"] = child_env["PYTEST_XDIST_WORKER"] = self.worker_id
        child_env["ORCHESTRATOR_WORKER_COUNT"] = child_env["PYTEST_XDIST_WORKER_COUNT"] = count
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            self._proc = subprocess.Popen(
                [python or sys.executable, "-m", "orchestrator.worker"],
                cwd=cwd,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                pass_fds=(cmd_read, evt_write),
                start_new_session=True,
            )
        finally:
            os.close(cmd_read)
            os.close(evt_write)
            os.close(log_fd)
        _match_priority(self._proc.pid, init.get("nice"))
        self._commands = os.fdopen(cmd_write, "wb")
        self._events = EventQueue(evt_read, f"orchestrator-{self.worker_id}-events")
        self.exit_event: Message | None = None
        self.send([init])

    def send(self, messages: Sequence[Message]) -> None:
        """Write commands; a worker that already died is noticed by :meth:`events`."""
        if any(m["t"] == "kill" for m in messages):
            # Handled here, not by the worker: it may be stuck where it cannot read.
            self.kill()
            messages = [m for m in messages if m["t"] != "kill"]
        if not messages:
            return
        try:
            self._commands.write(b"".join(encode(m) for m in messages))
            self._commands.flush()
        except (BrokenPipeError, ValueError):
            pass

    def events(self, timeout: float) -> list[bytes | Message]:
        """Events waiting now, or the first within ``timeout`` seconds.

        Raw lines are passed through undecoded (the controller decodes them); the
        process's end is appended once as an ``exit`` event.
        """
        out: list[bytes | Message] = []
        if self.exit_event is not None:
            return out
        line = self._events.readline(timeout)
        # Linger briefly for more: every exchange costs a round trip through Ray, and a
        # worker running tiny tests produces events faster than single ones could travel.
        # A request for work is the exception: the worker is idle until it is answered.
        deadline = time.monotonic() + LINGER_SECONDS
        while line is not None:
            out.append(line)
            if line.startswith(NEED_PREFIX) or len(out) >= MAX_EVENTS:
                break
            line = self._events.readline(max(0.0, deadline - time.monotonic()))
        if self._events.done:
            out.append(self._finish())
        return out

    def _finish(self) -> Message:
        try:
            returncode = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            returncode = self._proc.wait()
        self._events.close()
        self.exit_event = {
            "t": "exit",
            "code": returncode,
            "how": describe_exit(returncode),
            "log": self.log_tail(),
        }
        return self.exit_event

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The end of the worker's output; from the fatal error on, when there is one."""
        try:
            text = Path(self.log_path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        all_lines = text.splitlines()
        marker = "Fatal Python error"
        fatal = [i for i, line in enumerate(all_lines) if marker in line]
        if fatal:
            # faulthandler's report: the error, then the innermost frames first.
            first = all_lines[fatal[-1]]
            report = [first[first.index(marker) :], *all_lines[fatal[-1] + 1 :]]
            return "\n".join(report[:lines])
        return "\n".join(all_lines[-lines:])

    def kill(self) -> None:
        """Kill the worker and anything it started (its own process group)."""
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self._proc.kill()

    def close(self, grace: float = 5.0) -> None:
        """Ask nicely (the session may still be finishing), then kill; remove the log."""
        with contextlib.suppress(OSError):
            self._commands.close()
        deadline = time.monotonic() + grace
        while self._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        self.kill()
        self._proc.wait()
        if self.exit_event is None:
            self._events.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)
