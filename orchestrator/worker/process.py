"""The owner's handle on one worker process: start it, talk to it, notice how it ended.

Used inside a Ray actor (one per worker) and usable without Ray, which keeps the
worker protocol testable on its own.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import cast

from orchestrator.run.channel import FDS_ENV
from orchestrator.run.protocol import (
    LIVE_START,
    NEED_PREFIX,
    Command,
    ExitMessage,
    InitMessage,
    Message,
    encode,
)
from orchestrator.worker.recycle import oom_kills

#: How much of a dead worker's output goes into the error that reports it.
LOG_TAIL_LINES = 25
#: How much of the end of a worker's output is searched for them.
LOG_TAIL_BYTES = 256 * 1024
#: Longest a worker's events wait in its pipe when it does not wake its owner.
READ_SECONDS = 0.05
#: How long an exchange waits for more events after the first one.
LINGER_SECONDS = 0.05
#: Seconds a worker that ended is given for its last events to be read when its event
#: pipe does not close (a process it started holds it open).
ENDED_PIPE_GRACE = 1.0
#: Most events handed over in one exchange.
MAX_EVENTS = 2000


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``signal 11 (SIGSEGV)``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
        return f"signal {-returncode} ({name})"
    return f"exit code {returncode}"


def _sigkill_cause(before: int | None, after: int | None) -> str:
    """What a SIGKILL nobody here sent most likely was."""
    if before is not None and after is not None and after > before:
        return (
            ": the kernel's out-of-memory killer stopped it (its cgroup's oom_kill count "
            "rose); recycle workers that grow with --ray-max-worker-memory, or give the "
            "test more memory"
        )
    return (
        ", not sent by the orchestrator: on Linux usually the kernel's out-of-memory killer; "
        "if the test's memory grows, recycle workers with --ray-max-worker-memory"
    )


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

    With a wake pipe (see :class:`orchestrator.run.channel.Channel`) the thread reads every
    :data:`READ_SECONDS`, and at once when the worker wakes it, instead of at every write:
    a worker running tiny tests would otherwise wake it (and take a core from the tests)
    a thousand times a second. A ``spare`` worker, which says nothing until a run takes
    it, is not read on a schedule before it first wakes its owner: a warm relay holding
    one would otherwise spend as much CPU on it as on all the rest of its idling.
    """

    def __init__(
        self, fd: int, name: str, wake_fd: int | None = None, *, spare: bool = False
    ) -> None:
        self.fd = fd
        self.wake_fd = wake_fd
        #: How long events may wait in the pipe; None: until the worker wakes us.
        self._read_every: float | None = None if spare else READ_SECONDS
        self._partial = b""
        self._lines: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._eof = False
        #: Set by :meth:`close`: the pump stops at its next look.
        self._stopping = False
        self._thread = threading.Thread(target=self._pump, name=name, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        woken = self.wake_fd is not None
        if woken:
            os.set_blocking(self.fd, False)
        while not self._stopping:
            if woken:
                woken = self._wait_for_wake()
                if not woken:  # the worker is ending: read the rest as it comes
                    os.set_blocking(self.fd, True)
            chunk, eof = self._read(blocking=not woken)
            lines = (self._partial + chunk).split(b"\n") if chunk else []
            if lines:
                self._partial = lines.pop()
            if lines or eof:
                with self._cond:
                    # Whole lines only, all of this read at once: one wake-up per read.
                    self._lines.extend(line + b"\n" for line in lines)
                    self._eof = eof
                    self._cond.notify_all()
            if eof:
                return
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _wait_for_wake(self) -> bool:
        """Wait until the worker wakes us or it is time to read anyway; False once the
        worker closed its end of the wake pipe."""
        assert self.wake_fd is not None
        ready, _, _ = select.select([self.wake_fd], [], [], self._read_every)
        if not ready:
            return True
        self._read_every = READ_SECONDS
        try:
            return bool(os.read(self.wake_fd, 4096))
        except OSError:
            return False

    def _read(self, *, blocking: bool) -> tuple[bytes, bool]:
        """What the pipe holds (waiting for something when ``blocking``), and whether
        the worker closed it."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return b"".join(chunks), False
            except OSError:
                chunk = b""
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
            if blocking:
                return chunk, False

    def put(self, line: bytes) -> None:
        """Add a line the owner made itself (a line of the worker's output)."""
        with self._cond:
            self._lines.append(line)
            self._cond.notify_all()

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
        """Stop reading and let go of the pipes, once, whoever calls it (a relay's
        watcher may stop a worker while an exchange finds it ended). A descriptor must be
        closed once and only while nothing reads it: closed twice, or under the pump, it
        may by then be the next worker's pipe, which would break (its worker's writes
        fail) or be read by the wrong queue. (A pump waiting on a pipe that another
        process still holds open, which nothing wakes, keeps them.)"""
        self._stopping = True
        self._thread.join(timeout=2.0)
        if self._thread.is_alive():
            return
        with self._cond:
            fds = [fd for fd in (self.fd, self.wake_fd) if fd is not None and fd >= 0]
            self.fd, self.wake_fd = -1, None
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def worker_env(init: InitMessage, env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker process: ``env`` and the worker's own variables."""
    child_env = dict(env)
    worker = init["worker"]
    # Which worker this is, under our name and pytest-xdist's (plugins that isolate
    # databases or ports per worker read the latter).
    count = str(init.get("workercount", 1))
    child_env["ORCHESTRATOR_WORKER"] = child_env["PYTEST_XDIST_WORKER"] = worker
    child_env["ORCHESTRATOR_WORKER_COUNT"] = child_env["PYTEST_XDIST_WORKER_COUNT"] = count
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    return child_env


#: ``PYTHON*`` variables a running interpreter still follows: a spare process adopts
#: them with the rest of the environment (``PYTHONPATH`` too, see worker.adopt).
ADOPTABLE_VARIABLES = frozenset({"PYTHONPATH", "PYTHONBREAKPOINT"})


def _interpreter_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The variables Python reads once, when it starts."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k not in ADOPTABLE_VARIABLES}


def _same_interpreter(a: str, b: str) -> bool:
    """``python`` and ``python3.11`` of one virtual environment are the same interpreter
    (one directory, one binary); the same binary elsewhere is another environment."""
    try:
        return os.path.dirname(a) == os.path.dirname(b) and os.path.samefile(a, b)
    except OSError:
        return False


class OutputPump:
    """With ``-s``: the worker's output, copied to its log and passed on line by line as
    ``out`` events, as it comes (from :data:`LIVE_START` on). Read here, in the owner,
    so that nothing is lost when the worker dies (its last words explain a crash)."""

    def __init__(self, fd: int, log: int, events: EventQueue, name: str) -> None:
        self.fd = fd
        self.log = os.dup(log)  # its own: the worker's may be closed before the pipe ends
        self.events = events
        self._thread = threading.Thread(target=self._pump, name=name, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        partial = b""
        started = False
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:
                chunk = b""
            if chunk:
                with contextlib.suppress(OSError):
                    os.write(self.log, chunk.replace(LIVE_START + b"\n", b""))
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop() if chunk else b""
            if not chunk and lines and lines[-1] == b"":
                lines.pop()
            for line in lines:
                if not started:
                    started = line.endswith(LIVE_START)
                    continue
                text = line.decode("utf-8", errors="replace").rstrip("\r")
                self.events.put(encode({"t": "out", "s": text}))
            if not chunk:
                for fd in (self.fd, self.log):
                    with contextlib.suppress(OSError):
                        os.close(fd)
                return

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class _Started:
    """A ``python -m orchestrator.worker`` child and the ends of its pipes."""

    def __init__(
        self,
        cwd: str,
        env: Mapping[str, str],
        python: str,
        name: str,
        *,
        spare: bool = False,
        live: bool = False,
    ) -> None:
        cmd_read, cmd_write = os.pipe()
        evt_read, evt_write = os.pipe()
        wake_read, wake_write = os.pipe()
        log_fd, log_path = tempfile.mkstemp(prefix=f"orchestrator-{name}-", suffix=".log")
        # Nameless from the start: the file goes with the last process holding it, even
        # when whoever owns this worker is killed and cleans nothing up.
        os.unlink(log_path)
        #: Where the worker's output is read back from (see WorkerProcess.log_tail).
        self.log = os.dup(log_fd)
        child_env = dict(env)
        child_env[FDS_ENV] = f"{cmd_read},{evt_write},{wake_write}"
        out_read, out_write = os.pipe() if live else (-1, log_fd)
        try:
            self.proc = subprocess.Popen(
                [python, "-m", "orchestrator.worker"],
                cwd=cwd,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=out_write,
                stderr=out_write,
                pass_fds=(cmd_read, evt_write, wake_write),
                start_new_session=True,
            )
        except BaseException:
            for fd in (cmd_write, evt_read, wake_read, self.log, out_read):
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            for fd in {cmd_read, evt_write, wake_write, log_fd, out_write}:
                os.close(fd)
        self.commands = os.fdopen(cmd_write, "wb")
        self.events = EventQueue(evt_read, f"orchestrator-{name}-events", wake_read, spare=spare)
        self.output = (
            OutputPump(out_read, self.log, self.events, f"orchestrator-{name}-output")
            if live
            else None
        )

    def kill(self) -> None:
        """Kill the worker and anything it started (its own process group)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()

    def end(self, *, events: bool = True) -> None:
        """Kill what is left of the worker, wait for it, let go of its pipes and log."""
        with contextlib.suppress(OSError):
            self.commands.close()
        self.kill()
        self.proc.wait()
        if events:
            self.events.close()
        if self.log >= 0:
            with contextlib.suppress(OSError):
                os.close(self.log)
            self.log = -1


class Spare:
    """A worker process started before anyone needs it: Python is up and pytest
    imported, and it waits for its init (a warm relay keeps one, see ray_executor).

    A run that takes it sends its directory and environment with the init, and the
    process adopts them before pytest starts, as if it had been started with them. Only
    variables Python reads at its own start cannot be adopted: a run whose ``PYTHON*``
    variables (``PYTHONPATH`` aside) or interpreter differ starts a new process.
    """

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self.env = dict(os.environ)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self._started: _Started | None = _Started(
            os.getcwd(), self.env, self.python, "spare", spare=True
        )

    def fits(self, env: Mapping[str, str], python: str) -> bool:
        started = self._started
        return (
            started is not None
            and started.proc.poll() is None
            and _same_interpreter(python, self.python)
            and _interpreter_settings(env) == _interpreter_settings(self.env)
        )

    def take(self) -> _Started:
        started, self._started = self._started, None
        if started is None:
            raise RuntimeError("this spare worker process was already taken")
        return started

    def close(self) -> None:
        started, self._started = self._started, None
        if started is not None:
            started.end()


class WorkerProcess:
    """A ``python -m orchestrator.worker`` child with a command pipe and an event pipe."""

    def __init__(
        self,
        init: InitMessage,
        *,
        cwd: str,
        env: Mapping[str, str],
        python: str | None = None,
        spare: Spare | None = None,
    ) -> None:
        self.worker_id: str = init["worker"]
        child_env = worker_env(init, env)
        python = python or sys.executable
        live = bool(init.get("live"))
        if spare is not None and not live and spare.fits(child_env, python):
            started = spare.take()
            init = {**init, "adopt": {"cwd": cwd, "env": child_env}}
        else:
            if spare is not None:
                spare.close()
            started = _Started(cwd, child_env, python, self.worker_id, live=live)
        self._started = started
        self._proc = started.proc
        _match_priority(self._proc.pid, init.get("nice"))
        self._commands = started.commands
        self._events = started.events
        self.exit_event: ExitMessage | None = None
        #: The controller had it killed (a timeout, the run's end).
        self._killed = False
        #: When it was first seen ended while its event pipe was still open.
        self._ended_at: float | None = None
        #: The out-of-memory killer's count in this cgroup, to tell its kills from others.
        self._oom_kills = oom_kills()
        self.send([init])

    def send(self, messages: Sequence[Command]) -> None:
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
        if self._events.done and self._started.output is not None:
            # The last lines it printed come before the news of its end.
            self._started.output.join(2.0)
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
            # Decoded already: a message of its owner's, not a line of the worker's.
            out.append(cast("Message", self._finish()))
        elif not out and self._proc.poll() is not None:
            # It ended, and yet its event pipe is open: a process it started holds it
            # (one that outlives it, started in a way that kept the pipe). What it wrote
            # before its end has been read by now, or soon: its end is reported then,
            # not when that other process ends.
            now = time.monotonic()
            if self._ended_at is None:
                self._ended_at = now
            elif now - self._ended_at >= ENDED_PIPE_GRACE:
                out.append(cast("Message", self._finish()))
        return out

    def _finish(self) -> ExitMessage:
        try:
            returncode = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            returncode = self._proc.wait()
        self._events.close()
        how = describe_exit(returncode)
        if returncode == -signal.SIGKILL and not self._killed:
            how += _sigkill_cause(self._oom_kills, oom_kills())
        self.exit_event = {"t": "exit", "code": returncode, "how": how, "log": self.log_tail()}
        return self.exit_event

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The end of the worker's output; from the fatal error on, when there is one."""
        log = self._started.log
        if log < 0:
            return ""
        try:
            size = os.fstat(log).st_size
            start = max(0, size - LOG_TAIL_BYTES)
            text = os.pread(log, size - start, start).decode("utf-8", errors="replace")
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
        self._killed = True
        self._started.kill()

    def close(self, grace: float = 5.0) -> None:
        """Ask nicely (the session may still be finishing), then kill; remove the log."""
        with contextlib.suppress(OSError):
            self._commands.close()
        deadline = time.monotonic() + grace
        while self._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        # Its events were let go of already when its end was reported.
        self._started.end(events=self.exit_event is None)
