"""The controller benchmark's replaying executor answers as a worker would (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.controller import Recording, ReplayExecutor, _Template, write_suite
from orchestrator.run.controller import Controller
from orchestrator.run.protocol import decode, decode_all
from orchestrator.run.run_config import RunConfig
from orchestrator.scheduling.planner import make_plan
from tests.test_controller_events import Recorder

NODEIDS = [f"t.py::test[{n}]" for n in range(6)]


def _pass(index: int, start: float) -> dict[str, object]:
    timings = [[0.001, start, start + 0.001]] * 3
    return {"t": "pass", "i": index, "p": timings, "l": ["t.py", 3, f"test[{index}]"]}


def _recording(tmp_path: Path) -> Recording:
    rows = []
    for n, nodeid in enumerate(NODEIDS):
        worker = f"gw{n % 2}"
        if n == 4:  # a failure: its reports, then its end
            report = {"when": "call", "outcome": "failed", "longrepr": "boom", "nodeid": nodeid}
            events = [{"t": "report", "i": n, "r": report}, {"t": "end", "i": n}]
        else:
            events = [_pass(n, 100.0 + n)]
        rows += [{"n": nodeid, "w": worker, "e": event} for event in events]
    rows.append({"n": None, "w": "gw0", "e": {"t": "bye", "code": 0, "output": {}}})
    path = tmp_path / "recording.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return Recording.load(path)


def test_a_template_puts_the_runs_number_for_the_recorded_one() -> None:
    event = _pass(7, 1.5)
    line = _Template(event).line(42)
    assert decode(line) == {**event, "i": 42}
    assert _Template({"t": "need"}).line(3) == b'{"t":"need"}\n'


def test_a_recording_keeps_each_tests_events_and_a_workers_rate(tmp_path: Path) -> None:
    recording = _recording(tmp_path)
    assert list(recording.by_test) == NODEIDS
    assert [e["t"] for e in recording.by_test[NODEIDS[4]]] == ["report", "end"]
    assert recording.bye["t"] == "bye" and recording.worker_rate > 0


def test_a_replayed_worker_asks_ahead_and_for_more_as_a_real_one(tmp_path: Path) -> None:
    executor = ReplayExecutor(_recording(tmp_path), cpus=2)
    executor.launch([{"t": "init", "worker": "gw0", "args": []}], {}, ".")
    executor.send("gw0", [{"t": "tests", "nodeids": NODEIDS}])
    executor.send("gw0", [{"t": "run", "i": [2, 3, 4], "a": 1}])
    [(worker, lines)] = executor.poll(0.0)
    kinds = [(e["t"], e.get("i"), e.get("ahead")) for e in decode_all(lines)]
    assert worker == "gw0" and kinds == [
        ("ready", None, None),
        ("need", None, None),
        ("pass", 2, None),
        ("need", None, 1),  # one test left after the one starting
        ("pass", 3, None),
        ("report", 4, None),
        ("end", 4, None),
    ]
    executor.send("gw0", [{"t": "later"}, {"t": "finish"}])
    assert [decode(line)["t"] for line in executor.poll(0.0)[0][1]] == ["need", "bye", "exit"]


def test_the_controller_ends_every_test_of_a_replayed_run(tmp_path: Path) -> None:
    executor = ReplayExecutor(_recording(tmp_path), cpus=2)
    recorder = Recorder()
    plan = make_plan(NODEIDS, {})
    Controller(plan, executor, recorder, RunConfig(workers=2)).run()
    finals = {index: attempt for index, attempt, _ in recorder.finals}
    assert sorted(finals) == list(range(len(NODEIDS))) and executor.tests_run == len(NODEIDS)
    assert [index for index, attempt in finals.items() if attempt.failed] == [4]
    assert all(finals[i].plain for i in finals if i != 4)


def test_the_suite_has_the_tests_asked_for(tmp_path: Path) -> None:
    root = write_suite(tmp_path / "suite", 1_203)
    modules = sorted(root.glob("test_tiny_*.py"))
    assert len(modules) == 3 and "range(FIRST, FIRST + 203)" in modules[-1].read_text()
