"""Regrouping a pytest JUnit report into one suite per test kind."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given
from hypothesis import strategies as st
from junitparser import JUnitXml, TestCase, TestSuite

from orchestrator.pipelines.kinds import KINDS
from orchestrator.reports.junit_kinds import TestFacts as Facts
from orchestrator.reports.junit_kinds import _totals, regroup

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests">
  <testsuite name="{name}" errors="9" failures="9" skipped="9" tests="99" time="4.250"
             timestamp="2024-05-01T12:00:00.000000+00:00" hostname="ci-runner-1">
    <properties>
      <property name="commit" value="abc123"/>
    </properties>
    <testcase classname="tests.unit.test_cart" name="test_total" time="0.010"/>
    <testcase classname="tests.unit.test_cart" name="test_discount" time="0.020">
      <failure message="assert 1 == 2">def test_discount(): assert 1 == 2</failure>
    </testcase>
    <testcase classname="tests.integration.test_db" name="test_query" time="1.000">
      <error message="failed on setup with &quot;ConnectionError&quot;">trace</error>
    </testcase>
    <testcase classname="tests.integration.test_db" name="test_migrate" time="0.000">
      <skipped type="pytest.skip" message="no database">tests/integration/test_db.py:9</skipped>
    </testcase>
    <testcase classname="tests.ml.test_data" name="test_schema[train]" time="0.500">
      <system-out>checked 1000 rows</system-out>
    </testcase>
    <testcase classname="tests.ml.test_model" name="test_accuracy" time="2.000"/>
    <testcase classname="" name="tests.broken" time="0.000">
      <error message="collection failure">ImportError</error>
    </testcase>
  </testsuite>
</testsuites>
"""

FACTS = {
    ("tests.unit.test_cart", "test_total"): Facts(
        "tests/unit/test_cart.py::test_total", "unit", worker="w0"
    ),
    ("tests.unit.test_cart", "test_discount"): Facts(
        "tests/unit/test_cart.py::test_discount", "unit", worker="w1"
    ),
    ("tests.integration.test_db", "test_query"): Facts(
        "tests/integration/test_db.py::test_query", "integration", worker="w0"
    ),
    ("tests.integration.test_db", "test_migrate"): Facts(
        "tests/integration/test_db.py::test_migrate", "integration"
    ),
    ("tests.ml.test_data", "test_schema[train]"): Facts(
        "tests/ml/test_data.py::test_schema[train]", "data_validation", worker="w1"
    ),
    ("tests.ml.test_model", "test_accuracy"): Facts(
        "tests/ml/test_model.py::test_accuracy",
        "model_performance",
        worker="w2",
        metrics=[("accuracy", 0.93), ("latency_ms", 12)],
    ),
}


def facts_of(case: ET.Element) -> Facts | None:
    return FACTS.get((case.get("classname", ""), case.get("name", "")))


def _report(tmp_path: Path, name: str = "pytest", text: str = REPORT) -> Path:
    path = tmp_path / "junit.xml"
    path.write_text(text.replace("{name}", name), encoding="utf-8")
    return path


def _suites(path: Path) -> dict[str, ET.Element]:
    """The suites with their attributes exactly as written."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    return {suite.get("name", ""): suite for suite in root.findall("testsuite")}


def _read(path: Path) -> dict[str, TestSuite]:
    """The suites as junitparser reads them, as do the CI tools that use it."""
    return {suite.name: suite for suite in JUnitXml.fromfile(str(path))}


def _properties(suite: TestSuite) -> dict[str, str]:
    return {p.name: p.value for p in suite.properties()}


def _counts(suite: ET.Element) -> tuple[int, ...]:
    """tests, failures, errors, skipped (-1: not written)."""
    return tuple(int(suite.get(key, "-1")) for key in ("tests", "failures", "errors", "skipped"))


def _cases(suite: TestSuite) -> list[str]:
    return [case.name for case in suite]


def _case(suite: TestSuite, name: str) -> TestCase:
    return next(case for case in suite if case.name == name)


def _every_case(*paths: Path) -> dict[tuple[str, str], tuple[object, ...]]:
    """Each test case's outcome, time and output, as junitparser reads them."""
    return {
        (case.classname, case.name): (
            case.is_failure,
            case.is_error,
            case.is_skipped,
            [(r.message, r.text) for r in case.result],
            case.time,
            case.system_out,
        )
        for path in paths
        for suite in JUnitXml.fromfile(str(path))
        for case in suite
    }


def test_one_suite_per_kind_in_kinds_order(tmp_path: Path) -> None:
    report = _report(tmp_path)
    assert regroup(report, facts_of) == []
    assert list(_suites(report)) == list(KINDS)
    suites = _read(report)
    assert _cases(suites["unit"]) == ["test_total", "test_discount", "tests.broken"]
    assert _cases(suites["integration"]) == ["test_query", "test_migrate"]
    assert _cases(suites["data_validation"]) == ["test_schema[train]"]
    assert _cases(suites["model_performance"]) == ["test_accuracy"]


