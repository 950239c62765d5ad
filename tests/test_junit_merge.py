"""`orchestrator merge`: JUnit reports of several jobs or pipelines into one."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from junitparser import JUnitXml, TestCase

from orchestrator.reports.junit_merge import MergeError, expand, merge

APP = """<?xml version="1.0" encoding="utf-8"?>
<testsuite name="app" tests="3" failures="1" errors="0" skipped="1" time="1.5"
           timestamp="2026-01-01T10:00:00" hostname="job-1">
  <properties><property name="pipeline" value="app"/></properties>
  <testcase classname="tests.test_a" name="test_ok" time="0.5"/>
  <testcase classname="tests.test_a" name="test_flaky" time="0.5">
    <failure message="AssertionError: 1 != 2" type="AssertionError">E   assert 1 == 2</failure>
    <system-out>first try</system-out>
  </testcase>
  <testcase classname="tests.test_a" name="test_skip" time="0.5">
    <skipped message="not today" type="pytest.skip"/>
  </testcase>
</testsuite>
"""

ML = """<?xml version="1.0" encoding="utf-8"?>
<testsuites tests="2" failures="0" errors="1" time="4.0">
  <testsuite name="ml" tests="2" failures="0" errors="1" time="4.0"
             timestamp="2026-01-01T10:00:05">
    <testcase classname="tests.test_model" name="test_auc" time="3.0"/>
    <testcase classname="tests.test_model" name="test_data" time="1.0">
      <error message="fixture broke" type="RuntimeError">Traceback ...</error>
    </testcase>
  </testsuite>
</testsuites>
"""

RETRIED = """<?xml version="1.0" encoding="utf-8"?>
<testsuite name="app" tests="1" failures="0" errors="0" time="0.7"
           timestamp="2026-01-01T11:00:00">
  <testcase classname="tests.test_a" name="test_flaky" time="0.7"/>
</testsuite>
"""


def _write(tmp_path: Path, **files: str) -> dict[str, Path]:
    paths = {}
    for name, text in files.items():
        path = tmp_path / f"{name}.xml"
        path.write_text(text, encoding="utf-8")
        paths[name] = path
    return paths


def _cases(path: Path) -> dict[str, ET.Element]:
    """Each test case as written, with Surefire's elements that junitparser does not read."""
    return {c.get("name", ""): c for c in ET.parse(path).getroot().iter("testcase")}


def _read(path: Path) -> dict[str, TestCase]:
    """Each test case as junitparser reads it, as do the CI tools that use it."""
    return {case.name: case for suite in JUnitXml.fromfile(str(path)) for case in suite}


def test_suites_of_both_root_kinds_are_merged_flat_with_totals(
    tmp_path: Path, junit_schema: Path
) -> None:
    files = _write(tmp_path, app=APP, ml=ML)
    out = tmp_path / "merged.xml"
    result = merge(out, [files["app"], files["ml"]])
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["app", "ml"]
    assert not root.findall("testsuite/testsuite")  # nothing nested
    app, ml = suites
    assert (app.get("tests"), app.get("failures"), app.get("skipped")) == ("3", "1", "1")
    assert (ml.get("tests"), ml.get("errors")) == ("2", "1")
    assert app.find("properties/property").attrib == {"name": "pipeline", "value": "app"}
    read = {suite.name: suite for suite in JUnitXml.fromfile(str(out))}
    assert {name: len(suite) for name, suite in read.items()} == {"app": 3, "ml": 2}
    assert [(p.name, p.value) for p in read["app"].properties()] == [("pipeline", "app")]
    assert app.get("hostname") == "job-1"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "1", "1")
    assert float(root.get("time", "")) == pytest.approx(5.5)
    assert (result.tests, result.skipped, result.duplicates) == (5, 1, 0)
    xmlschema.XMLSchema(junit_schema).validate(out)


def test_wall_time_is_the_longest_input(tmp_path: Path) -> None:
    files = _write(tmp_path, app=APP, ml=ML)
    out = tmp_path / "merged.xml"
    merge(out, [files["app"], files["ml"]], time="wall")
    assert float(ET.parse(out).getroot().get("time", "")) == pytest.approx(4.0)


def test_a_retried_job_keeps_the_final_attempt_and_the_earlier_failure(
    tmp_path: Path, junit_schema: Path
) -> None:
    files = _write(tmp_path, app=APP, retried=RETRIED)
    out = tmp_path / "merged.xml"
    # Given in the "wrong" order: the suite timestamps say which attempt came last.
    result = merge(out, [files["retried"], files["app"]])
    assert result.duplicates == 1 and result.tests == 3 and result.failures == 0
    flaky = _cases(out)["test_flaky"]
    assert flaky.find("failure") is None and flaky.get("time") == "0.7"
    assert _read(out)["test_flaky"].is_passed  # the earlier failure is no failure of the run
    earlier = flaky.find("flakyFailure")
    assert earlier is not None
    assert earlier.get("message") == "AssertionError: 1 != 2"
    assert earlier.findtext("stackTrace") == "E   assert 1 == 2"
    assert earlier.findtext("system-out") == "first try"
    suite = ET.parse(out).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    xmlschema.XMLSchema(junit_schema).validate(out)


