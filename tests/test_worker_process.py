"""The worker process and its protocol, driven directly (no Ray)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.run.protocol import Message, decode
from orchestrator.worker.process import WorkerProcess

SUITE = """
import os, pytest

@pytest.fixture(scope="module")
def resource():
    with open(os.environ["SETUP_LOG"], "a") as fh:
        fh.write("setup\\n")
    yield
    with open(os.environ["SETUP_LOG"], "a") as fh:
        fh.write("teardown\\n")

def test_one(resource): pass
def test_two(resource): assert False
def test_exit(): os._exit(3)
def test_segfault():
    import ctypes
    ctypes.string_at(0)
"""


@pytest.fixture
def suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "test_suite.py").write_text(SUITE)
    monkeypatch.setenv("SETUP_LOG", str(tmp_path / "setup.log"))
    return tmp_path


def _plain_report(index: int, when: str) -> Message:
    return {"t": "report", "i": index, "r": {"when": when, "outcome": "passed"}, "plain": True}


def _events(proc: WorkerProcess, deadline: float = 60.0) -> Iterator[Message]:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for raw in proc.events(0.2):
            event = raw if isinstance(raw, dict) else decode(raw)
            # Plainly passed phases travel as timings only: one phase ("ok"), or all three.
            if event["t"] == "ok":
                yield _plain_report(event["i"], event["w"])
                continue
            if event["t"] == "pass":
                assert len(event["p"]) == 3 and event["l"]
                for when in ("setup", "call", "teardown"):
                    yield _plain_report(event["i"], when)
                continue
            yield event
            if event["t"] == "exit":
                return
    raise AssertionError("worker did not finish in time")


def _drive(
    suite: Path, nodeids: list[str], answer: Callable[[int], Message], args: tuple[str, ...] = ()
) -> list[Message]:
    # As the controller does it: the worker starts (and collects) before it learns its tests.
    init = {"t": "init", "worker": "gw7", "args": ["-p", "no:cacheprovider", *args]}
    proc = WorkerProcess(init, cwd=str(suite), env=dict(os.environ))
    proc.send([{"t": "tests", "nodeids": nodeids}])
    seen: list[Message] = []
    needs = 0
    try:
        for event in _events(proc):
            seen.append(event)
            if event["t"] == "need":
                proc.send([answer(needs)])
                needs += 1
    finally:
        proc.close()
    return seen


def _run(*indices: int) -> Message:
    return {"t": "run", "i": list(indices)}


FINISH: Message = {"t": "finish"}


def _answers(*batches: Message) -> Callable[[int], Message]:
    """The n-th request for work gets the n-th of ``batches``, then ``finish``."""
    return lambda n: batches[n] if n < len(batches) else FINISH


def test_runs_batches_and_keeps_module_fixtures(suite: Path) -> None:
    nodeids = ["test_suite.py::test_one", "test_suite.py::test_two"]
    script = [_run(0), _run(1), FINISH]
    events = _drive(suite, nodeids, lambda n: script[n])
    kinds = [e["t"] for e in events]
    assert kinds[0] == "ready" and events[0]["nmissing"] == 0
    assert kinds[-2:] == ["bye", "exit"] and events[-1]["code"] == 0
    reports = [(e["i"], e["r"]["when"], e["r"]["outcome"]) for e in events if e["t"] == "report"]
    # Passed phases travel as timings only; a failure carries the whole report.
    assert all(
        e.get("plain") for e in events if e["t"] == "report" and e["r"]["outcome"] == "passed"
    )
    assert not any(
        e.get("plain") for e in events if e["t"] == "report" and e["r"]["outcome"] == "failed"
    )
    assert reports == [
        (0, "setup", "passed"),
        (0, "call", "passed"),
        (0, "teardown", "passed"),
        (1, "setup", "passed"),
        (1, "call", "failed"),
        (1, "teardown", "passed"),
    ]
    # Two batches, one module fixture: the worker waited for work before tearing down.
    assert (suite / "setup.log").read_text().split() == ["setup", "teardown"]


def test_asks_ahead_where_the_controller_says(suite: Path) -> None:
    nodeids = ["test_suite.py::test_one", "test_suite.py::test_two"]
    later: Message = {"t": "later"}
    # An early request answered with tests, then one answered "later": the worker asks
    # again, plainly, once it has run what it holds.
    script = [{**_run(0), "a": 0}, {**_run(1), "a": 0}, later, FINISH]
    events = _drive(suite, nodeids, lambda n: script[n])
    asks = [(e.get("ahead", 0), i) for i, e in enumerate(events) if e["t"] == "need"]
    assert [ahead for ahead, _ in asks] == [0, 1, 1, 0]
    # Each early request leaves as its test starts, before that test's first report.
    first_report = {e["i"]: n for n, e in reversed(list(enumerate(events))) if e["t"] == "report"}
    assert asks[1][1] < first_report[0] and asks[2][1] < first_report[1]
    assert asks[3][1] > max(first_report.values())
    assert [
        e["r"]["outcome"] for e in events if e["t"] == "report" and e["r"]["when"] == "call"
    ] == [
        "passed",
        "failed",
    ]
    # The early answer arrived in time: the module fixture was set up once.
    assert (suite / "setup.log").read_text().split() == ["setup", "teardown"]


def test_reports_how_a_crashed_worker_ended(suite: Path) -> None:
    nodeids = ["test_suite.py::test_one", "test_suite.py::test_exit"]
    events = _drive(suite, nodeids, lambda n: _run(0, 1))
    assert "bye" not in [e["t"] for e in events]
    assert events[-1]["t"] == "exit" and events[-1]["how"] == "exit code 3"
    finished = [e["i"] for e in events if e["t"] == "report" and e["r"]["when"] == "teardown"]
    assert finished == [0]


LEAVES_A_PROCESS = """
import os, subprocess, sys, time

