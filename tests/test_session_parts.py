"""The parts of a ``--ray`` run on the controller, against a fake executor and fake
pytest objects (no Ray, no pytest session): starting workers early and counting them,
placing tests on worker shapes, replaying results, and the limits from markers."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pytest_orchestrator import early_start
from pytest_orchestrator.early_start import (
    EARLY_WORKERS_MAX,
    EarlyStart,
    start_early,
    worker_count,
)
from pytest_orchestrator.limits import TIMEOUT_GRACE, retry_policy, time_limit
from pytest_orchestrator.pipelines import Pipelines
from pytest_orchestrator.placement import make_room, place, strict_error
from pytest_orchestrator.recording import warnings_shown
from pytest_orchestrator.replay import Replay, own_plain_pass_listeners
from pytest_orchestrator.reports import ReportsPlugin

from orchestrator.config import RunOptions
from orchestrator.run.executor import ClusterInfo, Executor, PollResult
from orchestrator.run.protocol import Command, InitMessage, pass_reports, run_message
from orchestrator.run.run_config import WorkerSetup, with_guesses, worker_name
from orchestrator.scheduling.head_start import HeadStart
from orchestrator.scheduling.planner import auto_workers, make_plan
from orchestrator.scheduling.resources import DEFAULT, Resources
from orchestrator.scheduling.retry import Attempt
from orchestrator.worker.recycle import RecyclePolicy

ROOT = Path(__file__).resolve().parent.parent
GPU = Resources(gpus=1.0)


class FakeExecutor:
    """Keeps what it is asked to do; its workers never answer."""

    leased = 0

    def __init__(self, cpus: int = 8, fail: bool = False) -> None:
        self.cpus = cpus
        self.fail = fail
        self.connected: list[int] = []
        self.launched: list[InitMessage] = []
        self.env: Mapping[str, str] = {}
        self.sent: dict[str, list[Command]] = {}
        self.dispatched = 0
        self.closed: list[tuple[str, bool]] = []
        self.shutdowns: list[tuple[bool, bool]] = []

    def connect(self, local_cpus: int) -> ClusterInfo:
        self.connected.append(local_cpus)
        return ClusterInfo("a fake cluster", self.cpus)

    def node_resources(self) -> dict[str, dict[str, float]]:
        return {"node-0": {"CPU": float(self.cpus)}}

    def worker_nodes(self, workers: Sequence[str]) -> dict[str, str | None]:
        return dict.fromkeys(workers)

    def launch(self, inits: Sequence[InitMessage], env: Mapping[str, str], cwd: str) -> None:
        if self.fail:
            raise RuntimeError("no room")
        self.launched.extend(inits)
        self.env = env

    def wait_started(self, workers: Sequence[str]) -> None:
        pass

    def send(self, worker: str, commands: Sequence[Command]) -> None:
        self.sent.setdefault(worker, []).extend(commands)

    def dispatch(self) -> None:
        self.dispatched += 1

    def poll(self, timeout: float) -> list[PollResult]:
        return []

    def close_worker(self, worker: str, graceful: bool = True) -> None:
        self.closed.append((worker, graceful))

    def shutdown(self, graceful: bool = True, *, wait: bool = True) -> None:
        self.shutdowns.append((graceful, wait))

    def wait_closed(self) -> None:
        pass


class FakeTerminal:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str, yellow: bool = False) -> None:
        self.lines.append(text)

    def draw(self, final: bool = False) -> None:
        pass

    def one_flush(self) -> AbstractContextManager[None]:
        return nullcontext()


def _members(cls: type) -> set[str]:
    return {name for name in vars(cls) if not name.startswith("_")}


def test_the_executor_protocol_is_what_a_run_uses_and_what_executors_have() -> None:
    from orchestrator.cluster.ray_executor import RayExecutor

    needed = _members(Executor)
    assert needed <= _members(RayExecutor)
    assert needed == _members(FakeExecutor)
    callers = "".join(
        (ROOT / path).read_text()
        for path in (
            "orchestrator/run/controller.py",
            "plugins/pytest_orchestrator/session.py",
            "plugins/pytest_orchestrator/early_start.py",
            "plugins/pytest_orchestrator/placement.py",
        )
    )
    for name in needed:  # nothing declared that no caller uses
        assert re.search(rf"\.{name}\b", callers), name


# -- counting workers --------------------------------------------------------------------
def test_the_worker_count_is_asked_for_or_fits_the_cpus_and_the_plan() -> None:
    plan = make_plan([f"t.py::t{i}" for i in range(3)], {})
    assert worker_count(5, cpus=2) == worker_count(5, 2, plan) == 5
    assert worker_count(None, cpus=4) == 4
    assert worker_count(None, cpus=1000) == EARLY_WORKERS_MAX
    assert worker_count(None, 8, plan) == auto_workers(plan, 8, early_start.WORKER_STARTUP_SECONDS)
    assert worker_count(None, 8, plan) <= 3


def _setup() -> WorkerSetup:
    return WorkerSetup(args=("-q",), cwd="/project", testrunuid="run", basetemp="/tmp/run")


def _options(**kw: Any) -> RunOptions:
    return RunOptions(
        workers=kw.pop("workers", None),
        address=kw.pop("address", None),
        store_path=Path("unused.db"),
        **kw,
    )


def test_workers_start_early_on_a_local_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(early_start, "available_cpus", lambda: 3)
    executor = FakeExecutor(cpus=3)
    seen: list[str] = []
    early = start_early(
        executor,
        _options(),
        _setup(),
        starting=lambda init: seen.append(init["worker"]),
        guesses=lambda count, cpus: None,
    )
    assert executor.connected == [3]  # room for the workers on this machine
    assert early.launched == seen == ["gw0", "gw1", "gw2"]
    assert [init["workercount"] for init in executor.launched] == [3, 3, 3]
    assert executor.launched[1]["basetemp"] == "/tmp/run/gw1"
    assert early.head_start is None and not executor.sent and early.started_at is None


def test_early_workers_on_a_cluster_are_capped_at_its_cpus() -> None:
    executor = FakeExecutor(cpus=2)
    early = start_early(
        executor,
        _options(workers=6, address="ray://x"),
        _setup(),
        starting=lambda init: None,
        guesses=lambda count, cpus: None,
    )
    assert executor.connected == [0] and early.launched == ["gw0", "gw1"]


def test_early_workers_start_the_head_start_at_once() -> None:
    executor = FakeExecutor(cpus=2)
    head_start = HeadStart(
        nodeids=("t.py::a", "t.py::b", "t.py::c"),
        batches=[[[0], [2]], [[1]]],
        ask_at=[[0, 0], [1]],
    )
    asked: list[tuple[int, int]] = []

    def guesses(count: int, cpus: int) -> HeadStart:
        asked.append((count, cpus))
        return head_start

    early = start_early(
        executor,
        _options(address="ray://x"),
        _setup(),
        starting=lambda init: None,
        guesses=guesses,
    )
    assert asked == [(2, 2)]
    assert all(init["nodeids"] == list(head_start.nodeids) for init in executor.launched)
    assert all(init["guessed"] == 3 for init in executor.launched)
    assert executor.sent == {
        "gw0": [run_message([0], 0), run_message([2], 0)],
        "gw1": [run_message([1], 1)],
    }
    assert executor.dispatched == 1 and early.started_at is not None
    assert early.guessing == ("gw0", "gw1")


def test_a_failed_early_start_stops_the_executor() -> None:
    executor = FakeExecutor(fail=True)
    with pytest.raises(RuntimeError, match="no room"):
        start_early(
            executor,
            _options(address="ray://x"),
            _setup(),
            starting=lambda init: None,
            guesses=lambda count, cpus: None,
        )
    assert executor.shutdowns == [(False, True)]


def test_the_controller_keeps_the_guesses_it_collected_too() -> None:
    head_start = HeadStart(
        nodeids=("t.py::b", "t.py::gone", "t.py::a"), batches=[[[0, 1]], [[2]]], ask_at=[[0], [0]]
    )
    early = EarlyStart(
        FakeExecutor(), ClusterInfo("x", 2), ["gw0", "gw1"], head_start, ("gw0", "gw1")
    )
    terminal = FakeTerminal()
    given = early.kept(make_plan(["t.py::a", "t.py::b"], {}), terminal)  # type: ignore[arg-type]
    assert given is not None and given.count == 3
    plan_index = {
        nodeid: i for i, nodeid in enumerate(make_plan(["t.py::a", "t.py::b"], {}).nodeids)
    }
    assert dict(given.by_worker) == {
        "gw0": [(0, plan_index["t.py::b"])],
        "gw1": [(2, plan_index["t.py::a"])],
    }
    assert terminal.lines == [
        "orchestrator: head start: 3 tests of the last run's collection started while "
        "collecting; 1 not collected this time"
    ]


def test_worker_setup_names_workers_and_builds_their_init() -> None:
    setup = WorkerSetup(
        args=("-x",), cwd="/p", testrunuid="u", basetemp=None, recycle=RecyclePolicy(max_tests=10)
    )
    init = setup.init(worker_name(4), 6, Resources(cpus=2.0, gpus=1.0))
    assert init["worker"] == "gw4" and init["workercount"] == 6 and init["args"] == ["-x"]
    assert init["basetemp"] is None and init["recycle"] == {"tests": 10}
    assert init["resources"] == {"CPU": 2.0, "GPU": 1.0} and "env" in init
    assert "resources" not in setup.init("gw0", 1, DEFAULT)
    guessed = with_guesses(init, ["t.py::a"])
    assert guessed["nodeids"] == ["t.py::a"] and guessed["guessed"] == 1 and "nodeids" not in init


# -- placing tests -----------------------------------------------------------------------
def test_ordinary_tests_need_no_shapes() -> None:
    placement = place(["a", "b"], [DEFAULT, DEFAULT], [1.0, 1.0], [{"CPU": 4.0}], 2)
    assert placement.needs == [DEFAULT] and placement.shapes == [] and not placement.unplaced
    assert not placement.shaped and placement.classes([DEFAULT]) == []


def test_tests_no_node_can_run_are_unplaced_with_the_reason() -> None:
    nodes = [{"CPU": 4.0}]
    placement = place(["a", "gpu"], [DEFAULT, GPU], [1.0, 1.0], nodes, 2)
    assert placement.needs == [DEFAULT]
    assert list(placement.unplaced) == ["gpu"]
    assert placement.unplaced["gpu"].startswith("needs gpus=1")
    error = strict_error(placement.unplaced)
    assert "1 test(s) need resources" in str(error) and "  gpu: needs" in str(error)


def test_shaped_workers_and_their_classes() -> None:
    nodes = [{"CPU": 4.0, "GPU": 1.0}]
    placement = place(["a", "gpu"], [DEFAULT, GPU], [1.0, 5.0], nodes, 2)
    assert placement.shaped and not placement.unplaced
    assert set(placement.needs) == {DEFAULT, GPU}
    assert placement.classes([GPU, DEFAULT]) == [placement.needs.index(GPU), 0]


def test_a_local_instance_has_room_for_one_worker_of_each_need() -> None:
    nodes = [{"CPU": 1.0, "GPU": 1.0}]
    make_room(nodes, [DEFAULT, Resources(cpus=2.0), DEFAULT], workers=2)
    assert nodes == [{"CPU": 3.0, "GPU": 1.0}]


# -- replaying results -------------------------------------------------------------------
class FakeHook:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        def call(**kwargs: Any) -> None:
            self.calls.append((name, kwargs.get("report") or kwargs.get("nodeid")))

        return call


def _replay(*nodeids: str) -> tuple[Replay, FakeHook, SimpleNamespace]:
    hook = FakeHook()
    config = SimpleNamespace(hook=hook, stash={})
    pipelines = SimpleNamespace(flaky=set(), earlier={}, worker_of={})
    replay = Replay(config, pipelines, FakeTerminal(), nodes=None)  # type: ignore[arg-type]
    replay.items = [
        SimpleNamespace(nodeid=n, location=(n.split("::")[0], 1, n), keywords={"x": 1})
        for n in nodeids
    ]  # type: ignore[assignment]
    return replay, hook, pipelines


def _plain_pass() -> list[dict[str, Any]]:
    return pass_reports(
        {
            "t": "pass",
            "i": 0,
            "p": [[0.5, 1.0, 1.5], [1.0, 1.5, 2.5], [0.5, 2.5, 3.0]],
            "l": ["t.py", 4, "t"],
        }
    )


def test_a_plain_pass_is_replayed_as_three_reports_of_one_test() -> None:
    replay, hook, pipelines = _replay("t.py::t")
    replay.test_final(0, Attempt("gw1", tuple(_plain_pass())), [])
    kinds = [name for name, _ in hook.calls]
    assert kinds == [
        "pytest_runtest_logstart",
        *["pytest_runtest_logreport"] * 3,
        "pytest_runtest_logfinish",
    ]
    reports = [r for name, r in hook.calls if name == "pytest_runtest_logreport"]
    assert [(r.when, r.outcome, r.location) for r in reports] == [
        (when, "passed", ("t.py", 4, "t")) for when in ("setup", "call", "teardown")
    ]
    assert replay.durations == {"t.py::t": 2.0} and replay.finished == 1
    assert pipelines.worker_of == {"t.py::t": "gw1"} and not replay.failed


def test_a_test_whose_worker_died_gets_an_error_naming_it() -> None:
    replay, hook, _ = _replay("t.py::t")
    setup = _plain_pass()[0]
    replay.test_final(0, Attempt("gw0", (setup,), lost="worker gw0 crashed", cause="crash"), [])
    reports = [r for name, r in hook.calls if name == "pytest_runtest_logreport"]
    assert [(r.when, r.outcome) for r in reports] == [("setup", "passed"), ("teardown", "failed")]
    assert reports[1].longrepr == "worker gw0 crashed"
    assert replay.lost == replay.failed == {0}


def test_a_test_that_passed_on_retry_is_flaky_and_keeps_its_earlier_attempt() -> None:
    replay, _, pipelines = _replay("t.py::t")
    failed = Attempt("gw0", (), lost="worker gw0 crashed", cause="crash")
    replay.test_final(0, Attempt("gw1", tuple(_plain_pass())), [failed])
    assert replay.attempts == {0: 2} and pipelines.flaky == {"t.py::t"}
    assert [a["worker"] for a in pipelines.earlier["t.py::t"]] == ["gw0"]


def test_unplaced_tests_are_reported_skipped_and_left_out() -> None:
    replay, hook, _ = _replay("t.py::a", "t.py::gpu")
    replay.skip_unplaced({"t.py::gpu": "needs gpus=1: no node has a GPU"})
    assert [item.nodeid for item in replay.items] == ["t.py::a"]
    reports = [r for name, r in hook.calls if name == "pytest_runtest_logreport"]
    assert [(r.nodeid, r.when, r.outcome) for r in reports] == [
        ("t.py::gpu", "setup", "skipped"),
        ("t.py::gpu", "teardown", "passed"),
    ]
    assert reports[0].longrepr[2] == "Skipped: needs gpus=1: no node has a GPU"


# -- limits and the store's warnings -----------------------------------------------------
def _item(**markers: Any) -> Any:
    def closest(name: str) -> Any:
        if name not in markers:
            return None
        return SimpleNamespace(args=(markers[name],), kwargs={})

    return SimpleNamespace(get_closest_marker=closest)


def test_retries_and_time_limits_come_from_markers_and_options() -> None:
    options = _options(retries=1, timeout=30.0)
    policy = retry_policy([_item(), _item(retries=3)], options)
    assert policy.retries == 1 and policy.per_test == {1: 3}
    plugins = SimpleNamespace(has_plugin=lambda name: name == "timeout")
    config = SimpleNamespace(pluginmanager=plugins)
    assert time_limit(config, _item(timeout=2), options) == 2 + TIMEOUT_GRACE  # type: ignore[arg-type]
    assert time_limit(config, _item(), options) == 30.0  # type: ignore[arg-type]


def test_store_warnings_are_shown_as_lines() -> None:
    terminal = FakeTerminal()
    with warnings_shown(terminal):  # type: ignore[arg-type]
        warnings.warn("a record written by a newer version was skipped", stacklevel=1)
    assert terminal.lines == [
        "orchestrator: warning: a record written by a newer version was skipped"
    ]


def _plain_reports(stops: Sequence[float] = (1.1, 1.3, 1.2)) -> list[pytest.TestReport]:
    return [
        pytest.TestReport(
            nodeid="t.py::t",
            location=("t.py", 1, "t"),
            keywords={},
            outcome="passed",
            longrepr=None,
            when=when,  # type: ignore[arg-type]
            duration=duration,
            start=1.0 + duration,
            stop=stop,
        )
        for (when, duration), stop in zip(
            (("setup", 0.1), ("call", 0.2), ("teardown", 0.3)), stops, strict=True
        )
    ]


def test_the_pipelines_record_a_plain_pass_as_its_three_reports_would() -> None:
    by_hook = Pipelines(SimpleNamespace(), SimpleNamespace(), None, {})  # type: ignore[arg-type]
    direct = Pipelines(SimpleNamespace(), SimpleNamespace(), None, {})  # type: ignore[arg-type]
    for report in _plain_reports():
        by_hook.pytest_runtest_logreport(report)
    setup, call, teardown = _plain_reports()
    direct.plain_pass(call.nodeid, setup, call, teardown)
    assert (direct.seconds, direct.outcome) == (by_hook.seconds, by_hook.outcome)
    assert direct.seconds["t.py::t"] == 0.1 + 0.2 + 0.3


@pytest.mark.parametrize(
    ("failed", "outcome"), [("setup", "error"), ("call", "failed"), ("teardown", "error")]
)
def test_the_pipelines_keep_a_failures_outcome_and_its_first_message(
    failed: str, outcome: str
) -> None:
    pipelines = Pipelines(SimpleNamespace(), SimpleNamespace(), None, {})  # type: ignore[arg-type]
    for when in ("setup", "call", "teardown"):
        if when == "call" and failed == "setup":
            continue  # pytest runs no call after a failed setup
        text = f"E   RuntimeError: {when} went wrong" if when == failed else ""
        report = pytest.TestReport(
            "t.py::t", ("t.py", 0, "t"), {}, "failed" if text else "passed", text or None, when
        )
        pipelines.pytest_runtest_logreport(report)
    assert pipelines.outcome["t.py::t"] == outcome
    assert pipelines.message_of("t.py::t") == f"RuntimeError: {failed} went wrong"


@pytest.mark.parametrize("stops", [(1.1, 1.3, 1.2), (1.1, 1.2, 1.3), (1.3, 1.2, 1.1)])
def test_the_reports_record_a_plain_pass_as_its_three_reports_would(
    stops: tuple[float, float, float],
) -> None:
    def plugin() -> ReportsPlugin:
        none: Any = SimpleNamespace()
        return ReportsPlugin(none, none, json_path=None, html_path=None, store_path=Path())

    by_hook, direct = plugin(), plugin()
    for report in _plain_reports(stops):
        by_hook.pytest_runtest_logreport(report)
    setup, call, teardown = _plain_reports(stops)
    direct.plain_pass(call.nodeid, setup, call, teardown)
    assert (direct.spans, direct.texts, direct.xdist_worker) == (
        by_hook.spans,
        by_hook.texts,
        by_hook.xdist_worker,
    )
    assert own_plain_pass_listeners(SimpleNamespace()) == []  # type: ignore[arg-type]