def test_a_test_failing_in_every_attempt_keeps_its_failure_and_reruns(tmp_path: Path) -> None:
    again = APP.replace("2026-01-01T10:00:00", "2026-01-01T12:00:00")
    files = _write(tmp_path, first=APP, second=again)
    out = tmp_path / "merged.xml"
    merge(out, [files["first"], files["second"]])
    flaky = _cases(out)["test_flaky"]
    assert [child.tag for child in flaky] == ["failure", "rerunFailure", "system-out"]
    assert _read(out)["test_flaky"].is_failure


def test_globs_expand_in_order_and_a_pattern_matching_nothing_is_an_error(
    tmp_path: Path,
) -> None:
    _write(tmp_path, b_app=APP, a_ml=ML)
    paths = expand([str(tmp_path / "*.xml")])
    assert [p.name for p in paths] == ["a_ml.xml", "b_app.xml"]
    with pytest.raises(MergeError, match=r"nothing\*\.xml: no such file"):
        expand([str(tmp_path / "nothing*.xml")])


def test_malformed_input_names_file_line_and_column_and_writes_nothing(tmp_path: Path) -> None:
    broken = APP.replace('<testcase classname="tests.test_a" name="test_ok" time="0.5"/>', "<x>")
    files = _write(tmp_path, app=ML, broken=broken)
    out = tmp_path / "merged.xml"
    out.write_text("previous report", encoding="utf-8")
    with pytest.raises(MergeError) as caught:
        merge(out, [files["app"], files["broken"]])
    message = str(caught.value)
    assert message.startswith(f"{files['broken']}:")
    line, column = message.split(":")[1:3]
    assert line.isdigit() and column.isdigit()
    assert "not well-formed" in message or "mismatched tag" in message
    assert out.read_text(encoding="utf-8") == "previous report"
    assert list(tmp_path.glob(".merged.xml.*")) == []


@pytest.mark.parametrize(
    "payload",
    [
        # Exponential entity expansion ("billion laughs").
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n'
        '<testsuite name="x" tests="1" failures="0" errors="0">'
        '<testcase name="t">&lol3;</testcase></testsuite>',
        # An external entity reading a local file.
        '<?xml version="1.0"?>\n<!DOCTYPE t [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
        '<testsuite name="x" tests="1" failures="0" errors="0">'
        '<testcase name="t">&secret;</testcase></testsuite>',
    ],
    ids=["billion-laughs", "external-entity"],
)
def test_entity_payloads_are_refused_not_expanded(tmp_path: Path, payload: str) -> None:
    files = _write(tmp_path, evil=payload)
    out = tmp_path / "merged.xml"
    with pytest.raises(MergeError, match="document type declaration"):
        merge(out, [files["evil"]])
    assert not out.exists()


def test_a_file_that_is_not_junit_is_named(tmp_path: Path) -> None:
    files = _write(tmp_path, other='<?xml version="1.0"?><html><body/></html>')
    with pytest.raises(MergeError, match=r"other\.xml: the root element is <html>"):
        merge(tmp_path / "out.xml", [files["other"]])


def test_many_cases_merge_with_counts_intact(tmp_path: Path) -> None:
    def shard(k: int) -> str:
        cases = "".join(
            f'<testcase classname="tests.test_{k}" name="test_{i}" time="0.001"/>'
            for i in range(5000)
        )
        return f'<testsuite name="pytest" tests="5000" failures="0" errors="0">{cases}</testsuite>'

    files = _write(tmp_path, **{f"shard{k}": shard(k) for k in range(4)})
    out = tmp_path / "merged.xml"
    result = merge(out, list(files.values()))
    assert result.tests == 20000 and result.suites == 1
    assert len(_cases(out)) == 5000  # names repeat across classes; all 20000 are there:
    assert sum(len(suite) for suite in JUnitXml.fromfile(str(out))) == 20000


def test_the_command_reports_and_fails_clearly(tmp_path: Path) -> None:
    _write(tmp_path, app=APP, ml=ML, broken="<testsuite")
    ok = subprocess.run(
        [sys.executable, "-m", "orchestrator", "merge", "out.xml", "app.xml", "ml.xml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert "merged 2 file(s) into out.xml: 5 tests in 2 suite(s)" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "orchestrator", "merge", "out2.xml", "*.xml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 4
    assert "broken.xml:1:" in bad.stderr and not (tmp_path / "out2.xml").exists()


def test_file_and_line_attributes_survive_for_timing_based_splitters(tmp_path: Path) -> None:
    # pytest writes them with junit_family=xunit1; CircleCI's timing split reads "file".
    xunit1 = APP.replace(
        'name="test_ok" time="0.5"', 'name="test_ok" file="tests/test_a.py" line="3" time="0.5"'
    )
    files = _write(tmp_path, app=xunit1)
    out = tmp_path / "merged.xml"
    merge(out, [files["app"]])
    case = _cases(out)["test_ok"]
    assert (case.get("file"), case.get("line")) == ("tests/test_a.py", "3")