def _exit_leaving(pid):
    with open(os.environ["LEFT_PID"], "w") as fh:
        fh.write(str(pid))
    os._exit(3)

def test_forks():
    pid = os.fork()
    if pid == 0:  # multiprocessing's way: a copy of the worker that outlives it
        os.setsid()
        time.sleep(120)
        os._exit(0)
    _exit_leaving(pid)

def test_hands_its_pipes_on():
    fds = [int(fd) for fd in os.environ["ORCHESTRATOR_WORKER_FDS"].split(",")]
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    child = subprocess.Popen(sleeper, pass_fds=fds[1:], start_new_session=True)
    _exit_leaving(child.pid)
"""


@pytest.mark.parametrize("test", ["test_forks", "test_hands_its_pipes_on"])
def test_a_crash_is_reported_while_a_process_it_started_lives_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test: str
) -> None:
    # Its end is not seen by its event pipe closing: the process left behind holds that
    # open for two minutes, longer than _events waits.
    (tmp_path / "test_left.py").write_text(LEAVES_A_PROCESS)
    left = tmp_path / "left.pid"
    monkeypatch.setenv("LEFT_PID", str(left))
    try:
        events = _drive(tmp_path, [f"test_left.py::{test}"], lambda n: _run(0))
    finally:
        if left.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(left.read_text()), signal.SIGKILL)
    assert events[-1]["t"] == "exit" and events[-1]["how"] == "exit code 3"


def test_segfault_is_reported_with_its_signal(suite: Path) -> None:
    events = _drive(suite, ["test_suite.py::test_segfault"], lambda n: _run(0))
    assert events[-1]["how"] == "signal 11 (SIGSEGV)"
    assert "Segmentation fault" in events[-1]["log"]


def test_tests_of_a_missing_file_are_named_when_ready(suite: Path) -> None:
    nodeids = ["test_suite.py::test_one", "test_gone.py::test_x[1]"]
    events = _drive(suite, nodeids, lambda n: FINISH)
    ready = events[0]
    assert ready["t"] == "ready"
    assert ready["missing"] == ["test_gone.py::test_x[1]"] and ready["nmissing"] == 1


def test_tests_missing_from_a_file_are_named_when_it_is_collected(suite: Path) -> None:
    # A file is collected when the worker is first given one of its tests.
    nodeids = ["test_suite.py::test_one", "test_suite.py::test_gone[1]"]
    events = _drive(suite, nodeids, _answers(_run(0, 1)))
    assert events[0]["t"] == "ready" and events[0]["nmissing"] == 0
    missing = [e for e in events if e["t"] == "missing"]
    assert len(missing) == 1
    assert missing[0]["missing"] == ["test_suite.py::test_gone[1]"]
    assert missing[0]["nmissing"] == 1 and missing[0]["errors"] == []
    # Nothing ran: the test that is there waits for the controller to end the run.
    assert not [e for e in events if e["t"] == "report"]
    assert events[-2]["t"] == "bye"


def test_a_file_that_fails_to_collect_late_is_named_with_its_error(tmp_path: Path) -> None:
    (tmp_path / "test_ok.py").write_text("def test_ok(): pass\n")
    # Imports in the controller, fails in a worker (which has ORCHESTRATOR_WORKER set).
    (tmp_path / "test_env.py").write_text(
        "import os\n"
        "if os.environ.get('ORCHESTRATOR_WORKER'):\n"
        "    raise ImportError('no such thing on the workers')\n"
        "def test_env(): pass\n"
    )
    nodeids = ["test_ok.py::test_ok", "test_env.py::test_env"]
    # Every file is imported before the first test: the worker says so when ready.
    ready = _drive(tmp_path, nodeids, _answers(_run(0), _run(1)))[0]
    assert ready["t"] == "ready" and ready["missing"] == ["test_env.py::test_env"]
    assert "test_env.py" in ready["errors"][0]
    assert "no such thing on the workers" in ready["errors"][0]
    # Importing only when given a test of the file, it finds out then.
    events = _drive(tmp_path, nodeids, _answers(_run(0), _run(1)), ("--ray-collect", "lazy"))
    assert events[0]["t"] == "ready" and events[0]["nmissing"] == 0
    finished = [e["i"] for e in events if e["t"] == "report" and e["r"]["when"] == "teardown"]
    assert finished == [0]
    (missing,) = [e for e in events if e["t"] == "missing"]
    assert missing["missing"] == ["test_env.py::test_env"]
    assert "test_env.py" in missing["errors"][0]
    assert "no such thing on the workers" in missing["errors"][0]


IMPORT_LOG_CONFTEST = """
import os, pytest

