"""Messages between the controller, a worker process and its owner: one JSON object per
line, whose ``t`` names its kind. Every message has one typed definition below; they are
encoded and decoded here, and nowhere else.

Controller -> worker (through its owner, which handles ``kill`` itself):

==========  ==============================================================================
``init``    ``worker``, ``args``; ``workercount``, ``testrunuid``, ``nice``, ``basetemp``,
            ``recycle``, ``resources``, ``env``, ``live``, ``workerinput``, ``nodeids``
            and ``guessed`` (a head start's tests), ``adopt`` (added by the owner for a
            spare process), ``sys_path_prefix``: start a pytest session (once, first)
``tests``   ``nodeids``, ``workerinput``: the controller's tests, for a worker that
            started while the controller collected
``more``    ``nodeids``, ``workerinput``: the controller's tests after a head start's
            guesses, numbered after them
``run``     ``i`` (test numbers), ``a`` (ask for more as a test starts with that many
            left after it; None or absent: only when out of work)
``later``   the answer to an early request: nothing now, ask again when out of work
``wait``    nothing now, but stay (a running test may fail and be retried)
``finish``  the run is over: end the session
``stop``    stop running tests (``-x``, ``--maxfail``) and end the session
``kill``    for the owner: kill the worker process now (a timeout)
==========  ==============================================================================

Worker -> controller:

==============  ==========================================================================
``ready``       ``missing``, ``nmissing``, ``errors`` (optional): collected; the tests it
                could not find (the first 50) and why files failed to collect
``gone``        ``i``: head-start guesses this worker did not find (not an error)
``collecting``  a test file is being collected late: its time is not the test's
``collected``   that file is collected
``missing``     ``missing``, ``nmissing``, ``errors``: tests a file collected late lacks
``report``      ``i``, ``r`` (``pytest_report_to_serializable``'s data), ``text`` (a
                failure's text, optional): one test phase
``ok``          ``i``, ``w`` (the phase), ``p`` (timings), ``l`` (the location, with the
                setup phase): a phase that passed plainly, as timings only
``pass``        ``i``, ``p`` (three timings), ``l``: a whole test whose three phases, its
                only reports, passed plainly; no ``end`` follows
``end``         ``i``: the test's reports (any number, or none) are complete
``need``        ``ahead`` (optional): out of work, or about to be
``recycle``     ``why``: at its recycling limit, its fixtures torn down; it is ending
``warning``     ``message``, ``category``, ``filename``, ``lineno``, ``when``, ``nodeid``,
                ``location``: a warning recorded while a test ran
``log``         ``w`` (the phase), ``r`` (the record's fields): a live log record
                (``log_cli``)
``bye``         ``code``, ``info`` (what it ran on), ``output`` (its
                ``config.workeroutput``), ``output_error`` (optional): the session is over
==============  ==========================================================================

Owner -> controller (the worker's owner adds them to its events):

==========  ==============================================================================
``out``     ``s``: a line the worker printed (with ``-s``)
``exit``    ``code``, ``how``, ``log`` (the end of its output): the process ended
==========  ==============================================================================

Timings (``p``) are ``[duration, start, stop]``, with a fourth item when plugins added
attributes with plain values to the report. The worker writes ``ok``, ``pass`` and
``end`` lines with :func:`ok_line`, :func:`pass_line` and :func:`end_line`, which format
them by hand: they are most of the traffic, and ``json.dumps`` would cost more than the
rest of their path. They travel through pipes: see :mod:`orchestrator.run.channel`.
"""

# No ``from __future__ import annotations`` here: the TypedDicts' annotations are then
# evaluated at once, which costs less than parsing each from a string while every
# worker process imports this module.
import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

#: The line a worker prints (with ``-s``) once its session has started: what it printed
#: before (pytest's header, warnings the controller shows too) is not passed on.
LIVE_START = b"\x00orchestrator: live output\x00"

#: A decoded message of any kind, before its kind is looked at.
Message = dict[str, Any]
#: Report data as ``pytest_report_to_serializable`` gives it (or :func:`plain_report`).
ReportData = dict[str, Any]
#: A phase's ``[duration, start, stop]``, and the attributes plugins added, if any.
Timings = list[Any]


# Each message is a TypedDict whose ``t`` names its kind. Where some keys are optional, the
# required ones sit in a ``_...Keys`` base class (``NotRequired`` needs Python 3.11).


# -- controller -> worker ----------------------------------------------------------------
class Adopt(TypedDict):
    """What a spare process takes on as its own (see orchestrator.worker.session.adopt)."""

    cwd: str
    env: dict[str, str]


class _InitKeys(TypedDict):
    t: Literal["init"]
    worker: str
    args: list[str]


class InitMessage(_InitKeys, total=False):
    workercount: int
    testrunuid: str
    nice: int
    basetemp: str | None
    recycle: dict[str, int]
    resources: dict[str, float]
    env: dict[str, str]
    live: bool
    workerinput: dict[str, Any]
    nodeids: list[str]
    guessed: int
    adopt: Adopt
    sys_path_prefix: list[str]


