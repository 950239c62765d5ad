"""End to end: test kinds, resource placement, per-kind JUnit and model-metric drift."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema

PYPROJECT = """
[tool.pytest.ini_options]
addopts = "--strict-markers"

[tool.orchestrator.kinds]
integration = ["integration/**"]

[tool.orchestrator.resources]
model_performance = { fast_disk = 1 }
"""

MIXED = {
    "test_app.py": """
import os, pytest

def _seen(name):
    with open(os.environ["SEEN_FILE"], "a") as fh:
        fh.write(f"{name} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')}\\n")

@pytest.mark.parametrize("i", range(4))
def test_unit(i):
    _seen(f"unit{i}")

@pytest.mark.data_validation
def test_schema():
    _seen("schema")

@pytest.mark.resources(gpus=1)
def test_on_gpu():
    _seen("gpu")
    assert os.environ.get("CUDA_VISIBLE_DEVICES") not in (None, "")

@pytest.mark.resources(tpu=1)
def test_needs_a_tpu():
    pass
""",
    "integration/test_db.py": """
import sqlite3
def test_roundtrip(tmp_path):
    db = sqlite3.connect(tmp_path / "x.db")
    db.execute("create table t (x)")
    db.execute("insert into t values (1)")
    assert db.execute("select x from t").fetchone() == (1,)

def test_broken():
    assert 1 == 2
""",
    "ml/test_model.py": """
import pytest
pytestmark = pytest.mark.model_performance

def test_accuracy(record_metric):
    record_metric("accuracy", 0.91, min=0.5)
""",
}


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _run(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=root,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=240,
    )


def _suites(path: Path) -> dict[str, ET.Element]:
    return {s.get("name", ""): s for s in ET.parse(path).getroot().findall("testsuite")}


def _props(suite: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in suite.iter("property")}


@pytest.mark.ray_cluster
def test_kinds_placement_and_junit_per_kind(
    pytester: pytest.Pytester, on_cluster: str, junit_schema: Path
) -> None:
    root = pytester.path
    _write(root, {"pyproject.toml": PYPROJECT, **MIXED})
    seen = root / "seen.txt"
    proc = _run(
        root,
        "pytest",
        "--ray",
        "--ray-workers",
        "2",
        "-rs",
        "--junitxml",
        "report.xml",
        "--junit-pipelines",
        "reports",
        env={"SEEN_FILE": str(seen)},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # test_broken fails
    # The GPU test ran where Ray assigned the (declared) GPU. (CPU tests may run there
    # too, once the GPU tests are done.)
    where = dict(line.split() for line in seen.read_text().splitlines())
    assert where["gpu"] not in ("-", "")
    # A need no node has: skipped, naming the resource.
    assert "SKIPPED [1] test_app.py:" in out
    assert ": needs tpu=1: no node of the cluster has tpu 1 (the largest node has 0)" in out
    assert "worker(s) with gpus=1" in out and "worker(s) with fast_disk=1" in out
    # The summary has a row per kind.
    assert "tests by kind" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:1].isalpha()}
    assert rows["unit"][1:4] == ["app", "6", "5"]  # 4 unit, gpu, tpu (skipped)
    assert rows["integration"][1:5] == ["app", "2", "1", "1"]
    assert rows["data_validation"][1:4] == ["ml", "1", "1"]
    assert rows["model_performance"][1:4] == ["ml", "1", "1"]

    report = root / "report.xml"
    xmlschema.validate(str(report), str(junit_schema))
    suites = _suites(report)
    assert list(suites) == ["unit", "integration", "data_validation", "model_performance"]
    assert suites["integration"].get("tests") == "2"
    assert suites["integration"].get("failures") == "1"
    assert suites["unit"].get("skipped") == "1"
    assert ET.parse(report).getroot().get("tests") == "10"
    props = _props(suites["model_performance"])
    assert props["kind"] == "model_performance" and props["pipeline"] == "ml"
    assert props["metric:ml/test_model.py::test_accuracy:accuracy"] == "0.91"
    assert props["worker:ml/test_model.py::test_accuracy"].startswith("gw")
    # One file per pipeline, each with its own kinds only.
    app = _suites(root / "reports" / "junit-app.xml")
    ml = _suites(root / "reports" / "junit-ml.xml")
    assert list(app) == ["unit", "integration"]
    assert list(ml) == ["data_validation", "model_performance"]
    for path in (root / "reports").iterdir():
        xmlschema.validate(str(path), str(junit_schema))

    strict = _run(root, "pytest", "--ray", "--strict-resources", env={"SEEN_FILE": str(seen)})
    assert strict.returncode == pytest.ExitCode.USAGE_ERROR, strict.stdout + strict.stderr
    assert "test_app.py::test_needs_a_tpu: needs tpu=1" in strict.stderr


@pytest.mark.ray_cluster
def test_select_a_pipeline_with_the_cli(pytester: pytest.Pytester, on_cluster: str) -> None:
    root = pytester.path
    _write(root, {"pyproject.toml": PYPROJECT, **MIXED})
    proc = _run(
        root,
        "orchestrator",
        "run",
        "--kinds",
        "ml",
        "--workers",
        "2",
        env={"SEEN_FILE": str(root / "seen.txt")},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "2 passed, 8 deselected" in out
    ran = {line.split()[0] for line in (root / "seen.txt").read_text().splitlines()}
    assert ran == {"schema"}


DRIFTING = {
    "pyproject.toml": """
