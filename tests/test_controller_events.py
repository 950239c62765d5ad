"""The controller's handling of worker events, against a scripted executor (no Ray)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import OrchestratorError
from orchestrator.run import controller as controller_module
from orchestrator.run.controller import Controller
from orchestrator.run.executor import ClusterInfo, PollResult
from orchestrator.run.protocol import Command, InitMessage, Message
from orchestrator.run.run_config import RunConfig
from orchestrator.scheduling.head_start import Given
from orchestrator.scheduling.planner import make_plan
from orchestrator.scheduling.resources import DEFAULT, Resources
from orchestrator.scheduling.retry import Attempt, RetryPolicy

#: What a scripted worker answers to one command: the events it sends back.
Script = Callable[[str, Message], list[Message]]


class ScriptedExecutor:
    """Runs no process: each command a worker is sent is answered by ``script``."""

    leased = 0

    def __init__(self, script: Script) -> None:
        self.script = script
        self.inits: list[InitMessage] = []
        self.closed: list[str] = []
        self._events: dict[str, list[Message]] = {}

    def connect(self, local_cpus: int) -> ClusterInfo:
        return ClusterInfo("a script", local_cpus)

    def node_resources(self) -> dict[str, dict[str, float]]:
        return {"node-0": {"CPU": 4.0}}

    def worker_nodes(self, workers: Sequence[str]) -> dict[str, str | None]:
        return dict.fromkeys(workers)

    def launch(self, inits: Sequence[InitMessage], env: Mapping[str, str], cwd: str) -> None:
        for init in inits:
            self.inits.append(init)
            self.send(init["worker"], [init])

    def wait_started(self, workers: Sequence[str]) -> None:
        pass

    def send(self, worker: str, commands: Sequence[Command]) -> None:
        queue = self._events.setdefault(worker, [])
        for command in commands:
            queue.extend(self.script(worker, dict(command)))

    def dispatch(self) -> None:
        pass

    def poll(self, timeout: float) -> list[PollResult]:
        ready = [(w, list(events)) for w, events in self._events.items() if events]
        for worker, _ in ready:
            self._events[worker] = []
        return ready  # type: ignore[return-value]

    def close_worker(self, worker: str, graceful: bool = True) -> None:
        self.closed.append(worker)
        self._events.pop(worker, None)

    def shutdown(self, graceful: bool = True, *, wait: bool = True) -> None:
        pass

    def wait_closed(self) -> None:
        pass


class Recorder:
    """A listener that keeps what it is told."""

    def __init__(self) -> None:
        self.finals: list[tuple[int, Attempt, Sequence[Attempt]]] = []
        self.batches = 0
        self.down: list[tuple[str, str | None, Message | None]] = []
        self.ready: list[str] = []
        self.output: list[tuple[str, str]] = []
        self.logs: list[Message] = []
        self.started: list[str] = []

    def test_final(self, index: int, attempt: Attempt, earlier: Sequence[Attempt]) -> None:
        self.finals.append((index, attempt, earlier))

    def replaying(self) -> AbstractContextManager[object]:
        self.batches += 1
        return nullcontext()

    def test_warning(self, worker: str, data: Message) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def worker_starting(self, init: Message) -> None:
        self.started.append(init["worker"])
        init["workerinput"] = {"plugin_key": init["worker"]}

    def worker_ready(self, worker: str) -> None:
        self.ready.append(worker)

    def worker_down(self, worker: str, error: str | None, bye: Message | None) -> None:
        self.down.append((worker, error, bye))

    def worker_output(self, worker: str, text: str) -> None:
        self.output.append((worker, text))

    def worker_log(self, worker: str, message: Message) -> None:
        self.logs.append(message)


def _report(index: int, when: str, outcome: str, **extra: Any) -> Message:
    return {"t": "report", "i": index, "r": {"when": when, "outcome": outcome, **extra}}


BYE: Message = {"t": "bye", "code": 0, "output": {"cov_worker_node_id": "x"}, "info": {}}
EXIT: Message = {"t": "exit", "code": 0, "how": "exit code 0", "log": ""}


def _worker(tests: Callable[[int], list[Message]]) -> Script:
    """A worker that collects, asks for work, runs each test with ``tests`` and ends; a
    test whose events end with ``exit`` ends the worker there."""

    def script(worker: str, command: Message) -> list[Message]:
        kind = command["t"]
        if kind == "tests":
            return [{"t": "ready", "missing": [], "nmissing": 0}, {"t": "need"}]
        if kind == "run":
            events: list[Message] = []
            for index in command["i"]:
                events.extend(tests(index))
                if events and events[-1]["t"] == "exit":
                    return events
            return [*events, {"t": "need"}]
        if kind == "finish":
            return [BYE, EXIT]
        return []

    return script


def _controller(script: Script, nodeids: list[str], **options: Any) -> tuple[Controller, Recorder]:
    recorder = Recorder()
    config = RunConfig(workers=options.pop("workers", 1), **options)
    controller = Controller(make_plan(nodeids, {}), ScriptedExecutor(script), recorder, config)
    return controller, recorder


def _bound_polls(controller: Controller, limit: int, message: str) -> None:
    """Fail with ``message`` when the run polls its executor ``limit`` times: the scripted
    executor answers at once, so a run that waits for something never ends otherwise."""
    executor = controller.executor
    poll = executor.poll
    polls = 0

    def bounded(timeout: float) -> list[PollResult]:
        nonlocal polls
        polls += 1
        assert polls < limit, message
        return poll(timeout)

    executor.poll = bounded  # type: ignore[method-assign]


def test_a_test_run_again_on_its_worker_has_one_verdict_with_every_report() -> None:
    # As pytest-rerunfailures runs a test: two rounds of phases, then the end.
    rerun = [
        _report(0, "setup", "passed", rerun=0),
        _report(0, "call", "rerun", rerun=0),
        _report(0, "teardown", "passed", rerun=0),
        _report(0, "setup", "passed", rerun=1),
        _report(0, "call", "passed", rerun=1),
        _report(0, "teardown", "passed", rerun=1),
        {"t": "end", "i": 0},
    ]
    controller, recorder = _controller(_worker(lambda i: rerun), ["t.py::test_a"])
    controller.run()
    [(index, attempt, earlier)] = recorder.finals
    assert index == 0 and earlier == []
    assert [(r["when"], r["outcome"]) for r in attempt.reports] == [
        ("setup", "passed"),
        ("call", "rerun"),
        ("teardown", "passed"),
        ("setup", "passed"),
        ("call", "passed"),
        ("teardown", "passed"),
    ]


def test_the_listener_gets_the_tests_that_ended_together_in_one_batch() -> None:
    def plain_pass(index: int) -> list[Message]:
        timings = [[0.1, 1.0, 1.1], [0.2, 1.1, 1.3], [0.1, 1.3, 1.4]]
        return [{"t": "pass", "i": index, "p": timings, "l": ["t.py", index, "t"]}]

    nodeids = [f"t.py::test_{n}" for n in range(20)]
    controller, recorder = _controller(_worker(plain_pass), nodeids)
    controller.run()
    assert sorted(index for index, _, _ in recorder.finals) == list(range(20))
    # One batch per turn of the loop that saw tests end, not one per test.
    assert 1 <= recorder.batches < 20
    [setup, call, teardown] = recorder.finals[0][1].reports
    assert (setup["when"], call["when"], teardown["when"]) == ("setup", "call", "teardown")
    assert setup["location"] == ["t.py", recorder.finals[0][0], "t"]


def test_a_failure_rerun_on_its_worker_is_not_retried_but_a_crash_is() -> None:
    failed = [
        _report(0, "setup", "passed", rerun=1),
        _report(0, "call", "failed", rerun=1),
        _report(0, "teardown", "passed", rerun=1),
        {"t": "end", "i": 0},
    ]
    controller, recorder = _controller(
        _worker(lambda i: failed), ["t.py::test_a"], retry=RetryPolicy(retries=2)
    )
    controller.run()
    [(_, attempt, earlier)] = recorder.finals
    assert attempt.failed and earlier == []
    assert RetryPolicy(retries=2).should_retry(0, 1, Attempt("gw0", attempt.reports, lost="x"))


def test_a_test_that_sent_no_report_still_ends() -> None:
    controller, recorder = _controller(_worker(lambda i: [{"t": "end", "i": i}]), ["t.py::a"])
    controller.run()
    assert [(i, a.reports) for i, a, _ in recorder.finals] == [(0, ())]


def test_nodes_are_configured_ready_and_down_with_what_the_worker_sent() -> None:
    passed = [{"t": "pass", "i": 0, "p": [[0.0, 1.0, 1.0]] * 3, "l": ["t.py", 1, "a"]}]
    controller, recorder = _controller(_worker(lambda i: passed), ["t.py::a"])
    controller.run()
    assert recorder.ready == ["gw0"]
    assert recorder.down == [("gw0", None, BYE)]
    init = controller.executor.inits[0]  # type: ignore[attr-defined]
    assert init["workerinput"] == {"plugin_key": "gw0"}


def test_output_and_live_logs_reach_the_listener() -> None:
    events = [
        {"t": "out", "s": "printed"},
        {"t": "log", "w": "call", "r": {"msg": "logged"}},
        {"t": "end", "i": 0},
    ]
    controller, recorder = _controller(_worker(lambda i: events), ["t.py::a"])
    controller.run()
    assert recorder.output == [("gw0", "printed")]
    assert recorder.logs[0]["r"]["msg"] == "logged"


def test_a_worker_whose_session_fails_to_start_stops_the_run_with_its_output() -> None:
    traceback = 'File "conftest.py", line 3, in pytest_configure\nRuntimeError: boom'

    def script(worker: str, command: Message) -> list[Message]:
        if command["t"] == "init":
            return [{"t": "bye", "code": 3}, {**EXIT, "log": traceback}]
        return []

    controller, recorder = _controller(script, ["t.py::a", "t.py::b"], workers=2)
    with pytest.raises(OrchestratorError) as raised:
        controller.run()
    message = str(raised.value)
    assert message.startswith("worker gw0 could not start: its pytest session ended with exit")
    assert "exit code 3 (internal error)" in message
    assert message.endswith(f"The output of gw0 ends with:\n{traceback}")
    assert recorder.down == []  # the run ends with this error alone


def test_a_worker_killed_while_starting_is_replaced_and_its_output_reported() -> None:
    killed: set[str] = set()

    def script(worker: str, command: Message) -> list[Message]:
        kind = command["t"]
        if kind == "init" and worker == "gw0" and not killed:
            killed.add(worker)
            return [{"t": "exit", "code": -9, "how": "signal 9 (SIGKILL)", "log": "Killed"}]
        return _worker(lambda i: [{"t": "end", "i": i}])(worker, command)

    controller, recorder = _controller(script, ["t.py::a", "t.py::b"], workers=2)
    stats = controller.run()
    assert sorted(i for i, _, _ in recorder.finals) == [0, 1]
    assert stats.lost == ["gw0 (during start-up, signal 9 (SIGKILL))"]
    worker, error, bye = recorder.down[0]
    assert worker == "gw0" and bye is None
    assert error == (
        "ended before it collected the tests (signal 9 (SIGKILL)).\n"
        "The output of gw0 ends with:\nKilled"
    )
    assert "gw2" in recorder.started  # its replacement


def test_tests_left_when_every_worker_is_lost_name_the_last_loss_and_its_output() -> None:
    def script(worker: str, command: Message) -> list[Message]:
        if command["t"] == "tests":  # ready, then dies before any test: no test explains it
            crash = {"t": "exit", "code": -11, "how": "signal 11", "log": "Fatal Python error"}
            return [{"t": "ready", "missing": [], "nmissing": 0}, crash]
        return []

    controller, recorder = _controller(
        script, ["t.py::a", "t.py::b", "t.py::c"], max_replacements=0
    )
    stats = controller.run()
    assert stats.gave_up is not None
    assert "the last one: worker gw0 crashed" in stats.gave_up
    assert stats.gave_up.endswith("The output of gw0 ends with:\nFatal Python error")
    assert "see the errors above" not in stats.gave_up
    assert [a.cause for _, a, _ in recorder.finals] == ["not run"] * 3
    assert [d[0] for d in recorder.down] == ["gw0"]


@settings(max_examples=60, deadline=None)
@given(
    faults=st.lists(st.sampled_from(["", "crash", "hang"]), min_size=1, max_size=25),
    workers=st.integers(1, 3),
    retries=st.integers(0, 2),
)
def test_a_fault_belongs_to_its_test_and_the_run_ends(
    faults: list[str], workers: int, retries: int
) -> None:
    """Random suites whose faulty tests kill their worker or hang until the controller
    kills it: every healthy test passes, each faulty test gets one verdict naming its
    fault, and the run ends however many there are (no replacement limit is reached)."""
    crash: Message = {"t": "exit", "code": 1, "how": "exit code 1", "log": "bye"}
    killed: Message = {"t": "exit", "code": -9, "how": "signal 9 (SIGKILL)", "log": ""}

    def test(index: int) -> list[Message]:
        if faults[index] == "crash":
            return [_report(index, "setup", "passed"), crash]
        if faults[index] == "hang":  # nothing more until it is killed
            return [_report(index, "setup", "passed"), {"t": "hang"}]
        return [{"t": "end", "i": index}]

    running = _worker(test)

    def script(worker: str, command: Message) -> list[Message]:
        if command["t"] == "kill":
            return [killed]
        events = running(worker, command)
        if any(e["t"] == "hang" for e in events):
            return events[: next(i for i, e in enumerate(events) if e["t"] == "hang")]
        return events

    nodeids = [f"t.py::test_{i}" for i in range(len(faults))]
    controller, recorder = _controller(
        script,
        nodeids,
        workers=workers,
        retry=RetryPolicy(retries=retries),
        timeout=lambda index: 0.002 if faults[index] == "hang" else None,
    )
    _bound_polls(controller, 1_000_000, "the run does not end")
    stats = controller.run()
    verdicts = {index: attempt for index, attempt, _ in recorder.finals}
    assert sorted(verdicts) == list(range(len(faults)))  # exactly one each
    for index, fault in enumerate(faults):
        attempt = verdicts[index]
        if fault == "crash":
            assert attempt.lost is not None and "crashed while running" in attempt.lost
        elif fault == "hang":
            assert attempt.lost is not None and "timed out after" in attempt.lost
        else:
            assert attempt.lost is None and not attempt.failed
    assert stats.gave_up is None


@settings(max_examples=60, deadline=None)
@given(
    tests=st.integers(1, 30),
    workers=st.integers(1, 3),
    limit=st.integers(1, 6),
    batch_crash=st.booleans(),
)
def test_recycled_workers_hand_back_their_tests_and_are_replaced_without_limit(
    tests: int, workers: int, limit: int, batch_crash: bool
) -> None:
    """Workers that end at their recycling limit (mid-batch, holding tests): every test
    still runs exactly once, fresh workers take their places whatever the replacement
    limit, and the run lists each recycled worker."""
    ran: dict[str, int] = {}
    order: list[int] = []

    def script(worker: str, command: Message) -> list[Message]:
        kind = command["t"]
        if kind == "tests":
            return [{"t": "ready", "missing": [], "nmissing": 0}, {"t": "need"}]
        if kind == "run":
            events: list[Message] = []
            for index in command["i"]:
                order.append(index)
                events.append({"t": "end", "i": index})
                ran[worker] = ran.get(worker, 0) + 1
                if ran[worker] >= limit:
                    why = {"t": "recycle", "why": f"ran {limit} tests"}
                    # The process may also die while it ends: it held nothing by then.
                    end = [{**EXIT, "code": -9, "how": "signal 9"}] if batch_crash else [BYE, EXIT]
                    return [*events, why, *end]
            return [*events, {"t": "need"}]
        if kind == "finish":
            return [BYE, EXIT]
        return []

    nodeids = [f"t{i % 3}.py::test_{i}" for i in range(tests)]
    controller, recorder = _controller(script, nodeids, workers=workers, max_replacements=0)
    stats = controller.run()
    assert sorted(order) == list(range(tests))  # each test ran once
    verdicts = {index: attempt for index, attempt, _ in recorder.finals}
    assert sorted(verdicts) == list(range(tests))
    assert all(a.lost is None for a in verdicts.values())
    assert stats.gave_up is None
    recycled = [w for w, n in ran.items() if n >= limit]
    assert sorted(entry.split(":")[0] for entry in stats.recycled) == sorted(recycled)
    assert all(entry.endswith(f"ran {limit} tests") for entry in stats.recycled)


def test_a_head_start_is_taken_over_under_the_plans_numbers() -> None:
    """An early worker numbers its guesses first and the plan's tests after them: its
    results come back under the plan's indices, a guess this run did not collect is
    dropped, and what it is given later leaves in its own numbering."""
    nodeids = ["t.py::a", "t.py::b", "t.py::c"]
    # Guessed: 0 = b, 1 = a test this run did not collect, 2 = a.
    given = Given(count=3, by_worker={"gw0": [(0, 1), (2, 0)]})
    sent: list[Message] = []

    def script(worker: str, command: Message) -> list[Message]:
        sent.append(command)
        kind = command["t"]
        if kind == "more":
            ran = [{"t": "end", "i": number} for number in range(3)]
            return [{"t": "ready", "missing": [], "nmissing": 0}, *ran, {"t": "need"}]
        if kind == "run":
            return [*({"t": "end", "i": number} for number in command["i"]), {"t": "need"}]
        if kind == "finish":
            return [BYE, EXIT]
        return []

    controller, recorder = _controller(script, nodeids, launched=["gw0"], head_start=given)
    controller.run()
    assert sorted(index for index, _, _ in recorder.finals) == [0, 1, 2]
    assert [c["i"] for c in sent if c["t"] == "run"] == [[3 + 2]]
    assert sent[0]["t"] == "more"  # no init: it was started before the controller
    assert not controller.executor.inits  # type: ignore[attr-defined]


def test_a_replacement_ray_cannot_place_keeps_nobody_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker dies (its node is lost) and Ray cannot place its replacement: the other
    worker runs the tests the lost one held, though they lie before where it is, once the
    replacement is late; the run does not wait for the replacement's time limit."""
    monkeypatch.setattr(controller_module, "PLACEMENT_GRACE", 0.0)
    crashed: list[int] = []
    ran_on: dict[int, str] = {}
    crash: Message = {"t": "exit", "code": -9, "how": "signal 9", "log": ""}

    def script(worker: str, command: Message) -> list[Message]:
        kind = command["t"]
        if kind == "tests":
            if worker == "gw2":  # the replacement: never placed
                return []
            return [{"t": "ready", "missing": [], "nmissing": 0}, {"t": "need"}]
        if kind == "run":
            events: list[Message] = []
            for index in command["i"]:
                if worker == "gw0":
                    crashed.append(index)
                    return [*events, _report(index, "setup", "passed"), crash]
                ran_on[index] = worker
                events.append({"t": "end", "i": index})
            return [*events, {"t": "need"}]
        if kind == "finish":
            return [BYE, EXIT]
        return []

    monkeypatch.setattr(controller_module, "REPLACEMENT_TIMEOUT", float("inf"))
    nodeids = [f"t.py::test_{i}" for i in range(20)]
    controller, recorder = _controller(script, nodeids, workers=2)
    _bound_polls(controller, 100_000, "the run waits for a replacement that never comes")
    stats = controller.run()
    verdicts = {index: attempt for index, attempt, _ in recorder.finals}
    assert sorted(verdicts) == list(range(20))
    assert crashed and all(verdicts[i].lost for i in crashed)
    assert set(ran_on) == set(range(20)) - set(crashed)
    assert set(ran_on.values()) == {"gw1"}
    assert stats.gave_up is None