def test_counts_are_recomputed_per_suite_and_in_total(tmp_path: Path) -> None:
    report = _report(tmp_path)
    regroup(report, facts_of)
    suites = _suites(report)
    assert _counts(suites["unit"]) == (3, 1, 1, 0)
    assert _counts(suites["integration"]) == (2, 0, 1, 1)
    assert _counts(suites["data_validation"]) == (1, 0, 0, 0)
    assert _counts(suites["model_performance"]) == (1, 0, 0, 0)
    root = ET.parse(report).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("7", "1", "2")
    assert root.get("skipped") is None  # junit-10 has no skipped on <testsuites>


def test_times_and_suite_attributes(tmp_path: Path) -> None:
    report = _report(tmp_path)
    regroup(report, facts_of)
    root = ET.parse(report).getroot()
    assert root.get("name") == "pytest"
    assert root.get("time") == "4.250"  # the run's wall time, not the sum of the tests
    suites = _suites(report)
    assert suites["unit"].get("time") == "0.030"
    assert suites["integration"].get("time") == "1.000"
    assert suites["model_performance"].get("time") == "2.000"
    for suite in suites.values():
        assert suite.get("timestamp") == "2024-05-01T12:00:00.000000+00:00"
        assert suite.get("hostname") == "ci-runner-1"


def test_each_suite_names_its_kind_pipeline_workers_and_metrics(tmp_path: Path) -> None:
    report = _report(tmp_path)
    regroup(report, facts_of)
    suites = _read(report)
    assert _properties(suites["unit"]) == {
        "kind": "unit",
        "pipeline": "app",
        "commit": "abc123",
        "worker:tests/unit/test_cart.py::test_total": "w0",
        "worker:tests/unit/test_cart.py::test_discount": "w1",
    }
    assert _properties(suites["integration"]) == {
        "kind": "integration",
        "pipeline": "app",
        "commit": "abc123",
        "worker:tests/integration/test_db.py::test_query": "w0",
    }
    assert _properties(suites["data_validation"])["pipeline"] == "ml"
    assert _properties(suites["model_performance"]) == {
        "kind": "model_performance",
        "pipeline": "ml",
        "commit": "abc123",
        "worker:tests/ml/test_model.py::test_accuracy": "w2",
        "metric:tests/ml/test_model.py::test_accuracy:accuracy": "0.93",
        "metric:tests/ml/test_model.py::test_accuracy:latency_ms": "12.0",
    }


def test_testcases_keep_their_children(tmp_path: Path) -> None:
    report = _report(tmp_path)
    regroup(report, facts_of)
    suites = _read(report)
    discount = _case(suites["unit"], "test_discount")
    assert discount.is_failure and discount.result[0].message == "assert 1 == 2"
    migrate = _case(suites["integration"], "test_migrate")
    assert migrate.is_skipped and migrate.result[0].message == "no database"
    schema = _case(suites["data_validation"], "test_schema[train]")
    assert schema.system_out == "checked 1000 rows"


def test_junitparser_reads_every_case_as_pytest_wrote_it(tmp_path: Path) -> None:
    """Regrouping moves the test cases and loses nothing of them: not in the report, and
    not across the pipeline files."""
    report = _report(tmp_path)
    before = _every_case(report)
    app, ml = tmp_path / "app.xml", tmp_path / "ml.xml"
    regroup(report, facts_of, pipeline_files={"app": app, "ml": ml})
    assert _every_case(report) == before
    assert _every_case(app, ml) == before
    assert len(_every_case(app)) + len(_every_case(ml)) == len(before)


def test_output_is_valid_junit(tmp_path: Path, junit_schema: Path) -> None:
    report = _report(tmp_path)
    app, ml = tmp_path / "app.xml", tmp_path / "ml.xml"
    regroup(report, facts_of, pipeline_files={"app": app, "ml": ml})
    schema = xmlschema.XMLSchema(junit_schema)
    for path in (report, app, ml):
        schema.validate(path)


def test_pipeline_files_hold_only_their_pipelines_suites(tmp_path: Path) -> None:
    report = _report(tmp_path)
    app, ml = tmp_path / "out" / "app.xml", tmp_path / "out" / "ml.xml"
    written = regroup(report, facts_of, pipeline_files={"app": app, "ml": ml})
    assert written == [app, ml]
    assert list(_suites(app)) == ["unit", "integration"]
    assert list(_suites(ml)) == ["data_validation", "model_performance"]
    app_root, ml_root = ET.parse(app).getroot(), ET.parse(ml).getroot()
    assert (app_root.get("tests"), app_root.get("failures"), app_root.get("errors")) == (
        "5",
        "1",
        "2",
    )
    assert (ml_root.get("tests"), ml_root.get("failures"), ml_root.get("errors")) == (
        "2",
        "0",
        "0",
    )
    assert _properties(_read(ml)["model_performance"]) == _properties(
        _read(report)["model_performance"]
    )


