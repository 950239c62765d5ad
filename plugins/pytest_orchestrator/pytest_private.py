"""Every use of pytest's private internals by the plugin, each behind one small name.

pytest promises nothing about ``_pytest.*`` or a reporter's underscored attributes. Keeping
each use here, with a test per use against the installed pytest
(``tests/test_pytest_private.py``) and a pytest range capped below the next major version
(``pyproject.toml``), makes an upgrade that moves one fail in CI rather than in a user's
run. Where a feature can do without the internal, its function falls back: the feature
turns off and pytest's own behaviour stays. Where it cannot (:data:`runtestprotocol`), the
docstring says so.

One use lives elsewhere: a worker's ``preload`` (:mod:`orchestrator.worker.session`) reads
``_pytest.config.default_plugins`` before pytest starts, and importing this package then
would keep pytest from rewriting the plugin's assertions. Its test is with the others.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _pytest.runner import runtestprotocol

try:
    from pytest import TerminalReporter  # public from pytest 8.4
except ImportError:  # pragma: no cover - pytest 8.0 to 8.3 name it only here
    from _pytest.terminal import TerminalReporter

if TYPE_CHECKING:
    from _pytest._io import TerminalWriter
    from _pytest.junitxml import LogXML

# ``runtestprotocol`` (``_pytest.runner``): runs one item's setup, call and teardown in this
# process, its reports logged or not (``log``). ``--ray --pdb`` runs the first failed test
# again under the debugger with it. No fallback: pytest's public hook for it logs the
# reports again, which would count the test twice.


def junit_xml_key() -> pytest.StashKey[LogXML]:
    """The key of pytest's ``--junitxml`` writer in ``config.stash``
    (``_pytest.junitxml.xml_key``); where pytest has none, a key nothing stores under, so
    that the plugin finds no writer and pytest's report is written without its additions."""
    try:
        from _pytest.junitxml import xml_key as key
    except ImportError:
        return pytest.StashKey()
    return key


#: See :func:`junit_xml_key`.
xml_key = junit_xml_key()


def junit_xml(config: pytest.Config) -> LogXML | None:
    """pytest's ``--junitxml`` writer (``_pytest.junitxml.LogXML``); None when the run writes
    no JUnit report (or pytest keeps its writer elsewhere)."""
    return config.stash.get(xml_key, None)


def junit_report_path(config: pytest.Config) -> Path | None:
    """The file pytest's ``--junitxml`` writes (``LogXML.logfile``); None when there is none,
    or pytest's writer names it otherwise (then the report is left as pytest wrote it)."""
    logfile = getattr(junit_xml(config), "logfile", None)
    return Path(logfile) if isinstance(logfile, str) and logfile else None


def append_to_junit_case(
    config: pytest.Config, report: pytest.TestReport, elements: Iterable[ET.Element]
) -> bool:
    """Add ``elements`` to the ``<testcase>`` that pytest's ``--junitxml`` writes for
    ``report`` (``LogXML.node_reporter(report).append``); ``elements`` is not iterated when
    there is no such report. False, adding nothing, when the run writes no JUnit report or
    pytest's writer has no ``node_reporter`` (the earlier attempts go unrecorded there)."""
    node_reporter = getattr(junit_xml(config), "node_reporter", None)
    if node_reporter is None:
        return False
    reporter = node_reporter(report)
    for element in elements:
        reporter.append(element)
    return True


def tmp_path_factory(config: pytest.Config) -> pytest.TempPathFactory | None:
    """The session's ``tmp_path_factory`` (``config._tmp_path_factory``, which pytest's
    tmpdir plugin sets when it configures); None when that plugin is off (``-p no:tmpdir``)
    or pytest keeps it elsewhere: then each worker takes pytest's default base directory."""
    factory = getattr(config, "_tmp_path_factory", None)
    return factory if isinstance(factory, pytest.TempPathFactory) else None