class _TestsKeys(TypedDict):
    t: Literal["tests"]
    nodeids: list[str]


class TestsMessage(_TestsKeys, total=False):
    workerinput: dict[str, Any]


class _MoreKeys(TypedDict):
    t: Literal["more"]
    nodeids: list[str]


class MoreMessage(_MoreKeys, total=False):
    workerinput: dict[str, Any]


class _RunKeys(TypedDict):
    t: Literal["run"]
    i: list[int]


class RunMessage(_RunKeys, total=False):
    a: int | None


class LaterMessage(TypedDict):
    t: Literal["later"]


class WaitMessage(TypedDict):
    t: Literal["wait"]


class FinishMessage(TypedDict):
    t: Literal["finish"]


class StopMessage(TypedDict):
    t: Literal["stop"]


class KillMessage(TypedDict):
    t: Literal["kill"]


Command = (
    InitMessage
    | TestsMessage
    | MoreMessage
    | RunMessage
    | LaterMessage
    | WaitMessage
    | FinishMessage
    | StopMessage
    | KillMessage
)


# -- worker -> controller ----------------------------------------------------------------
class _ReadyKeys(TypedDict):
    t: Literal["ready"]
    missing: list[str]
    nmissing: int


class ReadyMessage(_ReadyKeys, total=False):
    errors: list[str]


class GoneMessage(TypedDict):
    t: Literal["gone"]
    i: list[int]


class CollectingMessage(TypedDict):
    t: Literal["collecting"]


class CollectedMessage(TypedDict):
    t: Literal["collected"]


class MissingMessage(TypedDict):
    t: Literal["missing"]
    missing: list[str]
    nmissing: int
    errors: list[str]


class _ReportKeys(TypedDict):
    t: Literal["report"]
    i: int
    r: ReportData


class ReportMessage(_ReportKeys, total=False):
    text: str


class _OkKeys(TypedDict):
    t: Literal["ok"]
    i: int
    w: str
    p: Timings


class OkMessage(_OkKeys, total=False):
    l: list[Any]  # noqa: E741 - the wire's name


class PassMessage(TypedDict):
    t: Literal["pass"]
    i: int
    p: list[Timings]
    l: list[Any]  # noqa: E741 - the wire's name


class EndMessage(TypedDict):
    t: Literal["end"]
    i: int


class _NeedKeys(TypedDict):
    t: Literal["need"]


class NeedMessage(_NeedKeys, total=False):
    ahead: int


class RecycleMessage(TypedDict):
    t: Literal["recycle"]
    why: str


class WarningMessage(TypedDict):
    t: Literal["warning"]
    message: str
    category: str
    filename: str
    lineno: int
    when: str
    nodeid: str
    location: list[Any] | None


class LogMessage(TypedDict):
    t: Literal["log"]
    w: str | None
    r: dict[str, Any]


class WorkerInfo(TypedDict):
    """What a worker ran on, as pytest-xdist's ``gateway._rinfo()`` tells it."""

    platform: str
    version_info: list[Any]
    executable: str
    cwd: str
    pid: int


class _ByeKeys(TypedDict):
    t: Literal["bye"]
    code: int


class ByeMessage(_ByeKeys, total=False):
    info: WorkerInfo
    output: dict[str, Any]
    output_error: str


# -- owner -> controller -----------------------------------------------------------------
class OutMessage(TypedDict):
    t: Literal["out"]
    s: str


class ExitMessage(TypedDict):
    t: Literal["exit"]
    code: int
    how: str
    log: str


Event = (
    ReadyMessage
    | GoneMessage
    | CollectingMessage
    | CollectedMessage
    | MissingMessage
    | ReportMessage
    | OkMessage
    | PassMessage
    | EndMessage
    | NeedMessage
    | RecycleMessage
    | WarningMessage
    | LogMessage
    | ByeMessage
    | OutMessage
    | ExitMessage
)


# -- encoding and decoding ---------------------------------------------------------------
#: JSON without spaces: the hand-formatted lines below are written the same way.
SEPARATORS = (",", ":")


def encode(message: Command | Event) -> bytes:
    """One message as a line of JSON."""
    return json.dumps(message, separators=SEPARATORS).encode() + b"\n"


def decode(line: bytes | str) -> Message:
    """A line of JSON as a message; ValueError when it is none."""
    value = json.loads(line)
    if not isinstance(value, dict) or "t" not in value:
        raise ValueError(f"not a protocol message: {line!r:.200}")
    return value