def test_a_pipeline_without_tests_gets_no_file(tmp_path: Path) -> None:
    report = _report(tmp_path)
    app, ml = tmp_path / "app.xml", tmp_path / "ml.xml"

    def app_only(case: ET.Element) -> Facts | None:
        facts = facts_of(case)
        if facts is not None and facts.kind not in ("unit", "integration"):
            return Facts(facts.nodeid, "integration")
        return facts

    assert regroup(report, app_only, pipeline_files={"app": app, "ml": ml}) == [app]
    assert app.is_file()
    assert not ml.exists()
    assert list(_suites(report)) == ["unit", "integration"]


def test_a_kind_without_tests_gets_no_suite(tmp_path: Path) -> None:
    report = _report(tmp_path)
    regroup(report, lambda case: None)
    suites = _suites(report)
    assert list(suites) == ["unit"]
    assert _counts(suites["unit"]) == (7, 1, 2, 1)
    assert _properties(_read(report)["unit"]) == {
        "kind": "unit",
        "pipeline": "app",
        "commit": "abc123",
    }


def test_a_test_we_know_nothing_of_is_a_unit_test(tmp_path: Path) -> None:
    report = _report(tmp_path)
    regroup(report, facts_of)
    unit = _read(report)["unit"]
    assert _case(unit, "tests.broken").is_error
    assert not any(name.endswith("tests.broken") for name in _properties(unit))


def test_a_custom_suite_name_prefixes_the_kinds(tmp_path: Path) -> None:
    report = _report(tmp_path, name="mysuite")
    regroup(report, facts_of)
    root = ET.parse(report).getroot()
    assert root.get("name") == "mysuite"
    assert list(_suites(report)) == [f"mysuite.{kind}" for kind in KINDS]
    assert _properties(_read(report)["mysuite.integration"])["kind"] == "integration"


def test_a_bare_testsuite_root_is_regrouped(tmp_path: Path) -> None:
    text = REPORT.split("\n", 2)[2].replace("</testsuites>\n", "")
    report = _report(tmp_path, text='<?xml version="1.0" encoding="utf-8"?>\n' + text)
    assert ET.parse(report).getroot().tag == "testsuite"
    regroup(report, facts_of)
    assert list(_suites(report)) == list(KINDS)


def test_an_empty_report_stays_valid(tmp_path: Path, junit_schema: Path) -> None:
    report = _report(
        tmp_path,
        text='<testsuites><testsuite name="pytest" errors="0" failures="0" skipped="0" '
        'tests="0" time="0.010"/></testsuites>',
    )
    app = tmp_path / "app.xml"
    assert regroup(report, facts_of, pipeline_files={"app": app}) == []
    root = ET.parse(report).getroot()
    assert root.findall("testsuite") == []
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("0", "0", "0")
    xmlschema.XMLSchema(junit_schema).validate(report)


def test_only_the_final_files_are_left(tmp_path: Path) -> None:
    report = _report(tmp_path)
    app, ml = tmp_path / "app.xml", tmp_path / "ml.xml"
    regroup(report, facts_of, pipeline_files={"app": app, "ml": ml})
    assert sorted(os.listdir(tmp_path)) == ["app.xml", "junit.xml", "ml.xml"]


def test_a_failed_write_keeps_the_old_report_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = _report(tmp_path)
    before = report.read_bytes()

    def refuse(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        regroup(report, facts_of)
    assert report.read_bytes() == before
    assert os.listdir(tmp_path) == ["junit.xml"]


CHILD_TAGS = ["failure", "error", "skipped", "system-out", "system-err", "rerunFailure"]


@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(CHILD_TAGS), max_size=4),
            st.one_of(st.none(), st.floats(0, 1e4, allow_nan=False).map(lambda t: f"{t:.3f}")),
        ),
        max_size=12,
    )
)
def test_a_suites_totals_are_what_junitparser_reads_of_its_cases(
    cases: list[tuple[list[str], str | None]],
) -> None:
    elements = []
    for tags, time in cases:
        attributes = {"name": "t"} if time is None else {"name": "t", "time": time}
        case = ET.Element("testcase", attributes)
        for tag in tags:
            ET.SubElement(case, tag, {"message": "m"})
        elements.append(case)
    read = [TestCase.fromelem(case) for case in elements]
    assert _totals(elements) == {
        "tests": str(len(read)),
        "failures": str(sum(case.is_failure for case in read)),
        "errors": str(sum(case.is_error for case in read)),
        "skipped": str(sum(case.is_skipped for case in read)),
        "time": f"{sum(case.time or 0.0 for case in read):.3f}",
    }
