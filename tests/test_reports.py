"""``--report-json`` and ``--report-html``: the data, the page, and the page in a browser."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.reports.html_report import render
from orchestrator.reports.run_report import SCHEMA, TestRecord, build, to_json

SUITE = {
    "test_app.py": """
import pytest

def test_ok():
    pass

def test_broken():
    assert 1 + 1 == 3, "arithmetic is off"

@pytest.mark.skip(reason="not on this platform")
def test_skipped():
    pass
""",
    "test_model.py": """
def test_accuracy(record_metric):
    record_metric("accuracy", 0.91, min=0.5)
""",
}

FLAKY = """
import os, pathlib, pytest

@pytest.mark.retries(2)
def test_flaky():
    marker = pathlib.Path(os.environ["FLAKY_MARK"])
    if not marker.exists():
        marker.write_text("failed once")
        assert False, "first attempt fails"
"""


def _report(tmp_path: Path) -> dict[str, Any]:
    tests = [
        TestRecord("t.py::test_ok", duration=0.5, worker="gw0", start=100.0, stop=100.5),
        TestRecord(
            "t.py::test_<script>alert(1)</script>",
            outcome="failed",
            duration=1.0,
            worker="gw1",
            start=100.0,
            stop=101.0,
            message="AssertionError",
            longrepr="E   AssertionError <b>not bold</b>",
        ),
        TestRecord(
            "t.py::test_flaky",
            duration=0.2,
            worker="gw0",
            start=100.6,
            stop=100.8,
            attempts=2,
            flaky=True,
            earlier=[
                {
                    "worker": "gw1",
                    "outcome": "failed",
                    "message": "boom",
                    "start": 101.1,
                    "stop": 101.2,
                }
            ],
        ),
        TestRecord(
            "m.py::test_auc",
            kind="model_performance",
            duration=2.0,
            worker="gw2",
            start=100.0,
            stop=102.0,
            metrics=[{"name": "auc", "value": 0.9, "baseline": 0.88, "history": [0.87, 0.88]}],
        ),
    ]
    return build(
        tests,
        command=["-q"],
        rootdir=str(tmp_path),
        where="a local Ray instance (2 CPUs)",
        workers=3,
        wall=2.5,
        exit_status=1,
    )


def test_json_report_counts_by_kind_and_is_strict_json(tmp_path: Path) -> None:
    report = _report(tmp_path)
    assert report["schema"] == SCHEMA
    assert report["totals"] == {
        "tests": 4,
        "passed": 3,
        "failed": 1,
        "error": 0,
        "skipped": 0,
        "xfailed": 0,
        "xpassed": 0,
        "flaky": 1,
    }
    assert [(k["kind"], k["pipeline"], k["tests"]) for k in report["kinds"]] == [
        ("unit", "app", 3),
        ("model_performance", "ml", 1),
    ]
    report["tests"][0]["metrics"] = [{"name": "x", "value": float("nan")}]
    assert json.loads(to_json(report))["tests"][0]["metrics"][0]["value"] is None


def test_html_report_escapes_and_draws_every_attempt(tmp_path: Path) -> None:
    page = render(_report(tmp_path))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page
    assert page.count('<rect class="bar') == 5  # four tests and one earlier attempt
    for section in ("summary", "timeline", "failures", "flaky", "slowest", "metrics"):
        assert f'<section id="{section}">' in page
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page


def test_plain_pytest_writes_both_reports(pytester: pytest.Pytester) -> None:
    for name, text in SUITE.items():
        pytester.path.joinpath(name).write_text(text, encoding="utf-8")
    result = pytester.runpytest_subprocess("--report-json=out/r.json", "--report-html=out/r.html")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*generated JSON report: out/r.json*"])
    report = json.loads((pytester.path / "out/r.json").read_text(encoding="utf-8"))
    tests = {t["nodeid"]: t for t in report["tests"]}
    broken = tests["test_app.py::test_broken"]
    assert broken["outcome"] == "failed" and "arithmetic is off" in broken["longrepr"]
    assert tests["test_app.py::test_skipped"]["message"] == "Skipped: not on this platform"
    assert tests["test_app.py::test_ok"]["worker"] == "main"
    assert tests["test_model.py::test_accuracy"]["metrics"][0]["value"] == 0.91
    assert report["exit_status"] == 1 and report["where"] is None
    assert (pytester.path / "out/r.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


@pytest.mark.ray_cluster
def test_ray_run_reports_workers_and_attempts(
    pytester: pytest.Pytester, on_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLAKY_MARK", str(pytester.path / "flaky-mark"))
    pytester.makepyfile(test_flaky=FLAKY, test_more="def test_more():\n    pass\n")
    result = pytester.runpytest_subprocess(
        "--ray", "--ray-workers", "2", "--report-json=r.json", "--report-html=r.html"
    )
    result.assert_outcomes(passed=2)
    report = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    flaky = next(t for t in report["tests"] if t["nodeid"] == "test_flaky.py::test_flaky")
    assert flaky["flaky"] and flaky["attempts"] == 2
    (earlier,) = flaky["earlier"]
    assert earlier["outcome"] == "failed" and "first attempt fails" in earlier["message"]
    assert earlier["worker"].startswith("gw") and earlier["start"] <= earlier["stop"]
    assert all(t["worker"].startswith("gw") for t in report["tests"])
    assert report["workers"] == 2 and "Ray cluster" in report["where"]


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def test_the_page_renders_in_a_real_browser(tmp_path: Path) -> None:
    found = _chromium()
    if found is None:
        message = "needs Debian's chromium and chromium-driver packages (.ci/run installs them)"
        if os.environ.get("ORCHESTRATOR_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    page = tmp_path / "report.html"
    page.write_text(render(_report(tmp_path)), encoding="utf-8")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    try:
        driver.get(page.as_uri())
        assert driver.title.startswith("Test report: 4 tests")
        problems = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert problems == []
        rows = driver.find_elements(By.CSS_SELECTOR, "#summary table.summary tbody tr")
        assert len(rows) == 3  # unit, model_performance, all
        chart = driver.find_element(By.ID, "timeline-chart")
        assert chart.size["width"] > 600 and chart.size["height"] > 60
        bars = driver.find_elements(By.CSS_SELECTOR, "#timeline-chart rect.bar")
        assert len(bars) == 5 and all(bar.size["width"] > 0 for bar in bars)
        failure = driver.find_element(By.CSS_SELECTOR, "#failures details.failure pre")
        assert "not bold" in failure.text and failure.is_displayed()
        assert driver.find_elements(By.CSS_SELECTOR, "#flaky details.flaky")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#slowest tbody tr")) == 4
        trend = driver.find_element(By.CSS_SELECTOR, "#metrics svg.trend polyline")
        assert trend.get_attribute("points").count(",") == 3  # two earlier values and this run
    finally:
        driver.quit()