class PlacedExecutor(ScriptedExecutor):
    """A scripted executor that says where each early worker holds its CPU."""

    def __init__(self, script: Script, nodes: dict[str, dict[str, float]], where: dict[str, str]):
        super().__init__(script)
        self.nodes = nodes
        self.where = where

    def node_resources(self) -> dict[str, dict[str, float]]:
        return self.nodes

    def worker_nodes(self, workers: Sequence[str]) -> dict[str, str | None]:
        return {w: self.where.get(w) for w in workers}


@pytest.mark.parametrize("on_gpu_node", ["gw0", "gw1"])
def test_an_early_worker_on_the_only_cpu_of_the_gpu_node_makes_way(on_gpu_node: str) -> None:
    """Two ordinary workers started before collection, one on each node; the suite has a
    GPU test and the GPU node has one CPU: the one sitting there is closed, the other
    kept, and the GPU worker started, whichever of them Ray put on the GPU node."""
    ran_on: dict[int, str] = {}

    def script(worker: str, command: Message) -> list[Message]:
        kind = command["t"]
        if kind == "tests":
            return [{"t": "ready", "missing": [], "nmissing": 0}, {"t": "need"}]
        if kind == "run":
            ran_on.update((index, worker) for index in command["i"])
            return [*({"t": "end", "i": index} for index in command["i"]), {"t": "need"}]
        if kind == "finish":
            return [BYE, EXIT]
        return []

    gpu = Resources(gpus=1.0)
    nodes = {"head": {"CPU": 1.0}, "gpu-node": {"CPU": 1.0, "GPU": 1.0}}
    other = "gw1" if on_gpu_node == "gw0" else "gw0"
    executor = PlacedExecutor(script, nodes, {on_gpu_node: "gpu-node", other: "head"})
    nodeids = ["t.py::test_gpu", "t.py::test_cpu"]
    config = RunConfig(
        workers=2, launched=["gw0", "gw1"], needs=[gpu, DEFAULT], shapes=[gpu, DEFAULT]
    )
    controller = Controller(make_plan(nodeids, {}, classes=[0, 1]), executor, Recorder(), config)
    _bound_polls(controller, 1000, "the run does not end")
    controller.run()
    assert executor.closed[0] == on_gpu_node  # closed before the GPU worker is placed
    assert [init["worker"] for init in executor.inits] == ["gw2"]
    assert executor.inits[0]["resources"] == gpu.as_ray()
    assert ran_on == {0: "gw2", 1: other}
