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
from collections.abc import Iterable, Iterator
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


def _terminal_writer_class() -> type[TerminalWriter] | None:
    try:
        from _pytest._io import TerminalWriter
    except ImportError:
        return None
    return TerminalWriter


__all__ = [
    "PlainPassJunit",
    "TerminalReporter",
    "append_to_junit_case",
    "fast_hook_caller",
    "junit_report_path",
    "junit_xml",
    "junit_xml_key",
    "plain_pass_junit",
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