@contextmanager
def writing_nowhere(reporter: TerminalReporter) -> Iterator[TerminalWriter | None]:
    """While the block runs, ``reporter`` writes its output into nothing; yields the
    terminal writer it had, for the caller to draw its own line with.

    Swaps the reporter's writer (``reporter._tw``) for a ``_pytest._io.TerminalWriter`` on a
    string buffer, and puts it back after the block. It also turns off the reporter's
    ``[ 40%]`` column (``reporter._show_progress_info``) and leaves it off: the caller's line
    replaces it, and pytest would print its final ``[100%]`` after the block. Where any of
    these is missing, yields None and changes nothing: pytest's own per-test output stays.
    """
    real = getattr(reporter, "_tw", None)
    writer_class = _terminal_writer_class()
    if real is None or writer_class is None or not hasattr(reporter, "_show_progress_info"):
        yield None
        return
    reporter._show_progress_info = False
    reporter._tw = writer_class(file=io.StringIO())
    try:
        yield real
    finally:
        reporter._tw = real


@contextmanager
def teardown_reports_indexed(reporter: TerminalReporter) -> Iterator[None]:
    """While the block runs, the reporter finds a test's teardown reports in an index.

    pytest's summary of failures looks up each failed test's teardown reports
    (``reporter._get_teardown_reports``) by scanning every report in ``stats[""]``, which
    holds the setup and teardown of every passed test: a time per failure that grows with
    the suite (seconds for 64 failures among 64,000 tests). The index, built on the first
    lookup from the same reports (``getreports("")``), answers the same lists, in the same
    order. Where the reporter has no such method, changes nothing."""
    original = getattr(reporter, "_get_teardown_reports", None)
    if original is None or not hasattr(reporter, "getreports"):
        yield
        return
    index: dict[Any, list[Any]] | None = None

    def lookup(node_id: Any) -> list[Any]:
        nonlocal index
        if index is None:
            index = {}
            for report in reporter.getreports(""):
                if report.when == "teardown":
                    index.setdefault(_report_id(report, node_id), []).append(report)
        return list(index.get(node_id, ()))

    reporter._get_teardown_reports = lookup  # type: ignore[method-assign]
    try:
        yield
    finally:
        del reporter._get_teardown_reports


def _report_id(report: Any, like: Any) -> Any:
    """The key pytest compares a report with: its ``id`` (a ``NodeId``, pytest 9) when the
    looked-up key is one, else its node id string (pytest 8)."""
    return report.nodeid if isinstance(like, str) else report.id


def report_node_id(report: pytest.TestReport) -> Any:
    """What a report's node id is made of, to build another report of the same test with:
    pytest 9 parses every report's node id into a ``NodeId`` (``report.id``), which a new
    report takes as it is; pytest 8 keeps the string."""
    node_id = getattr(report, "id", None)
    return report.nodeid if node_id is None else node_id


def item_node_id(item: pytest.Item) -> Any:
    """The node id pytest builds an item's reports with: its parsed ``NodeId``
    (``item.id``, pytest 9), else its node id string."""
    node_id = getattr(item, "id", None)
    parsed = _node_id_class is not None and type(node_id) is _node_id_class
    return node_id if parsed else item.nodeid


def _parsed_node_id_class() -> type | None:
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # pytest 8 keeps node ids as strings
        return None
    return NodeId


_node_id_class = _parsed_node_id_class()


def fast_hook_caller(hook: Any, without: object = None) -> Any:
    """A callable that calls a (non-historic) hook's implementations as they are now, with
    keyword arguments, as ``hook(**kwargs)`` does, less what pluggy does around every call
    (checking that no argument is missing, copying the implementations' list, and, where
    no implementation is a wrapper, the machinery for wrappers): the controller replays
    several hooks per test, thousands of tests a second, always with every argument.
    ``without``: a plugin whose implementation is left out (the caller does its part).
    Built again for each batch, so plugins registered meanwhile are called. Where pluggy's
    hook caller is shaped otherwise, or its specification gives some arguments defaults,
    or calls are traced (``pytest --debug``), the hook itself, or pluggy's own loop."""
    hookexec = getattr(hook, "_hookexec", None)
    name = getattr(hook, "name", None)
    if hookexec is None or not isinstance(name, str) or not hasattr(hook, "get_hookimpls"):
        return hook
    if getattr(getattr(hook, "spec", None), "kwargdefaults", None):
        return hook
    impls = [impl for impl in hook.get_hookimpls() if impl.plugin is not without]
    if _untraced(hookexec) and all(_plain_impl(impl) for impl in impls):
        # pluggy's loop (_multicall) for implementations that are no wrappers: last
        # registered first, each with its arguments by name, results not None kept.
        calls = [(impl.function, tuple(impl.argnames)) for impl in reversed(impls)]

        def call_each(**kwargs: Any) -> list[Any]:
            results = []
            for function, argnames in calls:
                result = function(*[kwargs[name] for name in argnames])
                if result is not None:
                    results.append(result)
            return results

        return call_each

    def call(**kwargs: Any) -> Any:
        return hookexec(name, impls, kwargs, False)

    return call


