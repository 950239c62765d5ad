"""What runs inside a worker process: one long-lived pytest session that pulls tests.

The process walks the suite's directories and imports every test file, as serial pytest
does, checks it has a place for every test the controller asked for, then runs tests as
they arrive. A file's tests are generated when the worker is first given one of them, so
that the workers together generate each file's tests about once (``--ray-collect lazy``
defers the import too; ``--ray-collect all`` collects everything up front).

pytest tears fixtures down according to the *next* test; when a worker has no next test
yet it does not guess: it runs the test's setup and call, and only at teardown waits for
more work (:class:`LazyNextItem`). So
module- and session-scoped fixtures live as long as the work keeps coming. It asks for
more a little before it runs out (when the controller's ``a`` says), so that the answer
is usually there by then; the controller grants such requests only while no other
worker could be kept idle by it.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import threading
import time
import warnings
from collections import defaultdict, deque
from collections.abc import Generator, Mapping
from typing import Any

import pytest

from orchestrator.run.channel import FDS_ENV, Channel
from orchestrator.run.protocol import (
    LIVE_START,
    ByeMessage,
    Message,
    ReadyMessage,
    ReportMessage,
    end_line,
    extras_json,
    location_json,
    ok_line,
    pack,
    pass_line,
    timings_json,
    unpack,
)
from orchestrator.worker.gcpause import paused_gc
from orchestrator.worker.live_log import forward_live_logs
from orchestrator.worker.recycle import RecyclePolicy, resident_bytes

#: The attributes of a TestReport that a plain passed phase has, and nothing else.
PLAIN_FIELDS = frozenset(
    (
        "nodeid",
        "_id",  # pytest 9 keeps the node id here
        "location",
        "keywords",
        "outcome",
        "longrepr",
        "when",
        "user_properties",
        "sections",
        "duration",
        "start",
        "stop",
    )
)


class LazyNextItem:
    """Stands in for ``nextitem`` when the worker does not know its next test yet.

    pytest asks ``nextitem`` two things during teardown: whether it exists, and its
    ``listchain()``. The first question makes the worker ask the controller for work
    and wait; the answer is the real next item, or nothing when the run is over.
    """

    def __init__(self, worker: WorkerPlugin) -> None:
        self._worker = worker
        self._resolved = False
        self._item: pytest.Item | None = None

    def resolve(self) -> pytest.Item | None:
        if not self._resolved:
            # A worker due to be recycled has no next test: every fixture is torn down.
            recycling = self._worker.check_recycle()
            self._item = None if recycling else self._worker.wait_for_next()
            self._resolved = True
        return self._item

    def __bool__(self) -> bool:
        return self.resolve() is not None

    def listchain(self) -> list[Any]:
        item = self.resolve()
        return item.listchain() if item is not None else []

    def __getattr__(self, name: str) -> Any:
        item = self.resolve()
        if item is None:
            raise AttributeError(name)
        return getattr(item, name)


class WorkerPlugin:
    """The pytest plugin of a worker process."""

    def __init__(self, channel: Channel, init: Message) -> None:
        self.channel = channel
        self.init = init
        self.worker_id: str = init["worker"]
        #: The controller's tests, in its order; they come with the init message or,
        #: for a worker started while the controller was still collecting, after it.
        self.wanted: list[str] | None = init.get("nodeids")
        #: How many of ``wanted`` are a head start's guesses (see
        #: orchestrator.scheduling.head_start): one this worker cannot find is named
        #: (``gone``) and skipped, not an error. The controller's own tests follow them,
        #: with its ``more`` message.
        self.guessed: int = int(init.get("guessed", 0)) if self.wanted is not None else 0
        #: Guessed tests not found when their file was collected.
        self._gone: set[int] = set()
        self.session: pytest.Session | None = None
        self.items: list[pytest.Item | None] = []
        self.pending: deque[int] = deque()
        self.finishing = False
        self.config: pytest.Config | None = None
        self.lazy_next: LazyNextItem | None = None
        self.current = -1
        #: A request for work is out and not answered yet.
        self.asked = False
        #: Ask for more as a test starts with this many left after it (None: only when
        #: out of work); the controller sets it with each batch (see Scheduler.ask_at).
        self.ask_at: int | None = None
        self._keyword_cache: dict[str, dict[str, int]] = {}
        #: The current test's plain passed phases not sent yet: (when, timings as JSON,
        #: location as JSON for the setup phase).
        self._held: list[tuple[str, str, str | None]] = []
        #: Something of the current test was sent other than as one ``pass`` line: its
        #: end is sent when its protocol returns (plugins such as pytest-rerunfailures
        #: run a test's phases more than once, or not at all).
        self._sent: bool = False
        #: The current test went as one ``pass`` line, which says it ended.
        self._passed: bool = False
        #: Test files found while collecting and left for later (see pytest_make_collect_report).
        self._deferring = False
        #: Test files are imported while the session collects, their tests generated later.
        self._import_first = True
        self._deferred: dict[str, pytest.Module] = {}
        #: The wanted tests of each deferred file (their indices), by the file's node id.
        self._awaiting: dict[str, list[int]] = {}
        #: Why the last deferred file failed to collect, if it did.
        self._collect_errors: list[str] = []
        self.nmissing = 0
        #: When this worker hands its place to a fresh one (see orchestrator.worker.recycle).
        self.recycle = RecyclePolicy.from_message(init.get("recycle"))
        self.tests_run = 0
        #: Why this worker is being recycled, once it is.
        self.recycling: str | None = None

    # -- set-up ------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_cmdline_main(self, config: pytest.Config) -> None:
        """Before any plugin's pytest_configure, as on a pytest-xdist worker."""
        self.config = config
        # Plugins that write files or caches (junitxml, cacheprovider, stepwise, ...)
        # look for this attribute, as they do on pytest-xdist workers.
        config.workerinput = {  # type: ignore[attr-defined]
            "workerid": self.worker_id,
            "workercount": self.init.get("workercount", 1),
            "testrunuid": self.init.get("testrunuid", ""),
            "mainargv": list(self.init.get("args", [])),
        }
        # What the controller's plugins put into this worker's node in their
        # pytest_configure_node (pytest-cov, pytest-randomly, ...), as under pytest-xdist.
        config.workerinput.update(unpack(self.init.get("workerinput") or {}))  # type: ignore[attr-defined]
        # What plugins leave for their pytest_testnodedown on the controller.
        config.workeroutput = {}  # type: ignore[attr-defined]

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        # The controller decides when a run stops; a worker runs what it is given.
        if self.init.get("basetemp"):
            # On another node the run's directory does not exist yet: pytest makes only
            # the last level.
            os.makedirs(os.path.dirname(self.init["basetemp"]), exist_ok=True)
            config.option.basetemp = self.init["basetemp"]
        config.option.maxfail = 0
        config.option.usepdb = False
        if hasattr(config.option, "ray"):
            config.option.ray = False
        # A file named with a test inside it (``file.py::test``) must be collected for pytest
        # to find the test; duplicates kept on purpose would share one node id.
        mode = config.getoption("ray_collect", "import")
        self._deferring = (
            mode != "all"
            and not config.option.keepduplicates
            and not any("::" in str(arg) for arg in config.args)
        )
        self._import_first = mode == "import"

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Nobody reads a worker's terminal, and writing a character per test to its log
        # costs a third as much as running an empty test (the controller reports instead).
        # The reporter stays, without its hooks, for plugins that write to the terminal
        # themselves (config.get_terminal_writer(): pytest-timeout's stack dumps, ...).
        manager = session.config.pluginmanager
        reporter = manager.get_plugin("terminalreporter")
        if reporter is not None:
            manager.unregister(reporter)
            for name in dir(type(reporter)):
                if name.startswith("pytest_"):
                    setattr(reporter, name, None)
            manager.register(reporter, "terminalreporter")
        # With log_cli, the records go to the controller's terminal instead.
        forward_live_logs(session.config, self.channel)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> Generator[None, object, object]:
        if self.init.get("live"):  # with -s: what is printed from here on is shown
            sys.stdout.flush()
            sys.stderr.flush()
            os.write(1, LIVE_START + b"\n")
        with paused_gc():
            return (yield)

    @pytest.hookimpl(tryfirst=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> pytest.CollectReport | None:
        """While the session collects, leave the tests of test files for later: a file's
        tests are generated when this worker is first given one of them
        (:meth:`_collect_file`). With ``--ray-collect import`` (the default) the file is
        imported now, in collection order, as serial pytest imports it: what imports do
        (submodules set as attributes, registries, plugins, warnings filters) is in place
        before the first test, whichever files this worker will run."""
        if self._deferring and isinstance(collector, pytest.Module):
            if self._import_first and not _imported(collector):
                return None  # collected now, so that pytest reports why it did not import
            self._deferred[collector.nodeid] = collector
            return pytest.CollectReport(collector.nodeid, "passed", None, [])
        return None

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self._collect_errors.append(f"{report.nodeid}:\n{report.longreprtext}")

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._deferring = False
        wanted = self.wanted if self.wanted is not None else self._receive_tests()
        self.session = session
        by_id = _by_nodeid(session.items)
        missing = self._place(wanted, 0, by_id)
        del by_id
        # What collection built lives as long as the session: keep the cyclic garbage
        # collector from walking it again and again while the tests run.
        gc.freeze()
        self.nmissing = len(missing)
        ready: ReadyMessage = {"t": "ready", "missing": missing[:50], "nmissing": len(missing)}
        if missing and self._collect_errors:  # a test file that did not import here
            ready["errors"] = self._collect_errors[:3]
        self.channel.send(ready)
        if self._gone:
            self.channel.send({"t": "gone", "i": sorted(self._gone)})

    def _place(
        self, nodeids: list[str], start: int, by_id: Mapping[str, deque[pytest.Item]]
    ) -> list[str]:
        """Find the tests ``nodeids`` (numbered from ``start``) among those collected, or
        note which deferred file will have them; returns those nowhere to be found."""
        missing: list[str] = []
        for index, nodeid in enumerate(nodeids, start):
            candidates = by_id.get(nodeid)
            if candidates:
                self.items.append(candidates.popleft())
                continue
            self.items.append(None)
            file = nodeid.split("::", 1)[0]
            if file in self._deferred:
                self._awaiting.setdefault(file, []).append(index)
            elif index < self.guessed:
                self._gone.add(index)
            else:
                missing.append(nodeid)
        return missing

    def _more(self, message: Message) -> None:
        """The controller's tests, after a head start's guesses: numbered after them."""
        assert self.wanted is not None and self.config is not None and self.session is not None
        nodeids = list(message["nodeids"])
        start = len(self.wanted)
        self.wanted.extend(nodeids)
        self.config.workerinput.update(message.get("workerinput") or {})  # type: ignore[attr-defined]
        # What is collected so far (files collected for guesses included); the rest waits
        # for its file.
        missing = self._place(nodeids, start, _by_nodeid(self.session.items))
        if missing:
            self._stop_missing(missing)

    def _collected(self, index: int) -> pytest.Item | None:
        """The test at ``index``, collecting its file first if that was left for later.

        None when the file does not have it (or failed to collect): the controller is told,
        and this worker runs nothing more.
        """
        item = self.items[index]
        if item is None and self.nmissing == 0 and index not in self._gone:
            assert self.wanted is not None
            self._collect_file(self.wanted[index].split("::", 1)[0])
            item = self.items[index]
        return item

    def _collect_file(self, file: str) -> None:
        assert self.config is not None and self.wanted is not None
        module = self._deferred.pop(file)
        session = module.session
        self._collect_errors = []
        # Importing a file is not its first test's time: the controller's timeout clock
        # stops meanwhile.
        self.channel.send({"t": "collecting"})
        # Warnings of the import and of generating the tests were the controller's to
        # report (it collected every file); here they would count as the running test's.
        with paused_gc(), warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            found = list(session.genitems(module))
            self.config.hook.pytest_collection_modifyitems(
                session=session, config=self.config, items=found
            )
        self.channel.send({"t": "collected"})
        session.items.extend(found)
        gc.freeze()
        by_id = _by_nodeid(found)
        missing: list[str] = []
        gone: list[int] = []
        for index in self._awaiting.pop(file, []):
            candidates = by_id.get(self.wanted[index])
            if candidates:
                # A guessed test and the controller's copy of it are the same item (node
                # ids are unique where there are guesses); otherwise each takes its own.
                self.items[index] = candidates[0] if self.guessed else candidates.popleft()
            elif index < self.guessed:
                gone.append(index)
            else:
                missing.append(self.wanted[index])
        if gone:
            self._gone.update(gone)
            self.channel.send({"t": "gone", "i": gone})
        if missing:
            self._stop_missing(missing)

    def _stop_missing(self, missing: list[str]) -> None:
        """Tests the controller collected that this worker cannot find: it runs nothing
        more, and the controller stops the run naming them."""
        self.nmissing = len(missing)
        self.finishing = True
        self.pending.clear()
        self.channel.send(
            {
                "t": "missing",
                "missing": missing[:50],
                "nmissing": len(missing),
                "errors": self._collect_errors[:3],
            }
        )

    def _receive_tests(self) -> list[str]:
        """Wait for the controller's list of tests (it was collecting while we were)."""
        while self.wanted is None:
            message = self.channel.receive()
            if message["t"] == "tests":
                self.wanted = list(message["nodeids"])
                assert self.config is not None
                self.config.workerinput.update(message.get("workerinput") or {})  # type: ignore[attr-defined]
            elif self._handle(message) in ("finish", "stop"):
                self.wanted = []  # told to end before it was given any tests
        return self.wanted

    # -- the loop ------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool:
        if self.nmissing:
            return True  # the controller aborts the run: it named the missing tests
        while True:
            if not self.pending:
                self._request_work(until_wait=False)
                if not self.pending:
                    break
            index = self.pending.popleft()
            self.current = index
            self._absorb_waiting_commands()
            self._ask_ahead()
            item = self._collected(index)
            if index in self._gone:
                continue  # a guess that is not there: named when its file was collected
            if item is None or self.nmissing:
                break
            while self.pending:
                self._collected(self.pending[0])  # ends the pending work if it is missing
                if self.pending[0] not in self._gone:
                    break
                self.pending.popleft()
            # With a recycling limit the next test is decided when this one's call ends.
            known = bool(self.pending) and not self.recycle.enabled
            self.lazy_next = None if known else LazyNextItem(self)
            nextitem = self.items[self.pending[0]] if known else self.lazy_next
            self.tests_run += 1
            # The reports of earlier tests leave before this one starts: if it kills the
            # process, only its own are lost (and it is the one blamed).
            self.channel.flush()
            self._sent = self._passed = False
            item.ihook.pytest_runtest_protocol(item=item, nextitem=nextitem)
            if not self._passed:
                self._release_held()
                self.channel.send_raw(end_line(index), flush=False)
            if self.recycling is None and self.lazy_next is not None and self.recycle.enabled:
                self.lazy_next.resolve()  # a test whose reports never asked (skipped, ...)
            if self.recycling is not None:
                # Its fixtures are torn down; the tests it still held go to the others.
                self.channel.send({"t": "recycle", "why": self.recycling})
                self.pending.clear()
                break
        return True

    def check_recycle(self) -> bool:
        """Whether this worker is over its recycling limit now (see orchestrator.worker.recycle)."""
        if self.recycling is None and self.recycle.enabled and not self.finishing:
            self.recycling = self.recycle.reason(self.tests_run, resident_bytes)
        return self.recycling is not None

    def _absorb_waiting_commands(self) -> None:
        while self.channel.poll():
            self._handle(self.channel.receive())

    def _ask_ahead(self) -> None:
        """Ask for the next tests while the last few of these run, so that the answer's
        round trip does not leave this worker idle."""
        if self.ask_at is None or self.asked or self.finishing:
            return
        if len(self.pending) <= self.ask_at:
            self.channel.send({"t": "need", "ahead": 1})
            self.asked = True

    def _handle(self, message: Message) -> str:
        kind: str = message["t"]
        if kind == "run":
            self.asked = False
            self.ask_at = message.get("a")
            if not self.finishing:
                self.pending.extend(message["i"])
        elif kind == "later":  # nothing ahead: ask again when out of work
            self.asked = False
            self.ask_at = None
        elif kind in ("finish", "stop"):
            self.finishing = True
            self.pending.clear()
        elif kind == "more":
            self._more(message)
        elif kind != "wait":
            raise RuntimeError(f"worker got an unknown command: {message!r}")
        return kind

    def _request_work(self, *, until_wait: bool) -> None:
        """Ask for work (once) and block until it comes or the run is over.

        ``wait`` means: nothing now, but stay; with ``until_wait`` it ends the wait
        early, so that the current test can tear down while the controller decides.
        """
        self._absorb_waiting_commands()
        while not self.pending and not self.finishing:
            if not self.asked:  # never asked, or an early request was answered "later"
                self.channel.send({"t": "need"})
                self.asked = True
            if self._handle(self.channel.receive()) == "wait" and until_wait:
                return

    def wait_for_next(self) -> pytest.Item | None:
        self._request_work(until_wait=True)
        return self._collected(self.pending[0]) if self.pending else None

    # -- reporting ---------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        assert self.config is not None
        extras = self._plain_extras(report)
        if extras is not None:
            # Most reports: a pass with no output. The controller rebuilds them from its
            # own copy of the test; only the timings travel, and a test whose three
            # phases all passed plainly travels as one ``pass`` line.
            # Formatted by hand (see protocol.pass_line): json.dumps costs more than the
            # rest of this path. The setup phase brings the test's location along (the
            # controller would spend more on working it out again than on reading it).
            timings = timings_json(report.duration, report.start, report.stop, extras)
            held = self._held
            if self._sent:  # not the test's only reports: each phase on its own
                where = location_json(report.location) if report.when == "setup" else None
                self._held.append((report.when, timings, where))
                self._release_held()
            elif report.when == "setup":
                self._held = [("setup", timings, location_json(report.location))]
            elif report.when == "call" and len(held) == 1:
                held.append(("call", timings, None))
            elif report.when == "teardown" and len(held) == 2:
                self._held = []
                location = held[0][2] or "null"  # the setup's: always there
                line = pass_line(self.current, held[0][1], held[1][1], timings, location)
                self.channel.send_raw(line, flush=False)
                self._passed = True
            else:
                self._held.append((report.when, timings, None))
                self._release_held()
        else:
            self._release_held()
            self._sent = True
            data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
            message: ReportMessage = {"t": "report", "i": self.current, "r": data}
            if report.failed:
                message["text"] = report.longreprtext  # for --retry-only and rerun records
            self.channel.send(message)
        self._after(report)

    def _release_held(self) -> None:
        """Send the held phases one by one (not every phase of the test passed plainly)."""
        if self._held:
            self._sent = True
        for when, timings, location in self._held:
            self.channel.send_raw(ok_line(self.current, when, timings, location), flush=False)
        self._held = []

    def _after(self, report: pytest.TestReport) -> None:
        # Ask for the next test as soon as this one's outcome is known, so that the wait
        # for work is not counted in the teardown's duration.
        if self.lazy_next is not None and (
            report.when == "call" or (report.when == "setup" and not report.passed)
        ):
            self.lazy_next.resolve()

    def _plain_extras(self, report: pytest.TestReport) -> str | None:
        """For a passed phase with nothing but timings (no output, the keywords the test
        had when it was collected, and at most attributes plugins add with a plain value,
        as pytest-html's empty ``extras``): those attributes, as the end of the timings'
        JSON list ("" for none). None for any other report."""
        if not (report.passed and report.longrepr is None) or report.sections:
            return None
        if report.user_properties:
            return None
        item = self.items[self.current] if 0 <= self.current < len(self.items) else None
        if item is None or report.keywords != self._keywords(item):
            return None
        fields = vars(report)
        if PLAIN_FIELDS.issuperset(fields):
            return ""
        extra = {name: fields[name] for name in fields.keys() - PLAIN_FIELDS}
        if not all(_plain_value(value) for value in extra.values()):
            return None
        return extras_json(extra)

    def _keywords(self, item: pytest.Item) -> dict[str, int]:
        cached = self._keyword_cache.get(item.nodeid)
        if cached is None:
            cached = self._keyword_cache[item.nodeid] = {name: 1 for name in item.keywords}
        return cached

    def pytest_warning_recorded(
        self,
        warning_message: warnings.WarningMessage,
        when: str,
        nodeid: str,
        location: tuple[str, int, str] | None,
    ) -> None:
        if when != "runtest":
            # Configuring and collecting, the controller met the same warnings itself.
            return
        category = warning_message.category
        self.channel.send(
            {
                "t": "warning",
                "message": str(warning_message.message),
                "category": f"{category.__module__}.{category.__qualname__}",
                "filename": warning_message.filename,
                "lineno": warning_message.lineno,
                "when": when,
                "nodeid": nodeid,
                "location": list(location) if location else None,
            }
        )


def _imported(module: pytest.Module) -> bool:
    """Import a test file (pytest keeps the module on its collector); False when that
    failed, or the module skipped itself."""
    try:
        module.obj  # noqa: B018 - importing is the point
    except (Exception, pytest.skip.Exception, pytest.fail.Exception):
        return False
    return True


def _plain_value(value: object) -> bool:
    """A value that JSON carries unchanged: a scalar, or an empty list or dict."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    return isinstance(value, (list, dict)) and not value


def _by_nodeid(items: list[pytest.Item]) -> dict[str, deque[pytest.Item]]:
    """Collected tests by node id, in order (a node id can repeat)."""
    by_id: dict[str, deque[pytest.Item]] = defaultdict(deque)
    for item in items:
        by_id[item.nodeid].append(item)
    return by_id


def _exit_with_parent() -> None:
    """End this process if its owner dies, so a killed worker leaves nothing behind."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(70)

    threading.Thread(target=watch, name="orchestrator-parent-watch", daemon=True).start()


def _python_path(env: Mapping[str, str]) -> list[str]:
    return [os.path.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]


def adopt(cwd: str, env: Mapping[str, str]) -> None:
    """Take the run's directory and environment, as if started with them.

    A spare process (see :class:`orchestrator.process.Spare`) was started before its run
    was known, elsewhere and with another environment: ``sys.path`` starts with the
    directory it started in and the ``PYTHONPATH`` of then, which give way to the run's.
    """
    fds = os.environ.get(FDS_ENV)
    old = set(_python_path(os.environ))
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if fds is not None:
        os.environ[FDS_ENV] = fds
    rest = [p for p in sys.path[1:] if p not in old]
    sys.path[:] = [os.getcwd(), *_python_path(env), *rest]
    importlib.invalidate_caches()


#: What the modules of ``pytest_orchestrator`` that every session loads import from this
#: package. The plugin itself is left to pytest, which rewrites its assertions and would
#: warn about a module imported before.
PRELOADED = (
    "orchestrator.config",
    "orchestrator.reports.junit_kinds",
    "orchestrator.pipelines.kinds",
    "orchestrator.pipelines.metrics",
    "orchestrator.scheduling.planner",
    "orchestrator.reports.progress",
    "orchestrator.reports.run_report",
    "orchestrator.worker.recycle",
    "orchestrator.scheduling.resources",
    "orchestrator.scheduling.retry",
    "orchestrator.settings",
    "orchestrator.scheduling.sharding",
    "orchestrator.cluster.shipping",
    "orchestrator.options",
)


def preload() -> None:
    """Import the modules every worker's pytest session loads: pytest's own plugins and
    what ours needs. A spare process does it while it waits for a run (a tenth of a second
    off the run's start); they come from where ``orchestrator.worker`` itself came from, so
    a run's ``PYTHONPATH`` could not have made them differ."""
    # pytest's private list of its plugins (tests/test_pytest_private.py checks it). Read
    # here, not through pytest_orchestrator.pytest_private: importing the plugin package
    # before pytest starts keeps pytest from rewriting its assertions. Without the list,
    # pytest imports its plugins itself when the run starts.
    try:
        from _pytest.config import default_plugins
    except ImportError:
        plugins: tuple[str, ...] = ()
    else:
        plugins = default_plugins

    for name in [*(f"_pytest.{plugin}" for plugin in plugins), *PRELOADED]:
        try:
            importlib.import_module(name)
        except Exception:  # pytest reports it, if it matters, when it loads the plugin
            continue


def main() -> int:
    """Entry point of a worker process (``python -m orchestrator.worker``)."""
    _exit_with_parent()
    channel = Channel.from_env()
    preload()
    init = channel.receive()
    if init.get("t") != "init":
        raise SystemExit(f"worker expected an init message, got {init!r}")
    if init.get("adopt"):
        adopt(init["adopt"]["cwd"], init["adopt"]["env"])
    sys.path[:0] = [p for p in init.get("sys_path_prefix", []) if p not in sys.path]
    plugin = WorkerPlugin(channel, init)
    code = pytest.main(list(init["args"]), plugins=[plugin])
    channel.send(farewell(plugin.config, int(code)))
    return 0


def farewell(config: pytest.Config | None, code: int) -> ByeMessage:
    """The ``bye`` message: pytest's exit code, what plugins left in
    ``config.workeroutput`` for the controller, and what this worker ran on."""
    output = dict(getattr(config, "workeroutput", None) or {})
    output.setdefault("exitstatus", code)
    message: ByeMessage = {
        "t": "bye",
        "code": code,
        "info": {
            "platform": sys.platform,
            "version_info": list(sys.version_info),
            "executable": sys.executable,
            "cwd": os.getcwd(),
            "pid": os.getpid(),
        },
    }
    try:
        message["output"] = pack(output)
    except TypeError as exc:
        message["output"] = {"exitstatus": code}
        message["output_error"] = f"config.workeroutput{exc} cannot be sent to the controller"
    return message


if __name__ == "__main__":
    raise SystemExit(main())
