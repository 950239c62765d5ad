"""The worker's channel and its owner's event queue, joined by real pipes (no processes)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from orchestrator.run import protocol
from orchestrator.run.channel import WAKE_BYTES, Channel
from orchestrator.run.protocol import Message, decode, encode, pack, unpack
from orchestrator.worker.process import EventQueue


class Pipes:
    """Three pipes (commands, events, wake-ups); each end is closed once."""

    def __init__(self) -> None:
        self.cmd_r, self.cmd_w = os.pipe()
        self.evt_r, self.evt_w = os.pipe()
        self.wake_r, self.wake_w = os.pipe()
        self.open = {self.cmd_r, self.cmd_w, self.evt_r, self.evt_w, self.wake_r, self.wake_w}

    def close(self, *fds: int) -> None:
        for fd in fds:
            if fd in self.open:
                self.open.discard(fd)
                os.close(fd)

    def channel(self, *, wake: bool = True) -> Channel:
        """The worker's end."""
        return Channel(self.cmd_r, self.evt_w, self.wake_w if wake else None)

    def closed_elsewhere(self, *fds: int) -> None:
        self.open.difference_update(fds)


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    made = Pipes()
    yield made
    made.close(*list(made.open))


def _wakes(fd: int) -> int:
    os.set_blocking(fd, False)
    try:
        return len(os.read(fd, 1 << 16))
    except BlockingIOError:
        return 0


def _line(i: int) -> bytes:
    return encode({"t": "ok", "i": i})


def _unwoken(channel: Channel, line: bytes) -> None:
    """Put ``line`` into the pipe without waking the owner (a test's report)."""
    channel.send_raw(line, flush=False)
    channel.flush()


def _worker_ends(pipes: Pipes, queue: EventQueue, *unread: bytes) -> None:
    """The worker closes its ends: what it wrote is still read, then the end."""
    pipes.close(pipes.evt_w, pipes.wake_w)
    for line in unread:
        assert queue.readline(30.0) == line
    assert queue.readline(1.0) is None and queue.done
    queue.close()
    pipes.closed_elsewhere(pipes.evt_r, pipes.wake_r)