[tool.orchestrator.metrics]
min_history = 2
rel_tolerance = 0.05
""",
    "test_model.py": """
import os, pytest

@pytest.mark.model_performance
def test_accuracy(record_metric):
    record_metric("accuracy", float(os.environ["ACCURACY"]), min=0.5)
""",
}


@pytest.mark.ray_cluster
def test_metric_drift_against_history(pytester: pytest.Pytester, on_cluster: str) -> None:
    root = pytester.path
    _write(root, DRIFTING)
    for value in ("0.90", "0.92"):
        ok = _run(root, "orchestrator", "run", "--workers", "1", env={"ACCURACY": value})
        assert ok.returncode == 0, ok.stdout + ok.stderr
    # Worse than the median of the passing runs by more than 5%: the test fails.
    bad = _run(root, "orchestrator", "run", "--workers", "1", env={"ACCURACY": "0.80"})
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "accuracy = 0.8 is worse than its baseline 0.91" in bad.stdout
    # Within the tolerance: passes, and the failed run did not move the baseline.
    near = _run(root, "orchestrator", "run", "--workers", "1", env={"ACCURACY": "0.89"})
    assert near.returncode == 0, near.stdout + near.stderr
    # Below the fixed floor: fails whatever the history.
    floor = _run(root, "pytest", "-p", "no:cacheprovider", env={"ACCURACY": "0.4"})
    assert floor.returncode == 1
    assert "accuracy" in floor.stdout and "0.5" in floor.stdout

    history = _run(root, "orchestrator", "history", "test_accuracy")
    assert history.returncode == 0, history.stderr
    assert "accuracy" in history.stdout
    assert any(block in history.stdout for block in "▁▂▃▄▅▆▇█")
    # Every recorded value in the trend, the failing one in its place; the baseline only
    # from the passing runs (the plain pytest run recorded nothing).
    assert "outcomes  ..F." in history.stdout, history.stdout
    assert (
        "latest 0.89  baseline 0.9 (median of the last 3 passing runs)  last: 0.9, 0.92, 0.8, 0.89"
        in history.stdout
    ), history.stdout

    # on_drift = "warn": the same drift only warns, and the run passes.
    (root / "pyproject.toml").write_text(
        DRIFTING["pyproject.toml"] + 'on_drift = "warn"\n', encoding="utf-8"
    )
    warned = _run(root, "pytest", "--ray", "--ray-workers", "1", env={"ACCURACY": "0.80"})
    assert warned.returncode == 0, warned.stdout + warned.stderr
    assert "1 passed, 1 warning" in warned.stdout, warned.stdout
    assert "MetricDriftWarning: accuracy = 0.8 is worse than its baseline 0.9 " in warned.stdout


def test_kinds_without_ray(pytester: pytest.Pytester, junit_schema: Path) -> None:
    """--kinds and the per-kind report also work in a plain pytest run."""
    root = pytester.path
    _write(root, {"pyproject.toml": PYPROJECT, **MIXED})
    proc = _run(
        root,
        "pytest",
        "-p",
        "no:cacheprovider",
        "--kinds",
        "app",
        "--junitxml",
        "app.xml",
        "-k",
        "not gpu and not tpu",
        env={"SEEN_FILE": str(root / "seen.txt")},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "5 passed" in out and "1 failed" in out
    suites = _suites(root / "app.xml")
    assert list(suites) == ["unit", "integration"]
    xmlschema.validate(str(root / "app.xml"), str(junit_schema))
    bad = _run(root, "pytest", "--kinds", "mlops")
    assert bad.returncode == pytest.ExitCode.USAGE_ERROR
    assert "unknown kind or pipeline 'mlops'" in bad.stderr
