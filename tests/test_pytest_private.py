"""Each use of pytest's private internals (pytest_orchestrator.pytest_private, and the
worker's preload): it still works with the installed pytest, and where it is missing the
feature steps aside and pytest's own behaviour stays."""

from __future__ import annotations

import importlib.util
import inspect
import io
import json
import logging
import re
import sys
import types
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_orchestrator import pytest_private
from pytest_orchestrator.pytest_private import (
    TerminalReporter,
    append_to_junit_case,
    fixture_scopes,
    junit_report_path,
    junit_xml,
    junit_xml_key,
    live_log_handler,
    live_log_phase,
    replace_live_log_handler,
    runtestprotocol,
    tmp_path_factory,
    writing_nowhere,
)
from pytest_orchestrator.terminal import Terminal

ROOT = Path(__file__).resolve().parent.parent


def _reporter(pytester: pytest.Pytester) -> tuple[TerminalReporter, io.StringIO]:
    out = io.StringIO()
    reporter = TerminalReporter(pytester.parseconfig(), file=out)
    return reporter, out


# -- TerminalReporter ---------------------------------------------------------------------
def test_terminal_reporter_is_the_class_of_pytests_reporter(pytester: pytest.Pytester) -> None:
    plugin = pytester.parseconfigure().pluginmanager.get_plugin("terminalreporter")
    assert isinstance(plugin, TerminalReporter)
    if hasattr(pytest, "TerminalReporter"):  # public from pytest 8.4
        assert TerminalReporter is pytest.TerminalReporter


