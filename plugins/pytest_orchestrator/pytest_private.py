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


def _terminal_writer_class() -> type[TerminalWriter] | None:
    try:
        from _pytest._io import TerminalWriter
    except ImportError:
        return None
    return TerminalWriter


__all__ = [
    "TerminalReporter",
    "append_to_junit_case",
    "junit_report_path",
    "junit_xml",
    "junit_xml_key",
    "runtestprotocol",
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