def pytest_collection_modifyitems(items):
    for item in items:
        if "slow" in item.name:
            item.add_marker(pytest.mark.skip(reason="slow, skipped by the conftest"))

@pytest.fixture(scope="package")
def package_resource():
    with open(os.environ["IMPORT_LOG"], "a") as fh:
        fh.write("package-setup\\n")
"""


def _logging_module(name: str) -> str:
    return (
        "import os\n"
        "with open(os.environ['IMPORT_LOG'], 'a') as fh:\n"
        f"    fh.write('import {name}\\n')\n"
        "def test_fast(package_resource): pass\n"
        "def test_slow(package_resource): pass\n"
    )


@pytest.fixture
def logged_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "conftest.py").write_text(IMPORT_LOG_CONFTEST)
    for name in ("a", "b", "c"):
        (pkg / f"test_{name}.py").write_text(_logging_module(name))
    monkeypatch.setenv("IMPORT_LOG", str(tmp_path / "import.log"))
    return tmp_path


def test_a_worker_imports_every_file_first_and_generates_tests_when_given(
    logged_package: Path,
) -> None:
    nodeids = [f"pkg/test_{name}.py::test_{speed}" for name in "ac" for speed in ("fast", "slow")]
    events = _drive(logged_package, nodeids, _answers(_run(0, 1), _run(2, 3)))
    log = (logged_package / "import.log").read_text().split("\n")
    # Every file imported in collection order before the first test, test_b.py included,
    # as serial pytest does.
    assert log == ["import a", "import b", "import c", "package-setup", ""]
    reports = [e for e in events if e["t"] == "report"]
    calls = [(e["i"], e["r"]["outcome"]) for e in reports if e["r"]["outcome"] != "passed"]
    # Their tests were generated later, through the conftest's collection hook.
    assert calls == [(1, "skipped"), (3, "skipped")]
    assert events[-1]["code"] == 0


def test_a_lazy_worker_collects_only_the_files_it_is_given(logged_package: Path) -> None:
    nodeids = [f"pkg/test_{name}.py::test_{speed}" for name in "ac" for speed in ("fast", "slow")]
    events = _drive(
        logged_package, nodeids, _answers(_run(0, 1), _run(2, 3)), ("--ray-collect", "lazy")
    )
    log = (logged_package / "import.log").read_text().split("\n")
    # test_b.py is never imported; each file is imported when its first test is given, and
    # the package fixture lives across the files collected one after the other.
    assert log == ["import a", "package-setup", "import c", ""]
    reports = [e for e in events if e["t"] == "report"]
    calls = [(e["i"], e["r"]["outcome"]) for e in reports if e["r"]["outcome"] != "passed"]
    # The conftest's collection hook marked the late-collected slow tests as well.
    assert calls == [(1, "skipped"), (3, "skipped")]
    assert events[-1]["code"] == 0


def test_collect_all_imports_every_file_first(logged_package: Path) -> None:
    nodeids = [f"pkg/test_{name}.py::test_{speed}" for name in "ac" for speed in ("fast", "slow")]
    events = _drive(
        logged_package, nodeids, _answers(_run(0, 1), _run(2, 3)), ("--ray-collect", "all")
    )
    log = (logged_package / "import.log").read_text().split("\n")
    assert log == ["import a", "import b", "import c", "package-setup", ""]
    assert events[-1]["code"] == 0


def test_a_test_named_in_the_arguments_is_collected_up_front(logged_package: Path) -> None:
    # pytest has to collect a file to find a test named inside it.
    args = ("pkg/test_c.py::test_fast", "pkg/test_b.py")
    events = _drive(logged_package, ["pkg/test_c.py::test_fast"], _answers(_run(0)), args)
    log = (logged_package / "import.log").read_text().split("\n")
    assert log[:2] == ["import c", "import b"]
    assert events[0]["nmissing"] == 0 and events[-1]["code"] == 0


def test_stop_skips_the_rest_of_a_batch(suite: Path) -> None:
    nodeids = ["test_suite.py::test_one", "test_suite.py::test_two"]
    init = {"t": "init", "worker": "gw0", "args": ["-p", "no:cacheprovider"], "nodeids": nodeids}
    proc = WorkerProcess(init, cwd=str(suite), env=dict(os.environ))
    try:
        events = []
        for event in _events(proc):
            events.append(event)
            if event["t"] == "need":
                proc.send([_run(0, 1), {"t": "stop"}] if len(events) < 3 else [FINISH])
    finally:
        proc.close()
    ran = {e["i"] for e in events if e["t"] == "report"}
    assert ran == {0}
    assert events[-2]["t"] == "bye"


def test_tests_arrive_after_the_start_with_what_goes_into_workerinput(tmp_path: Path) -> None:
    (tmp_path / "test_input.py").write_text(
        "def test_reads(request):\n"
        "    assert request.config.workerinput['orchestrator_baselines'] == {'a': 1}\n"
        "    assert request.config.workerinput['workerid'] == 'gw3'\n"
    )
    init = {"t": "init", "worker": "gw3", "args": ["-p", "no:cacheprovider"]}
    proc = WorkerProcess(init, cwd=str(tmp_path), env=dict(os.environ))
    tests = {
        "t": "tests",
        "nodeids": ["test_input.py::test_reads"],
        "workerinput": {"orchestrator_baselines": {"a": 1}},
    }
    proc.send([tests])
    events = []
    try:
        for event in _events(proc):
            events.append(event)
            if event["t"] == "need":
                proc.send([_run(0)] if sum(e["t"] == "need" for e in events) == 1 else [FINISH])
    finally:
        proc.close()
    assert events[0] == {"t": "ready", "missing": [], "nmissing": 0}
    outcomes = [(e["r"]["when"], e["r"]["outcome"]) for e in events if e["t"] == "report"]
    assert ("call", "passed") in outcomes and len(outcomes) == 3


def test_a_worker_told_to_finish_before_its_tests_ends_cleanly(suite: Path) -> None:
    init = {"t": "init", "worker": "gw1", "args": ["-p", "no:cacheprovider"]}
    proc = WorkerProcess(init, cwd=str(suite), env=dict(os.environ))
    proc.send([FINISH])
    try:
        events = list(_events(proc))
    finally:
        proc.close()
    assert [e["t"] for e in events] == ["ready", "bye", "exit"]
    assert events[-1]["code"] == 0


ADOPTING_SUITE = """
import os, sys
from pathlib import Path