def _untraced(hookexec: Any) -> bool:
    """Whether pluggy calls implementations with its plain loop (no tracing or monitoring
    of calls, which swap the plugin manager's ``_inner_hookexec``)."""
    try:
        from pluggy._callers import _multicall
    except ImportError:
        return False
    manager = getattr(hookexec, "__self__", None)
    return getattr(manager, "_inner_hookexec", None) is _multicall


def _plain_impl(impl: Any) -> bool:
    return (
        not getattr(impl, "hookwrapper", True)
        and not getattr(impl, "wrapper", True)
        and not getattr(impl, "kwargnames", ())
        and hasattr(impl, "argnames")
    )


class PlainPassJunit:
    """Records a test whose three reports passed plainly in pytest's ``--junitxml``
    writer (``_pytest.junitxml.LogXML``) as its report hook would, with the writer's own
    pieces: a ``_NodeReporter`` whose ``record_testreport`` sets the test case's
    attributes from the call's report, its duration by the writer's ``report_duration``,
    ``passed`` counted, and the case finished (``finalize``) in the writer's list of
    cases, where the report hook would have put it. What the hook does besides
    (properties, failures) does not apply to such a test, nor, unless ``junit_logging``
    asks for it for passing tests too, captured output."""

    def __init__(self, writer: Any, node_reporter_class: Any) -> None:
        self.writer = writer
        self._node_reporter = node_reporter_class

    def is_open(self, report: pytest.TestReport) -> bool:
        """Whether the writer has a case of this test open (a report of it went through
        the hook already): then the rest must too."""
        return (report_node_id(report), None) in self.writer.node_reporters

    def record(
        self, setup: pytest.TestReport, call: pytest.TestReport, teardown: pytest.TestReport
    ) -> None:
        writer = self.writer
        reporter = self._node_reporter(report_node_id(call), writer)
        writer.node_reporters_ordered.append(reporter)
        reporter.record_testreport(call)
        writer.add_stats("passed")
        # Added up phase by phase, in order, as the writer does (the same float).
        for report in (setup, call, teardown):
            if writer.report_duration in ("total", report.when):
                reporter.duration += report.duration
        reporter.finalize()


def plain_pass_junit(config: pytest.Config) -> PlainPassJunit | None:
    """See :class:`PlainPassJunit`; None when the run writes no JUnit report, or pytest's
    writer is not the one whose workings it follows (then every report goes through the
    writer's hook)."""
    writer = junit_xml(config)
    if writer is None:
        return None
    try:
        from _pytest.junitxml import LogXML, _NodeReporter
    except ImportError:
        return None
    needed = ("node_reporters", "node_reporters_ordered", "add_stats", "report_duration")
    same_class = type(writer) is LogXML
    if not same_class or not all(hasattr(writer, name) for name in needed):
        return None
    if writer.report_duration not in ("total", "call", "setup", "teardown"):
        return None
    if getattr(writer, "logging", None) != "no" and getattr(writer, "log_passing_tests", True):
        return None  # passing tests get their (empty) captured output written: the hook's
    return PlainPassJunit(writer, _NodeReporter)


#: What records a test that passed plainly for one listener, as its hooks would: given
#: the test's node id and its setup, call and teardown reports.
PlainPassStep = Callable[[str, pytest.TestReport, pytest.TestReport, pytest.TestReport], None]

#: The hooks a test's replay calls (see :class:`PlainPassReplay`).
REPLAY_HOOKS = ("pytest_runtest_logstart", "pytest_runtest_logreport", "pytest_runtest_logfinish")