def decode_all(lines: Sequence[bytes | Message]) -> list[Message]:
    """Messages, in order, from encoded lines and messages already decoded: the lines in
    one call of the JSON parser (a few at a time cost more in calls than in parsing);
    ValueError naming the first line that is no message."""
    encoded = [line for line in lines if not isinstance(line, dict)]
    if not encoded:
        return list(lines)  # type: ignore[arg-type]
    try:
        values = json.loads(b"[" + b",".join(encoded) + b"]")
    except ValueError:
        values = None
    if values is None or not all(isinstance(v, dict) and "t" in v for v in values):
        return [line if isinstance(line, dict) else decode(line) for line in lines]
    if len(encoded) == len(lines):
        return values  # type: ignore[no-any-return]
    parsed = iter(values)
    return [line if isinstance(line, dict) else next(parsed) for line in lines]


def run_message(numbers: list[int], ask_at: int | None) -> RunMessage:
    """Tests for a worker to run, by its numbers, and when to ask for more."""
    return {"t": "run", "i": numbers, "a": ask_at}


#: How every encoded request for work starts, with ``ahead`` or without: the owner looks
#: for it in raw lines, to pass the request on at once without decoding anything.
NEED_PREFIX = encode({"t": "need"})[: -len(b"}\n")]


# The worker's hot path: plain passed phases. Each function gives what encode() would for
# the same message, except for spaces inside ``l``, which decode alike.
def timings_json(duration: float, start: float, stop: float, extras: str = "") -> str:
    """A phase's timings (``p``) as JSON; ``extras`` from :func:`extras_json`, or ""."""
    return f"[{duration!r},{start!r},{stop!r}{extras}]"


def extras_json(extras: Mapping[str, Any]) -> str:
    """Attributes plugins added to a plain report, as the end of its timings' JSON."""
    return "," + json.dumps(extras, separators=SEPARATORS)


def location_json(location: Sequence[Any]) -> str:
    """A report's location (``l``) as JSON."""
    return json.dumps(location)


def ok_line(index: int, when: str, timings: str, location: str | None = None) -> bytes:
    """An encoded ``ok`` message, from :func:`timings_json` and :func:`location_json`."""
    where = f',"l":{location}' if location else ""
    return f'{{"t":"ok","i":{index},"w":"{when}","p":{timings}{where}}}\n'.encode()


def pass_line(index: int, setup: str, call: str, teardown: str, location: str) -> bytes:
    """An encoded ``pass`` message, from three :func:`timings_json` and a location."""
    return f'{{"t":"pass","i":{index},"p":[{setup},{call},{teardown}],"l":{location}}}\n'.encode()


def end_line(index: int) -> bytes:
    """An encoded ``end`` message."""
    return f'{{"t":"end","i":{index}}}\n'.encode()


#: A test's phases, in the order of a ``pass`` message's timings.
PHASES = ("setup", "call", "teardown")
#: Marks report data rebuilt from timings (see :func:`plain_report`).
PLAIN_KEY = "$plain"


def plain_report(when: str, timings: Sequence[Any]) -> ReportData:
    """The report data of a phase that passed plainly, from its timings: ``$plain``,
    ``outcome``, ``when``, ``duration``, ``start``, ``stop`` and, when plugins added
    attributes with plain values, ``extras``. The controller's pytest completes it from
    its own copy of the test."""
    duration, start, stop, *extras = timings
    data: ReportData = {
        PLAIN_KEY: True,
        "outcome": "passed",
        "when": when,
        "duration": duration,
        "start": start,
        "stop": stop,
    }
    if extras:
        data["extras"] = extras[0]
    return data


def ok_report(message: OkMessage) -> ReportData:
    """The report data an ``ok`` message stands for (with its location, if it has one)."""
    data = plain_report(message["w"], message["p"])
    if "l" in message:
        data["location"] = message["l"]
    return data


def pass_reports(message: PassMessage) -> tuple[ReportData, ReportData, ReportData]:
    """The three reports a ``pass`` message stands for; the setup carries the location."""
    setup, call, teardown = message["p"]
    data = (
        plain_report("setup", setup),
        plain_report("call", call),
        plain_report("teardown", teardown),
    )
    data[0]["location"] = message["l"]
    return data


#: How :func:`pack` marks bytes inside a JSON value.
BYTES_KEY = "$bytes"


def pack(value: Any) -> Any:
    """A value plugins exchange with workers (``workerinput``, ``workeroutput``) as
    JSON: bytes become ``{"$bytes": base64}``, tuples lists. Raises TypeError naming the
    key of anything else JSON cannot carry."""
    if isinstance(value, bytes):
        return {BYTES_KEY: base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            try:
                out[str(key)] = pack(item)
            except TypeError as exc:
                raise TypeError(f"[{key!r}]{exc}") from None
        return out
    if isinstance(value, (list, tuple)):
        return [pack(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f": {type(value).__name__} {value!r:.80}")


def unpack(value: Any) -> Any:
    """The inverse of :func:`pack`."""
    if isinstance(value, dict):
        if len(value) == 1 and BYTES_KEY in value:
            return base64.b64decode(value[BYTES_KEY])
        return {key: unpack(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unpack(item) for item in value]
    return value