# -- xml_key, LogXML.logfile, LogXML.node_reporter ----------------------------------------
def test_the_junit_writer_is_found_with_its_file(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure("--junitxml=out/report.xml")
    assert junit_xml(config) is not None
    assert junit_report_path(config) == pytester.path / "out" / "report.xml"
    assert pytest_private.xml_key is junit_xml_key()
    bare = pytester.parseconfigure()
    assert junit_xml(bare) is None and junit_report_path(bare) is None


class _AddsToTheCase:
    """Adds an element to each test's ``<testcase>`` as the Ray session records earlier
    attempts."""

    def __init__(self) -> None:
        self.config: pytest.Config | None = None
        self.added: list[bool] = []

    def pytest_configure(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and self.config is not None:
            element = ET.Element("rerunFailure", {"message": "earlier attempt"})
            self.added.append(append_to_junit_case(self.config, report, [element]))


def test_elements_reach_the_testcase_pytest_writes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    plugin = _AddsToTheCase()
    result = pytester.inline_run(
        "--junitxml=report.xml", "-p", "no:cacheprovider", plugins=[plugin]
    )
    result.assertoutcome(passed=1)
    assert plugin.added == [True]
    case = ET.parse(pytester.path / "report.xml").getroot().find("testsuite/testcase")
    assert case is not None
    rerun = case.find("rerunFailure")
    assert rerun is not None and rerun.get("message") == "earlier attempt"


def test_without_junitxml_nothing_is_added(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    plugin = _AddsToTheCase()
    pytester.inline_run("-p", "no:cacheprovider", plugins=[plugin]).assertoutcome(passed=1)
    assert plugin.added == [False]


def test_without_pytests_key_the_plugin_finds_no_writer(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = pytester.parseconfigure("--junitxml=report.xml")
    with monkeypatch.context() as patch:  # pytest needs its key back to unconfigure
        patch.delattr("_pytest.junitxml.xml_key")
        key = junit_xml_key()
    assert isinstance(key, pytest.StashKey) and key not in config.stash
    monkeypatch.setattr(pytest_private, "xml_key", key)
    assert junit_xml(config) is None
    assert junit_report_path(config) is None

    class Untouched:
        def __iter__(self) -> Iterator[ET.Element]:
            raise AssertionError("iterated without a report to add to")

    report = pytest.TestReport("t.py::t", ("t.py", 0, "t"), {}, "passed", None, "call")
    assert append_to_junit_case(config, report, Untouched()) is False


def test_a_writer_shaped_otherwise_is_left_alone() -> None:
    config: Any = types.SimpleNamespace(stash={pytest_private.xml_key: types.SimpleNamespace()})
    report = pytest.TestReport("t.py::t", ("t.py", 0, "t"), {}, "passed", None, "call")
    assert junit_report_path(config) is None
    assert append_to_junit_case(config, report, [ET.Element("x")]) is False


# -- config._tmp_path_factory -------------------------------------------------------------
def test_the_sessions_tmp_path_factory_is_found(pytester: pytest.Pytester) -> None:
    config = pytester.parseconfigure("--basetemp", str(pytester.path / "base"))
    factory = tmp_path_factory(config)
    assert isinstance(factory, pytest.TempPathFactory)
    assert factory.getbasetemp() == pytester.path / "base"


def test_without_a_tmp_path_factory_there_is_none() -> None:
    config = types.SimpleNamespace()
    assert tmp_path_factory(config) is None  # type: ignore[arg-type]
    config._tmp_path_factory = object()  # not pytest's
    assert tmp_path_factory(config) is None  # type: ignore[arg-type]


# -- _pytest.runner.runtestprotocol -------------------------------------------------------
def test_runtestprotocol_runs_one_item_without_logging_it(pytester: pytest.Pytester) -> None:
    assert {"item", "log", "nextitem"} <= set(inspect.signature(runtestprotocol).parameters)
    item = pytester.getitem("def test_func():\n    assert 1 == 2\n")
    logged: list[pytest.TestReport] = []

    class Listener:
        def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
            logged.append(report)

    item.config.pluginmanager.register(Listener())
    reports = runtestprotocol(item, nextitem=None, log=False)
    assert [(r.when, r.outcome) for r in reports] == [
        ("setup", "passed"),
        ("call", "failed"),
        ("teardown", "passed"),
    ]
    assert logged == []


# -- reporter._tw, reporter._show_progress_info, _pytest._io.TerminalWriter ---------------
def test_the_reporter_writes_nowhere_inside_the_block(pytester: pytest.Pytester) -> None:
    reporter, out = _reporter(pytester)
    with writing_nowhere(reporter) as real:
        assert real is not None
        reporter.write_line("hidden")
        real.line("ours")
    reporter.write_line("shown")
    assert out.getvalue().splitlines() == ["ours", "shown"]
    assert reporter._show_progress_info is False  # pytest's final [100%] stays off


def test_the_real_writer_comes_back_after_an_error(pytester: pytest.Pytester) -> None:
    reporter, out = _reporter(pytester)
    with pytest.raises(KeyboardInterrupt), writing_nowhere(reporter):
        raise KeyboardInterrupt
    reporter.write_line("after")
    assert out.getvalue() == "after\n"


def test_without_pytests_writer_class_pytest_keeps_its_output(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    reporter, out = _reporter(pytester)
    monkeypatch.delattr("_pytest._io.TerminalWriter")
    progress = reporter._show_progress_info
    with writing_nowhere(reporter) as real:
        assert real is None
        reporter.write_line("still shown")
    assert out.getvalue() == "still shown\n"
    assert reporter._show_progress_info == progress


def test_a_reporter_shaped_otherwise_is_left_alone() -> None:
    reporter = types.SimpleNamespace(verbosity=0)
    with writing_nowhere(reporter) as real:  # type: ignore[arg-type]
        assert real is None
    assert vars(reporter) == {"verbosity": 0}


def test_the_progress_line_replaces_the_per_test_output(pytester: pytest.Pytester) -> None:
    reporter, out = _reporter(pytester)
    reporter.config.pluginmanager.register(reporter, "terminalreporter")
    terminal = Terminal(reporter.config)
    with terminal.progress_instead_of_tests(True, lambda: "3/3 tests"):
        reporter.write("...")
    assert out.getvalue() == "3/3 tests\n"


# -- _pytest.config.default_plugins (the worker's preload) ---------------------------------
def test_pytests_plugin_list_names_importable_modules() -> None:
    from _pytest.config import default_plugins

    assert "junitxml" in default_plugins and "terminal" in default_plugins
    missing = [p for p in default_plugins if importlib.util.find_spec(f"_pytest.{p}") is None]
    assert missing == []


def test_preload_without_pytests_plugin_list_still_loads_ours(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestrator.worker.session import PRELOADED, preload

    monkeypatch.delattr("_pytest.config.default_plugins")
    preload()
    assert all(name in sys.modules for name in PRELOADED)


# -- no other module reaches into pytest ---------------------------------------------------
PRIVATE = re.compile(
    r"\b_pytest\b|\._tw\b|_tmp_path_factory|_show_progress_info|log_cli_handler"
    r"|_LiveLoggingNullHandler|\b_when\b|_arg2scope"
)
#: Where a private use may stand: pytest_private.py, and the worker's preload (see its
#: comment).
ALLOWED = {
    "plugins/pytest_orchestrator/pytest_private.py",
    "orchestrator/worker/session.py",
}


def test_pytests_internals_are_used_only_through_pytest_private() -> None:
    found = sorted(
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("orchestrator", "plugins")
        for path in (ROOT / folder).rglob("*.py")
        if str(path.relative_to(ROOT)) not in ALLOWED
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if PRIVATE.search(line)
    )
    assert found == []


def test_fixture_scopes_name_each_parameters_scope(pytester: pytest.Pytester) -> None:
    items = pytester.getitems(
        """
        import pytest

        @pytest.fixture(scope="module", params=[1, 2])
        def shared(request):
            return request.param

        @pytest.mark.parametrize("x", [3])
        def test_it(shared, x):
            pass
        """
    )
    callspec = items[0].callspec  # type: ignore[attr-defined]
    assert fixture_scopes(callspec) == {"shared": "module", "x": "function"}
    assert fixture_scopes(object()) == {}  # no record: every parameter counts as a function's


@pytest.mark.parametrize("log_cli", ["true", "false"])
def test_the_live_log_handler_is_found_only_with_log_cli(
    pytester: pytest.Pytester, log_cli: str
) -> None:
    config = pytester.parseconfigure("-o", f"log_cli={log_cli}")
    handler = live_log_handler(config)
    if log_cli == "false":
        assert handler is None
        return
    assert handler is not None and hasattr(handler, "set_when")
    handler.set_when("call")
    assert live_log_phase(handler) == "call"
    stand_in = logging.NullHandler()
    stand_in.set_when = lambda when: None  # type: ignore[attr-defined]
    replace_live_log_handler(config, stand_in)
    assert live_log_handler(config) is stand_in
    assert live_log_phase(object()) is None  # a handler that keeps no phase


# -- the controller's replay, faster -------------------------------------------------------
def _test_report(nodeid: str, when: str) -> pytest.TestReport:
    return pytest.TestReport(
        nodeid=nodeid,
        location=("t.py", 0, nodeid),
        keywords={},
        outcome="passed",
        longrepr=None,
        when=when,  # type: ignore[arg-type]
    )


def _key(report: pytest.TestReport) -> Any:
    """What pytest's summary looks a test's teardown reports up by (see _report_id)."""
    return getattr(report, "id", report.nodeid)


def test_the_teardown_index_answers_what_pytests_scan_does(pytester: pytest.Pytester) -> None:
    reporter, _ = _reporter(pytester)
    reports = [_test_report(f"t.py::t{n}", w) for n in range(4) for w in ("setup", "teardown")]
    reporter.stats[""] = [*reports, _test_report("t.py::t1", "teardown")]
    keys = [_key(r) for r in reports] + [_key(_test_report("t.py::gone", "teardown"))]
    scanned = [reporter._get_teardown_reports(key) for key in keys]
    with pytest_private.teardown_reports_indexed(reporter):
        indexed = [reporter._get_teardown_reports(key) for key in keys]
    assert indexed == scanned and len(scanned[2]) == 2 and scanned[-1] == []
    assert "_get_teardown_reports" not in vars(reporter)  # pytest's own method again


def test_a_failed_tests_teardown_output_is_still_in_the_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_one="""
        import pytest

        @pytest.fixture
        def noisy():
            yield
            print("said at teardown")

        def test_fails(noisy):
            assert False

        def test_passes(noisy):
            pass
        """
    )
    pytester.makeconftest(
        "from pytest_orchestrator.pytest_private import teardown_reports_indexed\n"
        "import pytest\n\n"
        "@pytest.hookimpl(wrapper=True, tryfirst=True)\n"
        "def pytest_terminal_summary(terminalreporter):\n"
        "    with teardown_reports_indexed(terminalreporter):\n"
        "        return (yield)\n"
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.stdout.fnmatch_lines(["*Captured stdout teardown*", "said at teardown"])
    assert result.stdout.str().count("said at teardown") == 1


def test_a_fast_hook_caller_calls_what_the_hook_calls() -> None:
    import pluggy

    spec, impl = pluggy.HookspecMarker("t"), pluggy.HookimplMarker("t")
    calls: list[str] = []

    class Spec:
        @spec
        def finish(self, nodeid: str) -> None: ...

        @spec
        def start(self, nodeid: str) -> None: ...

    class Plugin:
        @impl(wrapper=True)
        def finish(self, nodeid: str) -> Iterator[None]:
            calls.append(f"wrapper before {nodeid}")
            yield
            calls.append("wrapper after")

        @impl
        def start(self, nodeid: str) -> str:
            calls.append(f"start {nodeid}")
            return nodeid

    manager = pluggy.PluginManager("t")
    manager.add_hookspecs(Spec)
    manager.register(Plugin())
    assert manager.hook.start(nodeid="a") == ["a"]
    assert pytest_private.fast_hook_caller(manager.hook.start)(nodeid="b") == ["b"]
    manager.hook.finish(nodeid="a")
    pytest_private.fast_hook_caller(manager.hook.finish)(nodeid="b")
    assert calls == [
        "start a",
        "start b",
        "wrapper before a",
        "wrapper after",
        "wrapper before b",
        "wrapper after",
    ]


def test_a_hook_shaped_otherwise_is_called_as_it_is() -> None:
    def hook(**kwargs: Any) -> None:
        pass

    assert pytest_private.fast_hook_caller(hook) is hook


def test_a_report_of_the_same_test_takes_the_first_ones_node_id() -> None:
    first = _test_report("t.py::t[a]", "setup")
    second = _test_report(pytest_private.report_node_id(first), "call")
    assert second.nodeid == first.nodeid == "t.py::t[a]"


@pytest.mark.parametrize(
    "ini",
    [
        [],
        ["-o", "junit_family=xunit1"],
        ["-o", "junit_duration_report=call"],
        ["--junitprefix=pre", "-o", "junit_logging=all", "-o", "junit_log_passing_tests=false"],
    ],
)
def test_a_plain_pass_is_the_junit_case_pytests_writer_would_write(
    pytester: pytest.Pytester, ini: list[str]
) -> None:
    tests = ["sub/test_a.py::test_x[a-\x07<b>]", "sub/test_a.py::TestC::test_y", "test_b.py::t"]

    def reports(nodeid: str, n: int) -> list[pytest.TestReport]:
        location = (nodeid.split("::")[0], n, nodeid.split("::", 1)[1])
        return [
            pytest.TestReport(
                nodeid=nodeid,
                location=location,
                keywords={},
                outcome="passed",
                longrepr=None,
                when=when,  # type: ignore[arg-type]
                duration=0.1 * (n + 1) + 0.01 * k,
            )
            for k, when in enumerate(("setup", "call", "teardown"))
        ]

    def written(fast: bool) -> tuple[list[bytes], dict[str, int]]:
        config = pytester.parseconfigure(f"--junitxml={pytester.path / 'out.xml'}", *ini)
        junit = pytest_private.plain_pass_junit(config)
        assert junit is not None
        for n, nodeid in enumerate(tests):
            setup, call, teardown = reports(nodeid, n)
            if fast:
                assert not junit.is_open(call)
                junit.record(setup, call, teardown)
            else:
                for report in (setup, call, teardown):
                    junit.writer.pytest_runtest_logreport(report)
        cases = [ET.tostring(r.to_xml()) for r in junit.writer.node_reporters_ordered]
        return cases, dict(junit.writer.stats)

    assert written(fast=True) == written(fast=False)


def test_without_pytests_writer_there_is_no_plain_pass_shortcut(pytester: pytest.Pytester) -> None:
    assert pytest_private.plain_pass_junit(pytester.parseconfigure()) is None


def test_nor_where_passing_tests_get_their_captured_output(pytester: pytest.Pytester) -> None:
    # pytest writes the (empty) captured sections of every passing test then.
    args = (f"--junitxml={pytester.path / 'out.xml'}", "-o", "junit_logging=out-err")
    assert pytest_private.plain_pass_junit(pytester.parseconfigure(*args)) is None


#: A plugin that stands in for the controller: it replays made-up reports of every
#: collected test, through pytest's hooks or, with --plain-pass, through PlainPassReplay
#: for the tests that passed plainly. Every seventh test fails, every eleventh is skipped.
PLAIN_PASS_REPLAYER = """
import pytest
from pytest_orchestrator import pytest_private


def pytest_addoption(parser):
    parser.addoption("--plain-pass", action="store_true")


def reports(index, item):
    outcome = "failed" if index % 7 == 3 else "passed"
    out = []
    for k, when in enumerate(("setup", "call", "teardown")):
        out.append(pytest.TestReport(
            nodeid=item.nodeid,
            location=item.location,
            keywords={name: 1 for name in item.keywords},
            outcome=outcome if when == "call" else "passed",
            longrepr="AssertionError: made up" if outcome == "failed" and when == "call" else None,
            when=when,
            sections=[],
            duration=0.001 * (index % 13) + 0.0001 * k,
            start=1000.0 + index,
            stop=1000.5 + index,
        ))
    if index % 11 == 5:
        skipped = (item.location[0], item.location[1] + 1, "Skipped: made up")
        out = [out[0], out[2]]
        out[0].outcome, out[0].longrepr = "skipped", skipped
    return out


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    config = session.config
    hook = config.hook
    plain = pytest_private.plain_pass_replay(config) if config.option.plain_pass else None
    config.stash[KEY] = plain is not None
    for index, item in enumerate(session.items):
        made = reports(index, item)
        plainly = len(made) == 3 and all(r.passed for r in made)
        if plain is not None and plainly and plain.record(item.nodeid, *made):
            continue
        hook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for report in made:
            hook.pytest_runtest_logreport(report=report)
        hook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


KEY = pytest.StashKey()


def pytest_terminal_summary(terminalreporter, config):
    terminalreporter.write_line(f"plain-pass replay used: {config.stash.get(KEY, None)}")
"""


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["-q"],
        ["-qq", "-rA", "--durations=5", "--durations-min=0"],
        ["-o", "console_output_style=count"],
        ["-o", "console_output_style=times"],
        ["-o", "console_output_style=classic", "--junitxml=out.xml"],
        ["-q", "--junitxml=out.xml", "-o", "junit_family=xunit1"],
        ["-o", "log_cli=true", "-o", "verbosity_test_cases=0", "--log-cli-level=INFO"],
        ["-o", "log_cli=true"],
        ["-v"],
        ["-p", "no:terminal", "--junitxml=out.xml"],
    ],
)
def test_a_plain_pass_replayed_directly_leaves_what_its_hooks_would(
    pytester: pytest.Pytester, options: list[str]
) -> None:
    pytester.makepyfile(replayer=PLAIN_PASS_REPLAYER)
    pytester.syspathinsert()
    for module in range(3):
        pytester.makepyfile(
            **{
                f"test_m{module}.py": "import pytest\n"
                "@pytest.mark.parametrize('n', range(70))\n"
                "def test_n(n): pass\n"
                "class TestC:\n"
                "    def test_y(self): pass\n"
            }
        )

    tests = [f"test_m{m}.py::test_n[{n}]" for m in range(3) for n in range(70)]
    tests += [f"test_m{m}.py::TestC::test_y" for m in range(3)]

    def run(plain: bool) -> tuple[str, str, str, bool | None]:
        (pytester.path / "out.xml").unlink(missing_ok=True)
        # Every test failed last time: --lf's record loses those that pass.
        cache = pytester.path / ".pytest_cache" / "v" / "cache" / "lastfailed"
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(dict.fromkeys(tests, True)))
        args = ["-p", "replayer", "-p", "no:randomly", *options]
        result = pytester.runpytest_inprocess(*args, *(["--plain-pass"] if plain else []))
        text = re.sub(r"\d+\.\d\ds", "T", result.stdout.str())
        used = re.search(r"plain-pass replay used: (\w+)", text)
        text = re.sub(r"plain-pass replay used: \w+\n?", "", text)
        junit = (pytester.path / "out.xml").read_text() if "--junitxml=out.xml" in args else ""
        junit = re.sub(r'(timestamp|time|hostname)="[^"]*"', r'\1=""', junit)
        used_flag = None if used is None else used.group(1) == "True"
        return text, junit, cache.read_text() if cache.exists() else "", used_flag

    by_hooks = run(plain=False)
    direct = run(plain=True)
    assert direct[:3] == by_hooks[:3]
    # Where the terminal writes a line per test, every report goes through the hooks
    # (live logs make pytest verbose, unless its per-test verbosity is set).
    if "-v" in options or options == ["-o", "log_cli=true"]:
        assert direct[3] is False
    elif "no:terminal" not in options:
        assert direct[3] is True
        assert "F" in direct[0] or "failed" in direct[0]


def test_an_items_reports_take_the_node_id_pytest_builds_them_with(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_a="import pytest\n@pytest.mark.parametrize('x', ['a::b'])\ndef test_x(x): pass\n"
    )
    (item,) = pytester.getitems(pytester.path / "test_a.py")
    node_id = pytest_private.item_node_id(item)
    report = pytest.TestReport.from_item_and_call(
        item, pytest.CallInfo.from_call(lambda: None, "call")
    )
    built = _test_report(node_id, "call")  # type: ignore[arg-type]
    assert built.nodeid == report.nodeid == item.nodeid
    assert pytest_private.report_node_id(built) == pytest_private.report_node_id(report)