def test_only_sends_and_every_so_many_bytes_wake_the_owner(pipes: Pipes) -> None:
    evt_r, wake_r = pipes.evt_r, pipes.wake_r
    channel = pipes.channel()
    os.set_blocking(evt_r, False)
    for i in range(100):  # a test's reports, then the flush before the next test
        _unwoken(channel, _line(i))
    written = os.read(evt_r, 1 << 20)
    assert [decode(line)["i"] for line in written.splitlines()] == list(range(100))
    assert _wakes(wake_r) == 0  # in the pipe, where it outlives the worker; nobody woken
    channel.send({"t": "need"})
    assert _wakes(wake_r) == 1
    assert os.read(evt_r, 1 << 16) == b'{"t":"need"}\n'
    # However the bytes come, the owner is woken before the pipe (64 KiB) could fill.
    lines = [_line(i) for i in range(5 * WAKE_BYTES // len(_line(0)))]
    reader = threading.Thread(
        target=lambda: received.append(_read_all(evt_r, sum(map(len, lines))))
    )
    received: list[bytes] = []
    reader.start()
    for line in lines:
        _unwoken(channel, line)
    reader.join(timeout=30)
    assert received == [b"".join(lines)]
    assert _wakes(wake_r) >= len(received[0]) // WAKE_BYTES - 1


def _read_all(fd: int, size: int) -> bytes:
    os.set_blocking(fd, True)
    data = b""
    while len(data) < size:
        data += os.read(fd, size - len(data))
    return data


def test_the_owner_gets_everything_woken_or_not(pipes: Pipes) -> None:
    channel = pipes.channel()
    queue = EventQueue(pipes.evt_r, "test-events", pipes.wake_r)
    big = encode({"t": "report", "text": "x" * (1 << 20)})  # larger than the pipe
    _unwoken(channel, _line(0))  # read on the owner's own schedule
    assert queue.readline(30.0) == _line(0)
    channel.send_raw(big)
    assert queue.readline(30.0) == big
    _unwoken(channel, _line(1))
    _worker_ends(pipes, queue, _line(1))


def test_a_spare_is_read_on_a_schedule_only_once_it_has_woken_its_owner(pipes: Pipes) -> None:
    channel = pipes.channel()
    queue = EventQueue(pipes.evt_r, "test-events", pipes.wake_r, spare=True)
    _unwoken(channel, _line(0))
    # a spare's pipe is left alone (a running worker's is read within 0.05 s)
    assert queue.readline(0.5) is None and not queue.done
    channel.send_raw(_line(1))  # its first wake, as a worker's `ready` after its init
    assert queue.readline(30.0) == _line(0)
    assert queue.readline(30.0) == _line(1)
    _unwoken(channel, _line(2))  # from now on read on the owner's schedule, as any worker's
    assert queue.readline(30.0) == _line(2)
    _worker_ends(pipes, queue)


def test_a_spare_that_dies_before_a_run_takes_it_is_seen_to_end(pipes: Pipes) -> None:
    queue = EventQueue(pipes.evt_r, "test-events", pipes.wake_r, spare=True)
    _unwoken(pipes.channel(), _line(0))
    _worker_ends(pipes, queue, _line(0))  # it never woke its owner, and is gone


def test_a_channel_without_a_wake_pipe_still_delivers(pipes: Pipes) -> None:
    cmd_w, evt_r, evt_w = pipes.cmd_w, pipes.evt_r, pipes.evt_w
    channel = pipes.channel(wake=False)
    queue = EventQueue(evt_r, "test-events")
    channel.send({"t": "need"})
    assert queue.readline(30.0) == b'{"t":"need"}\n'
    os.write(cmd_w, encode({"t": "run", "i": [1]}))
    assert channel.poll() and channel.receive() == {"t": "run", "i": [1]}
    pipes.close(evt_w)
    assert queue.readline(1.0) is None and queue.done
    queue.close()
    pipes.closed_elsewhere(evt_r)


def test_values_plugins_exchange_with_workers_travel_as_json() -> None:
    value = {"data": b"\x00z\xff", "roots": ("a", "b"), "n": 3, "nested": {"x": [None, 1.5]}}
    packed = pack(value)
    assert json.loads(json.dumps(packed)) == packed
    assert unpack(packed) == {**value, "roots": ["a", "b"]}


def test_a_value_json_cannot_carry_is_named_by_its_key() -> None:
    with pytest.raises(TypeError, match=r"\['outer'\]\['inner'\]: set \{1\}"):
        pack({"outer": {"inner": {1}}})


def test_output_pump_passes_lines_on_from_the_start_marker_and_keeps_them_in_the_log(
    tmp_path: Path,
) -> None:
    from orchestrator.run.protocol import LIVE_START
    from orchestrator.worker.process import OutputPump

    read, write = os.pipe()
    events_read, events_write = os.pipe()
    log = os.open(tmp_path / "log", os.O_RDWR | os.O_CREAT)
    queue = EventQueue(events_read, "test-events")
    pump = OutputPump(read, log, queue, "test-output")
    os.write(write, b"pytest's header\n" + LIVE_START + b"\nfirst line\nsecond ")
    os.write(write, b"half\nlast without newline")
    os.close(write)
    pump.join(5.0)
    os.close(events_write)
    lines = []
    while (line := queue.readline(1.0)) is not None:
        lines.append(decode(line))
    assert lines == [
        {"t": "out", "s": "first line"},
        {"t": "out", "s": "second half"},
        {"t": "out", "s": "last without newline"},
    ]
    os.close(log)
    text = (tmp_path / "log").read_bytes()
    assert text == b"pytest's header\nfirst line\nsecond half\nlast without newline"
    queue.close()


# -- the messages ------------------------------------------------------------------------
def _kinds() -> dict[str, type]:
    """Every typed message, by its kind (``t``)."""
    out = {}
    for message in [*get_args(protocol.Command), *get_args(protocol.Event)]:
        (kind,) = get_args(get_type_hints(message)["t"])
        out[kind] = message
    return out


def test_every_message_has_one_typed_definition_and_is_documented() -> None:
    kinds = _kinds()
    assert len(kinds) == len(get_args(protocol.Command)) + len(get_args(protocol.Event))
    assert set(kinds) >= {"init", "run", "need", "pass", "ok", "end", "bye", "exit", "kill"}
    doc = protocol.__doc__ or ""
    for kind, message in kinds.items():
        assert f"``{kind}``" in doc, kind
        for key in message.__annotations__:
            assert key == "t" or f"``{key}``" in doc, (kind, key)


def _typed(line: bytes, kind: str) -> Message:
    """``line`` decoded, checked against the typed definition of ``kind``."""
    message = decode(line)
    definition = _kinds()[kind]
    assert message["t"] == kind
    assert definition.__required_keys__ <= set(message) <= set(definition.__annotations__)
    return message


def test_hand_formatted_lines_decode_to_their_typed_messages() -> None:
    location = ("tests/test_a.py", 3, "test_a[1]")
    setup = protocol.timings_json(0.5, 10.0, 10.5)
    call = protocol.timings_json(0.25, 10.5, 10.75, protocol.extras_json({"extra": []}))
    where = protocol.location_json(location)
    line = protocol.pass_line(7, setup, call, setup, where)
    timings = [[0.5, 10.0, 10.5], [0.25, 10.5, 10.75, {"extra": []}], [0.5, 10.0, 10.5]]
    expected = {"t": "pass", "i": 7, "p": timings, "l": list(location)}
    assert _typed(line, "pass") == decode(encode(expected)) == expected
    # Byte for byte what encode() writes, where no location (with its spaces) is in it.
    ok = {"t": "ok", "i": 2, "w": "call", "p": [0.25, 10.5, 10.75, {"extra": []}]}
    assert protocol.ok_line(2, "call", call) == encode(ok)
    assert _typed(protocol.ok_line(2, "setup", setup, where), "ok")["l"] == list(location)
    assert protocol.end_line(12) == encode({"t": "end", "i": 12})
    assert _typed(protocol.end_line(12), "end") == {"t": "end", "i": 12}


def test_the_compact_forms_stand_for_plain_reports() -> None:
    line = protocol.pass_line(
        0, "[1.0,2.0,3.0]", '[4.0,5.0,6.0,{"x":1}]', "[7.0,8.0,9.0]", '["t.py", 1, "t"]'
    )
    setup, call, teardown = protocol.pass_reports(decode(line))
    assert [r["when"] for r in (setup, call, teardown)] == list(protocol.PHASES)
    assert setup == {
        protocol.PLAIN_KEY: True,
        "outcome": "passed",
        "when": "setup",
        "duration": 1.0,
        "start": 2.0,
        "stop": 3.0,
        "location": ["t.py", 1, "t"],
    }
    assert call["extras"] == {"x": 1} and "location" not in call
    assert protocol.ok_report(decode(protocol.ok_line(0, "teardown", "[7.0,8.0,9.0]"))) == teardown


def test_the_request_prefix_is_how_every_encoded_request_starts() -> None:
    assert encode({"t": "need"}).startswith(protocol.NEED_PREFIX)
    assert encode({"t": "need", "ahead": 1}).startswith(protocol.NEED_PREFIX)
    others = [encode({"t": kind}) for kind in _kinds() if kind != "need"]
    assert not any(line.startswith(protocol.NEED_PREFIX) for line in others)


def test_lines_are_decoded_together_in_order_with_messages_already_decoded() -> None:
    lines = [encode({"t": "end", "i": n}) for n in range(3)]
    mixed = [lines[0], {"t": "need"}, lines[1], lines[2]]
    assert protocol.decode_all(mixed) == [
        {"t": "end", "i": 0},
        {"t": "need"},
        {"t": "end", "i": 1},
        {"t": "end", "i": 2},
    ]
    assert protocol.decode_all([{"t": "need"}]) == [{"t": "need"}]


def test_a_line_that_is_no_message_is_named() -> None:
    with pytest.raises(ValueError, match="not a protocol message: b'\\[1\\]"):
        protocol.decode_all([encode({"t": "need"}), b"[1]\n"])
    with pytest.raises(ValueError):
        protocol.decode_all([b"{broken\n"])


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_a_process_forked_from_the_worker_says_nothing_on_its_pipes(pipes: Pipes) -> None:
    channel = pipes.channel()
    channel.send_raw(_line(1), flush=False)  # buffered: the fork gets a copy
    pid = os.fork()
    if pid == 0:  # a test's multiprocessing worker, say
        ok = False
        try:
            channel.send({"t": "need"})
            channel.flush()
            ok = all(_closed(fd) for fd in (pipes.cmd_r, pipes.evt_w, pipes.wake_w))
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    channel.flush()
    os.set_blocking(pipes.evt_r, False)
    assert os.read(pipes.evt_r, 1 << 16) == _line(1)  # once, the worker's own
    assert not os.get_inheritable(pipes.evt_w)  # nor does a program a test starts get them


def test_a_queue_closed_twice_leaves_the_next_pipes_alone(pipes: Pipes) -> None:
    # A relay's watcher and an exchange may both close a worker's queue.
    queue = EventQueue(pipes.evt_r, "t", pipes.wake_r)
    _worker_ends(pipes, queue)  # closes it once
    next_r, next_w = os.pipe()  # the next worker's pipe, likely on the same numbers
    try:
        queue.close()
        os.write(next_w, b"ready\n")
        assert os.read(next_r, 100) == b"ready\n"
    finally:
        os.close(next_r)
        os.close(next_w)
