"""The pipes between a worker process and its owner, and the worker's end of them.

Commands come down one pipe, events go up another, one message per line (see
:mod:`orchestrator.run.protocol`); a third pipe wakes the owner when an event should not
wait (see :class:`Channel`).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import weakref

from orchestrator.run.protocol import Event, Message, decode, encode

#: Environment variable carrying the worker's "read,write,wake" pipe descriptors.
FDS_ENV = "ORCHESTRATOR_WORKER_FDS"
#: Longest a worker keeps reports of passed phases of the test it is running in its
#: buffer (one write per test instead of one per report).
FLUSH_SECONDS = 0.02
#: A worker wakes its owner at least once per this many bytes written (a pipe holds 64 KiB).
WAKE_BYTES = 16 * 1024


class LineReader:
    """Reads newline-terminated messages from a file descriptor, with its own buffer.

    Own buffering (rather than a buffered file) keeps ``select`` truthful: nothing is
    hidden in a Python-level buffer when we ask the kernel whether more is waiting.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()
        self.eof = False

    def _fill(self, timeout: float | None) -> bool:
        """Read what is available (waiting up to ``timeout``); False on timeout."""
        if self.eof:
            return False
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            self.eof = True
            return False
        self._buffer += chunk
        return True

    def readline(self, timeout: float | None = None) -> bytes | None:
        """The next complete line; None on timeout or end of stream."""
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[: newline + 1])
                del self._buffer[: newline + 1]
                return line
            if not self._fill(timeout) and (self.eof or timeout is not None):
                return None

    def has_line(self) -> bool:
        """True when a complete line is waiting (never blocks)."""
        while b"\n" not in self._buffer:
            if not self._fill(0):
                return False
        return True


class Channel:
    """The worker's end: blocking receive, non-blocking poll, buffered and flushed sends.

    Written messages wait in the pipe until the owner reads them. The owner does not read
    at every write (a test a millisecond long would wake it a thousand times a second,
    each time taking a core from the tests): it reads every so often, and at once when
    this end writes a byte to the *wake* pipe, which it does for each message sent with
    :meth:`send` (a request for work, ``ready``, ``bye``) and whenever
    :data:`WAKE_BYTES` were written since the last one, so the pipe never fills up.
    Without a wake pipe (an owner that reads every write) nothing is woken.
    """

    def __init__(self, read_fd: int, write_fd: int, wake_fd: int | None = None) -> None:
        self._reader = LineReader(read_fd)
        self._fd = write_fd
        self._wake_fd = wake_fd
        if wake_fd is not None:
            os.set_blocking(wake_fd, False)
        self._buffer = bytearray()
        #: Log records and live output may be sent from other threads than the tests'.
        self._lock = threading.Lock()
        #: Bytes written to the pipe since the owner was last woken.
        self._unwoken = 0
        self._flushed = time.monotonic()
        #: Set in a process forked from this one (by a test, multiprocessing's workers):
        #: the pipes are this process's alone.
        self._forked = False
        self._own_the_pipes()

    def _own_the_pipes(self) -> None:
        """Keep the pipes out of every other process. A program a test starts does not
        inherit them, and a process forked from this one closes its copies at once: one
        that outlived this process would otherwise hold the pipe open, and the owner would
        not see this process end (a crash would go unnoticed until that process ended), and
        anything it sent would mix with this process's messages."""
        fds = [fd for fd in (self._reader.fd, self._fd, self._wake_fd) if fd is not None]
        for fd in fds:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)

        # The hook lasts as long as the process: it holds the channel weakly, and a
        # channel that is gone closes nothing (its descriptors may be others' by then).
        channel = weakref.ref(self)

        def forked() -> None:
            live = channel()
            if live is None:
                return
            live._forked = True
            live._buffer.clear()
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

        os.register_at_fork(after_in_child=forked)

    @classmethod
    def from_env(cls) -> Channel:
        fds = [int(x) for x in os.environ[FDS_ENV].split(",")]
        return cls(fds[0], fds[1], fds[2] if len(fds) > 2 else None)

    def send(self, message: Event) -> None:
        """Send ``message`` now, and wake the owner to read it."""
        self.send_raw(encode(message))

    def send_raw(self, line: bytes, *, flush: bool = True) -> None:
        """Write one encoded message (a JSON object and a newline); with ``flush=False`` it
        may wait in the buffer until the next flushed message, :meth:`flush`, or
        :data:`FLUSH_SECONDS` (checked on each send), and the owner is not woken for it."""
        if self._forked:
            return  # a forked process's: not this worker's to say
        with self._lock:
            self._buffer += line
            if flush:
                self._write(wake=True)
            elif (
                time.monotonic() - self._flushed > FLUSH_SECONDS or len(self._buffer) >= WAKE_BYTES
            ):
                self._write(wake=False)

    def flush(self) -> None:
        """Put what is buffered into the pipe (where it outlives this process), without
        waking the owner."""
        if self._forked:
            return
        with self._lock:
            self._write(wake=False)

    def _write(self, *, wake: bool) -> None:
        data = bytes(self._buffer)
        self._buffer.clear()
        for start in range(0, len(data), WAKE_BYTES):
            piece = data[start : start + WAKE_BYTES]
            while piece:
                written = os.write(self._fd, piece)
                piece = piece[written:]
                self._unwoken += written
            if self._unwoken >= WAKE_BYTES:
                self._wake()
        if wake and self._unwoken:
            self._wake()
        self._flushed = time.monotonic()

    def _wake(self) -> None:
        if self._wake_fd is None:
            return
        # A full wake pipe already holds a wake-up the owner has not read yet.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_fd, b"!")
        self._unwoken = 0

    def receive(self) -> Message:
        """The next command, waiting for it (what was buffered is sent first)."""
        if self._forked:
            raise EOFError("a process forked from the worker has no command pipe")
        if not self._reader.has_line():
            with self._lock:
                self._write(wake=True)
        line = self._reader.readline()
        if line is None:
            raise EOFError("the orchestrator closed the command pipe")
        return decode(line)

    def poll(self) -> bool:
        """True when a command is waiting (never blocks)."""
        return self._reader.has_line()