class PlainPassReplay:
    """Replays a test whose three reports passed plainly into the listeners of the
    replay's hooks directly, where every listener is one whose workings for such a test
    are known (see :func:`plain_pass_replay`): the controller replays thousands a second,
    and pytest's terminal reporter asks the status hook about each report and draws the
    test's character through several private steps.

    What each listener does for such a test:

    - pytest's terminal reporter (``TerminalReporter``), at ``-q`` or default verbosity:
      its ``pytest_runtest_logstart``; each report kept in ``stats`` under its status's
      category (``_add_stats``), the latest in ``_current_logreport``; the call's status
      letter written in green, the test counted in ``_progress_nodeids_reported`` and the
      ``[ 40%]`` column written where the line reaches its edge
      (``_write_progress_information_if_past_edge``), as its ``pytest_runtest_logreport``
      does. The statuses are asked once per instance, of the first such test, from pytest's
      own status hooks (no other plugin implements ``pytest_report_teststatus``): those
      answer by phase and outcome alone.
    - pytest's ``--junitxml`` writer: :class:`PlainPassJunit`.
    - ``--lf``'s plugin (``LFPlugin``): its report hook, for the call report (it acts only
      on a call that passed, a skip or a failure).
    - pytest's logging plugin: its three hooks, in order (its live-log handler follows the
      phase); nothing where live logs are off.
    - pytest's session (``Session``): nothing (it counts failures).
    - ``extra``: the caller's plugins, each with its own function taking the test's node
      id and its three reports.
    """

    def __init__(
        self,
        config: pytest.Config,
        terminal: TerminalReporter | None,
        junit: PlainPassJunit | None,
        steps: list[PlainPassStep],
    ) -> None:
        self.config = config
        self.terminal = terminal
        self.junit = junit
        self._steps = steps
        #: The call's status (category, letter), asked of the first test; None where
        #: pytest's statuses are not those of a plain pass.
        self._status: tuple[str, str] | None = None
        self._status_asked = False
        #: Whether the terminal's ``pytest_runtest_logstart`` writes anything: with
        #: ``-q`` it shows neither the test's line nor its file.
        self._logstart = terminal is not None and bool(
            terminal.showlongtestinfo or terminal.showfspath
        )
        self._edge_margin = _progress_edge_margin(terminal)

    def record(
        self,
        nodeid: str,
        setup: pytest.TestReport,
        call: pytest.TestReport,
        teardown: pytest.TestReport,
    ) -> bool:
        """Replay the test; False, having done nothing, where its reports must go through
        the hooks (the JUnit writer has a case of it open, or pytest's statuses for it
        are not those of a plain pass)."""
        if self.junit is not None and self.junit.is_open(call):
            return False
        if self.terminal is not None:
            if not self._status_asked:
                self._status_asked = True
                self._status = self._plain_status(setup, call, teardown)
            if self._status is None:
                return False
            self._terminal(self._status, nodeid, setup, call, teardown)
        if self.junit is not None:
            self.junit.record(setup, call, teardown)
        for step in self._steps:
            step(nodeid, setup, call, teardown)
        return True

    def _plain_status(
        self, setup: pytest.TestReport, call: pytest.TestReport, teardown: pytest.TestReport
    ) -> tuple[str, str] | None:
        hook = self.config.hook.pytest_report_teststatus
        statuses = [tuple(hook(report=r, config=self.config)) for r in (setup, call, teardown)]
        category, letter, word = statuses[1]
        if statuses[0] != ("", "", "") or statuses[2] != ("", "", ""):
            return None
        if not (isinstance(category, str) and category and letter and isinstance(word, str)):
            return None  # a word with its own markup: the hook's way
        return category, letter

    def _terminal(
        self,
        status: tuple[str, str],
        nodeid: str,
        setup: pytest.TestReport,
        call: pytest.TestReport,
        teardown: pytest.TestReport,
    ) -> None:
        reporter: Any = self.terminal
        category, letter = status
        if self._logstart:
            reporter.pytest_runtest_logstart(nodeid=nodeid, location=setup.location)
        reporter._tests_ran = True
        reporter._current_logreport = setup
        reporter._add_stats("", [setup])
        reporter._current_logreport = call
        reporter._add_stats(category, [call])
        reporter._progress_nodeids_reported.add(report_node_id(call))
        writer = reporter._tw
        writer.write(letter, green=True)
        if reporter._show_progress_info and not reporter._is_last_item:
            # The reporter works out the line's width (wcswidth, a character at a time)
            # to find whether its progress column is due: where the line is ASCII, its
            # length bounds that width, and a line short of the edge by more than the
            # widest column is left alone, as the reporter would.
            line = writer._current_line
            margin = self._edge_margin
            if margin is None or not (
                line.isascii() and len(line) + margin < reporter._screen_width
            ):
                reporter._write_progress_information_if_past_edge()
        reporter.flush()
        reporter._current_logreport = teardown
        reporter._add_stats("", [teardown])


