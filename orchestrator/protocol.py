"""Messages between a worker process and its owner: one JSON object per line.

Owner -> worker: ``init`` (once), then ``run`` (test indices), ``finish`` or ``stop``.
Worker -> owner: ``ready`` (after collection), ``report`` (one per test phase; ``ok``
with timings only for a plain passed phase, ``pass`` for a test whose three phases all
passed plainly), ``warning``, ``need`` (out of work),
``bye`` (session over). A synthetic ``exit``
event is added by the owner when the process ends, with its exit status.
"""

from __future__ import annotations

import json
import os
import select
import time
from typing import IO, Any

#: Environment variable carrying the worker's "read,write" pipe descriptors.
FDS_ENV = "ORCHESTRATOR_WORKER_FDS"
#: Longest a worker keeps reports of passed phases of the test it is running in its
#: buffer (one write per test instead of one per report).
FLUSH_SECONDS = 0.02

Message = dict[str, Any]


def encode(message: Message) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes | str) -> Message:
    value = json.loads(line)
    if not isinstance(value, dict) or "t" not in value:
        raise ValueError(f"not a protocol message: {line!r:.200}")
    return value


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
    """The worker's end: blocking receive, non-blocking poll, flushed sends."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._reader = LineReader(read_fd)
        self._writer: IO[bytes] = os.fdopen(write_fd, "wb", buffering=1 << 16)
        self._flushed = time.monotonic()

    @classmethod
    def from_env(cls) -> Channel:
        read_fd, write_fd = (int(x) for x in os.environ[FDS_ENV].split(","))
        return cls(read_fd, write_fd)

    def send(self, message: Message) -> None:
        self.send_raw(encode(message))

    def send_raw(self, line: bytes, *, flush: bool = True) -> None:
        """Write one encoded message (a JSON object and a newline); with ``flush=False`` it
        may wait in the buffer until the next flushed message, :meth:`flush`, or
        :data:`FLUSH_SECONDS` (checked on each send)."""
        self._writer.write(line)
        now = time.monotonic()
        if flush or now - self._flushed > FLUSH_SECONDS:
            self._writer.flush()
            self._flushed = now

    def flush(self) -> None:
        self._writer.flush()
        self._flushed = time.monotonic()

    def receive(self) -> Message:
        """The next command, waiting for it (what was buffered is sent first)."""
        if not self._reader.has_line():
            self.flush()
        line = self._reader.readline()
        if line is None:
            raise EOFError("the orchestrator closed the command pipe")
        return decode(line)

    def poll(self) -> bool:
        """True when a command is waiting (never blocks)."""
        return self._reader.has_line()