def test_runs_as_if_started_for_this_run():
    assert Path.cwd() == Path(os.environ["EXPECTED_CWD"])
    assert os.environ["ORCHESTRATOR_WORKER"] == "gw7"
    assert "SPARE_ONLY" not in os.environ
    import helper_new  # from the run's PYTHONPATH
    assert helper_new.VALUE == 42
    try:
        import helper_old  # from the spare's PYTHONPATH: gone
    except ImportError:
        pass
    else:
        raise AssertionError("the spare's PYTHONPATH is still on sys.path")
"""


def _spare_dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    suite, old, new = tmp_path / "suite", tmp_path / "old", tmp_path / "new"
    for d in (suite, old, new):
        d.mkdir()
    (suite / "test_adopt.py").write_text(ADOPTING_SUITE)
    (old / "helper_old.py").write_text("VALUE = 1\n")
    (new / "helper_new.py").write_text("VALUE = 42\n")
    return suite, old, new


def test_a_spare_process_adopts_the_runs_directory_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.worker.process import Spare

    suite, old, new = _spare_dirs(tmp_path)
    # Started elsewhere, before the run, with another environment.
    monkeypatch.chdir(old)
    monkeypatch.setenv("PYTHONPATH", str(old))
    monkeypatch.setenv("SPARE_ONLY", "1")
    spare = Spare()
    monkeypatch.undo()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH="new", EXPECTED_CWD=str(suite))  # relative: to the run's directory
    (suite / "new").symlink_to(new)
    spare_pid = spare._started.proc.pid if spare._started else None
    init = {"t": "init", "worker": "gw7", "args": ["-p", "no:cacheprovider"]}
    proc = WorkerProcess(init, cwd=str(suite), env=env, spare=spare)
    try:
        assert proc._proc.pid == spare_pid  # the spare, not a new process
        proc.send(
            [{"t": "tests", "nodeids": ["test_adopt.py::test_runs_as_if_started_for_this_run"]}]
        )
        events = []
        script = [_run(0), FINISH]
        for event in _events(proc):
            events.append(event)
            if event["t"] == "need":
                proc.send([script.pop(0)])
    finally:
        proc.close()
    outcomes = [e["r"]["outcome"] for e in events if e["t"] == "report"]
    assert outcomes == ["passed", "passed", "passed"], events


def test_a_spare_started_with_other_interpreter_settings_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.worker.process import Spare

    suite, _, _ = _spare_dirs(tmp_path)
    monkeypatch.setenv("PYTHONHASHSEED", "1")
    spare = Spare()
    monkeypatch.undo()
    assert spare._started is not None
    spare_proc = spare._started.proc
    env = dict(os.environ, PYTHONHASHSEED="2")
    init = {"t": "init", "worker": "gw7", "args": ["-p", "no:cacheprovider"]}
    proc = WorkerProcess(init, cwd=str(suite), env=env, spare=spare)
    try:
        assert proc._proc.pid != spare_proc.pid
        assert spare_proc.poll() is not None  # closed, not left behind
    finally:
        proc.close()


def test_preload_leaves_the_plugin_to_pytest() -> None:
    """A ready worker imports what every session needs before its run is known, but not
    the plugin package: pytest rewrites the assertions of installed plugins and warns
    about one imported before it started."""
    code = (
        "import sys; from orchestrator.worker.session import PRELOADED, preload; preload(); "
        "print(all(name in sys.modules for name in PRELOADED), "
        "'_pytest.junitxml' in sys.modules, "
        "any(name.startswith('pytest_orchestrator') for name in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["True", "True", "False"]


def test_preload_covers_what_a_session_loads_from_the_package(tmp_path: Path) -> None:
    """Every module of this package that a worker's pytest session imports is already
    there when its run arrives (each one missed costs milliseconds of every start)."""
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    code = (
        "import sys, pytest; from orchestrator.worker.session import preload; preload(); "
        "before = set(sys.modules); "
        f"pytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider', {str(tmp_path)!r}]); "
        "print('LOADED', *sorted(m for m in set(sys.modules) - before "
        "if m.startswith('orchestrator.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = out.stdout.split("LOADED", 1)[1].split()
    assert loaded == []