def plain_pass_replay(
    config: pytest.Config, extra: Sequence[tuple[object, PlainPassStep]] = ()
) -> PlainPassReplay | None:
    """See :class:`PlainPassReplay`; None where some listener of the replay's hooks is not
    one it knows (another plugin, a wrapper, a version of pytest that implements other
    hooks on them), or pytest's status hooks are not all pytest's own, or the terminal
    writes a line per test (``-v``): then each report goes through the hooks."""
    known = _known_listeners()
    if known is None:
        return None
    terminal_class, lf_class, logging_class, session_class = known
    junit_writer = junit_xml(config)
    junit: PlainPassJunit | None = None
    terminal: Any = None
    steps: list[PlainPassStep] = []
    passed_on: dict[str, Any] = {}  # the logging plugin's hooks, called as they are
    for name in REPLAY_HOOKS:
        listeners = getattr(getattr(config.hook, name, None), "get_hookimpls", None)
        if listeners is None:
            return None
        for impl in listeners():
            plugin, kind, report_hook = impl.plugin, type(impl.plugin), "logreport" in name
            if not _plain_impl(impl):
                return None
            if plugin is junit_writer and report_hook:
                junit = plain_pass_junit(config)
                if junit is None:
                    return None
            elif kind is terminal_class and name != "pytest_runtest_logfinish":
                terminal = plugin
            elif kind is lf_class and report_hook:
                steps.append(_call_report_only(impl.function))
            elif kind is logging_class:
                if not _live_logging_off(plugin):
                    passed_on[name] = (impl.function, tuple(impl.argnames))
            elif kind is session_class and report_hook:
                pass  # it counts failures
            else:
                step = next((step for ours, step in extra if ours is plugin), None)
                if step is None or not report_hook:
                    return None
                steps.append(step)
    if passed_on:
        steps.append(_every_call(passed_on))
    if terminal is not None and not _terminal_draws_characters(config, terminal):
        return None
    if terminal is not None or junit is not None:
        for impl in config.hook.pytest_report_teststatus.get_hookimpls():
            module = getattr(impl.function, "__module__", None) or ""
            if not module.startswith("_pytest."):
                return None
    return PlainPassReplay(config, terminal, junit, steps)


def _known_listeners() -> tuple[type, type, type, type] | None:
    try:
        from _pytest.cacheprovider import LFPlugin
        from _pytest.logging import LoggingPlugin
        from _pytest.main import Session
    except ImportError:
        return None
    return TerminalReporter, LFPlugin, LoggingPlugin, Session


def _progress_edge_margin(terminal: Any) -> int | None:
    """More than the widest progress column pytest's reporter writes at a line's edge
    (``[100%]``, ``[ 400/6400]`` or a time) and the space before it, for
    :meth:`PlainPassReplay._terminal`; None where the reporter or its writer keeps the
    pieces elsewhere (then the reporter's own check runs for every test)."""
    session = getattr(terminal, "_session", None)
    collected = getattr(session, "testscollected", None)
    line = getattr(getattr(terminal, "_tw", None), "_current_line", None)
    width = getattr(terminal, "_screen_width", None)
    if not (isinstance(collected, int) and isinstance(line, str) and isinstance(width, int)):
        return None
    widest = max(len(" [100%]"), len(" 99h 59m"), len(f" [{collected}/{collected}]"))
    return widest + 1


def _live_logging_off(plugin: Any) -> bool:
    """Whether pytest's logging plugin has live logs off: its hooks for a test's reports
    then tell the phase to a ``_LiveLoggingNullHandler``, which does nothing with it."""
    try:
        from _pytest.logging import _LiveLoggingNullHandler
    except ImportError:
        return False
    return type(getattr(plugin, "log_cli_handler", None)) is _LiveLoggingNullHandler


def _terminal_draws_characters(config: pytest.Config, terminal: Any) -> bool:
    """Whether the terminal reporter writes a character per test (``-q`` or default
    verbosity), with the pieces :class:`PlainPassReplay` uses."""
    verbosity = getattr(pytest.Config, "VERBOSITY_TEST_CASES", None)
    if verbosity is None or config.get_verbosity(verbosity) > 0:
        return False
    needed = (
        "pytest_runtest_logstart",
        "_add_stats",
        "_progress_nodeids_reported",
        "_tw",
        "_show_progress_info",
        "_is_last_item",
        "_write_progress_information_if_past_edge",
    )
    return all(hasattr(terminal, name) for name in needed)


def _call_report_only(logreport: Any) -> PlainPassStep:
    def step(nodeid: str, setup: Any, call: Any, teardown: Any) -> None:
        logreport(report=call)

    return step


def _every_call(hooks: dict[str, Any]) -> PlainPassStep:
    """A plugin's implementations of the replay's hooks, called as a test's replay calls
    them: start, each report, finish."""
    start = hooks.get("pytest_runtest_logstart")
    report = hooks.get("pytest_runtest_logreport")
    finish = hooks.get("pytest_runtest_logfinish")

    def call_with(hook: tuple[Any, tuple[str, ...]], **kwargs: Any) -> None:
        function, argnames = hook
        function(*[kwargs[name] for name in argnames])

    def step(nodeid: str, setup: Any, call: Any, teardown: Any) -> None:
        if start is not None:
            call_with(start, nodeid=nodeid, location=setup.location)
        if report is not None:
            for each in (setup, call, teardown):
                call_with(report, report=each)
        if finish is not None:
            call_with(finish, nodeid=nodeid, location=teardown.location)

    return step


def _terminal_writer_class() -> type[TerminalWriter] | None:
    try:
        from _pytest._io import TerminalWriter
    except ImportError:
        return None
    return TerminalWriter


__all__ = [
    "PlainPassJunit",
    "PlainPassReplay",
    "PlainPassStep",
    "TerminalReporter",
    "append_to_junit_case",
    "fast_hook_caller",
    "item_node_id",
    "junit_report_path",
    "junit_xml",
    "junit_xml_key",
    "plain_pass_junit",
    "plain_pass_replay",
    "report_node_id",
    "runtestprotocol",
    "teardown_reports_indexed",
    "tmp_path_factory",
    "writing_nowhere",
    "xml_key",
]


def fixture_scopes(callspec: object) -> dict[str, str]:
    """The scope (``"function"``, ``"class"``, ``"module"``, ...) of each parametrized
    argument of a test's ``callspec`` (pytest's ``CallSpec2._arg2scope``); empty where pytest
    keeps no such record, which makes every parameter count as function-scoped: tests are
    then grouped by file and class only (see :mod:`pytest_orchestrator.groups`)."""
    scopes = getattr(callspec, "_arg2scope", None)
    if not isinstance(scopes, dict):
        return {}
    return {str(name): str(getattr(scope, "value", scope)) for name, scope in scopes.items()}


def live_log_handler(config: pytest.Config) -> Any:
    """pytest's live-log handler (the logging plugin's ``log_cli_handler``), or None when
    ``log_cli`` is off: pytest then keeps a ``_LiveLoggingNullHandler`` that drops every
    record. Where pytest keeps neither, None too: live logs then stay on the workers, as
    without ``log_cli``."""
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    handler = getattr(plugin, "log_cli_handler", None)
    if handler is None or not hasattr(handler, "set_when"):
        return None
    return None if type(handler).__name__ == "_LiveLoggingNullHandler" else handler


def replace_live_log_handler(config: pytest.Config, handler: Any) -> None:
    """Make ``handler`` the logging plugin's live-log handler (it is told each phase with
    ``set_when`` and given the records ``log_cli`` shows)."""
    plugin = config.pluginmanager.get_plugin("logging-plugin")
    if plugin is not None:
        plugin.log_cli_handler = handler


def live_log_phase(handler: Any) -> str | None:
    """The phase pytest's live-log handler last announced (its ``_when``), so that a
    heading is written only when the phase changes; None where it keeps none."""
    when = getattr(handler, "_when", None)
    return when if isinstance(when, str) else None
