"""Model gates: named baselines (a branch, a tag, a commit), gates, several values per metric."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.cli import main
from orchestrator.config import STORE_ENV
from orchestrator.errors import UsageError
from orchestrator.pipelines.metrics import (
    Gate,
    MetricPolicy,
    bootstrap_interval,
    check_drift,
    parse_gate,
)
from orchestrator.store.history import HistoryStore, MetricRecord, TestResult, current_branch

ROOT = Path(__file__).resolve().parents[1]


# -- gates -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "gate"),
    [
        ("-1%", Gate("-1%", 0.01, True, True)),
        ("-0.02", Gate("-0.02", 0.02, False, True)),
        ("+10ms", Gate("+10ms", 0.01, False, False)),
        ("+2s", Gate("+2s", 2.0, False, False)),
        ("+ 250us", Gate("+ 250us", 0.00025, False, False)),
        (" -.5% ", Gate("-.5%", 0.005, True, True)),
    ],
)
def test_a_gate_reads_its_direction_amount_and_unit(text: str, gate: Gate) -> None:
    parsed = parse_gate(text, "here")
    assert parsed.text == gate.text and parsed.relative == gate.relative
    assert parsed.higher_is_better == gate.higher_is_better
    assert parsed.amount == pytest.approx(gate.amount)


@pytest.mark.parametrize("text", ["1%", "-", "-x%", "+10 minutes", "--1", 5, None])
def test_a_gate_without_a_sign_or_number_says_what_to_write(text: object) -> None:
    with pytest.raises(UsageError, match=r"here: gate .* is not valid; expected a signed change"):
        parse_gate(text, "here")


def test_gates_in_pyproject_are_checked_when_read() -> None:
    policy = MetricPolicy.from_mapping({"gates": {"auc": "-1%"}, "confidence": 0.9})
    assert policy.gate_of("auc") == "-1%" and policy.gate_of("loss") is None
    with pytest.raises(UsageError, match=r"gates\.loss: gate 'down' is not valid"):
        MetricPolicy.from_mapping({"gates": {"loss": "down"}})
    with pytest.raises(UsageError, match=r"confidence = 1\.5 is not valid"):
        MetricPolicy.from_mapping({"confidence": 1.5})


def test_a_gate_sets_the_tolerance_of_a_single_value() -> None:
    policy = MetricPolicy(min_history=1)
    history = [0.90, 0.90, 0.90]
    drop = parse_gate("-1%", "t")
    assert check_drift("auc", 0.895, history, policy, gate=drop) is None  # 0.56% < 1%
    drift = check_drift("auc", 0.88, history, policy, gate=drop, ref="main")
    assert drift is not None
    message = drift.message()
    assert "median of the last 3 passing runs at main" in message
    assert "tolerance 0.009 = the gate -1%" in message
    rise = parse_gate("+10ms", "t")
    assert check_drift("latency", 0.059, [0.05], policy, higher_is_better=False, gate=rise) is None
    assert check_drift("latency", 0.061, [0.05], policy, higher_is_better=False, gate=rise)


# -- several values: noise-aware ---------------------------------------------------------
def test_the_bootstrap_interval_is_repeatable_and_centred_on_the_difference() -> None:
    base = [0.90, 0.91, 0.89, 0.90, 0.92, 0.88]
    shifted = [v - 0.05 for v in base]
    lo, hi = bootstrap_interval(shifted, base, 0.95)
    assert (lo, hi) == bootstrap_interval(shifted, base, 0.95)
    assert lo <= -0.05 <= hi and hi < 0
    lo, hi = bootstrap_interval(base, base, 0.95)
    assert lo <= 0 <= hi


def test_a_drop_inside_the_noise_passes_and_a_clear_one_fails_with_its_interval() -> None:
    policy = MetricPolicy(min_history=3)
    gate = parse_gate("-1%", "t")
    baseline = [0.85, 0.95, 0.88, 0.93, 0.90]  # seeds spread widely around 0.90
    noisy = [0.83, 0.94, 0.86, 0.92, 0.88]  # median 0.88: 2.2% lower, within the noise
    assert check_drift("auc", 0.88, [0.90], policy, gate=gate) is None  # too few runs alone
    kwargs = {"gate": gate, "baseline_samples": baseline}
    assert check_drift("auc", 0.88, [0.90], policy, samples=noisy, **kwargs) is None
    clear = [0.80, 0.81, 0.79, 0.80, 0.82]
    drift = check_drift("auc", 0.80, [0.90], policy, samples=clear, **kwargs)
    assert drift is not None and drift.interval is not None
    assert drift.interval[0] > gate.tolerance(0.90)
    assert "95% confidence interval of the difference of medians" in drift.message()


values_st = st.lists(
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=2, max_size=12
)


@settings(max_examples=60, deadline=None)
@given(values_st, st.sampled_from(["-1%", "-0.02", "-0%"]))
def test_the_same_values_as_the_baseline_never_fail_a_gate(values: list[float], text: str) -> None:
    gate = parse_gate(text, "t")
    policy = MetricPolicy(min_history=1)
    from statistics import median

    found = check_drift(
        "m",
        median(values),
        [median(values)],
        policy,
        gate=gate,
        samples=values,
        baseline_samples=values,
    )
    assert found is None


@settings(max_examples=60, deadline=None)
@given(values_st, values_st)
def test_a_significant_failure_is_always_beyond_the_gate_at_the_point_too(
    current: list[float], baseline: list[float]
) -> None:
    from statistics import median

    gate = parse_gate("-0.01", "t")
    policy = MetricPolicy(min_history=1)
    found = check_drift(
        "m",
        median(current),
        [median(baseline)],
        policy,
        gate=gate,
        samples=current,
        baseline_samples=baseline,
    )
    if found is not None:
        assert found.interval is not None and found.interval[0] > 0.01
        assert found.worse_by > 0.01  # the medians' own drop lies inside the interval


# -- the history at a ref ------------------------------------------------------------------
def test_baselines_at_a_branch_a_tag_or_a_commit(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "s.db")
    result = [TestResult("t.py::m", "passed", 0.1)]

    def run(value: float, branch: str, tag: str | None, commit: str, passed: bool = True) -> None:
        metric = MetricRecord("t.py::m", "auc", value, passed=passed, samples=(value, value + 1))
        store.record_run(result, [metric], commit=commit, branch=branch, tag=tag)

    run(0.90, "main", None, "a" * 40)
    run(0.91, "main", "v1.0", "b" * 40)
    run(0.50, "main", None, "c" * 40, passed=False)  # failing runs form no baseline
    run(0.70, "feature", None, "d" * 40)
    values, samples, runs = store.metric_baselines_at("main", 10)
    assert (values, runs) == ({"t.py::m": {"auc": [0.90, 0.91]}}, 3)
    assert samples["t.py::m"]["auc"] == pytest.approx([0.90, 1.90, 0.91, 1.91])
    assert store.metric_baselines_at("v1.0", 10)[0] == {"t.py::m": {"auc": [0.91]}}
    assert store.metric_baselines_at("bbbbbbb", 10)[0] == {"t.py::m": {"auc": [0.91]}}
    assert store.metric_baselines_at("bbb", 10)[2] == 0  # too short to name a commit
    assert store.metric_baselines_at("release", 10) == ({}, {}, 0)
    assert store.latest_metrics()[("t.py::m", "auc")].value == 0.70


def test_an_older_store_gets_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL,"
            " revision TEXT, wall REAL, workers INTEGER, tests INTEGER NOT NULL,"
            " failed INTEGER NOT NULL)"
        )
        conn.execute("INSERT INTO runs (started, tests, failed) VALUES (1.0, 0, 0)")
    store = HistoryStore(path)
    store.record_run([TestResult("t.py::a", "passed", 0.1)], branch="main", tag="v2")
    assert store.metric_baselines_at("main", 10)[2] == 1
    assert store.run_count() == 2


def test_the_branch_comes_from_git_or_from_the_ci_job(tmp_path: Path) -> None:
    assert current_branch(tmp_path, {"GITHUB_REF_NAME": "main"}) == "main"
    assert current_branch(tmp_path, {"GIT_BRANCH": "origin/release"}) == "release"
    assert current_branch(tmp_path, {}) is None
    _git(tmp_path, "init", "-q", "-b", "trunk")
    assert current_branch(tmp_path, {"GITHUB_REF_NAME": "main"}) == "trunk"


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


# -- runs ----------------------------------------------------------------------------------
MODEL = """
import os

def test_auc(record_metric):
    centre = float(os.environ.get("AUC", "0.90"))
    record_metric("auc", [centre + d for d in (-0.004, -0.002, 0.0, 0.002, 0.004)], gate="-1%")

def test_latency(record_metric):
    record_metric("latency", float(os.environ.get("LATENCY", "0.050")))
"""
PYPROJECT = """
[tool.orchestrator.metrics]
min_history = 1

[tool.orchestrator.metrics.gates]
latency = "+10ms"
"""


def test_a_branch_is_gated_against_main_and_history_compares_them(
    pytester: pytest.Pytester, on_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A git repository: runs on main record the baseline; on a feature branch a model that
    is worse than main's beyond its gates fails, against main, with the interval."""
    for name in ("GITHUB_REF_NAME", "GITHUB_HEAD_REF", "CI_COMMIT_BRANCH", "GIT_BRANCH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(STORE_ENV, raising=False)
    pytester.makepyprojecttoml(PYPROJECT)
    pytester.makepyfile(test_model=MODEL)
    root = pytester.path
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "a model")
    args = ("--ray", "--ray-workers", "2", "-p", "no:cacheprovider")
    assert pytester.runpytest_subprocess(*args, timeout=240).ret == 0  # main's baseline
    _git(root, "checkout", "-q", "-b", "feature")
    monkeypatch.setenv("AUC", "0.85")
    monkeypatch.setenv("LATENCY", "0.065")
    result = pytester.runpytest_subprocess(*args, "--metrics-baseline", "main", timeout=240)
    assert result.ret == 1
    result.stdout.fnmatch_lines(
        [
            "*auc = 0.85 is worse than its baseline 0.9 (median of the last 1 passing runs at "
            "main)*tolerance 0.009 = the gate -1%; worse by * to * (95% confidence interval*",
            "*latency = 0.065 is worse than its baseline 0.05 (*at main) by 0.015*the gate +10ms*",
        ]
    )
    # Within the gates the branch passes against main.
    monkeypatch.setenv("AUC", "0.899")
    monkeypatch.setenv("LATENCY", "0.055")
    result = pytester.runpytest_subprocess(*args, "--metrics-baseline", "main", timeout=240)
    assert result.ret == 0, result.stdout.str()
    # A ref with no run: said, and the last passing runs are the baseline.
    result = pytester.runpytest_subprocess(*args, "--metrics-baseline", "v9", timeout=240)
    result.stdout.fnmatch_lines(
        ["orchestrator: no run recorded at 'v9'*uses*"]
        if False
        else ["orchestrator: no run recorded at 'v9'*compared with the last passing runs*"]
    )
    monkeypatch.chdir(root)
    assert main(["history", "--compare", "main"]) == 0


def test_history_compare_prints_each_metric_against_the_ref(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORE_ENV, raising=False)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    store = HistoryStore(tmp_path / ".orchestrator" / "durations.db")
    ok = [TestResult("t.py::m", "passed", 0.1)]
    for value, branch in [(0.90, "main"), (0.92, "main"), (0.80, "feature")]:
        store.record_run(ok, [MetricRecord("t.py::m", "auc", value, gate="-1%")], branch=branch)
        store.record_run(
            ok,
            [MetricRecord("t.py::m", "latency", 0.05, higher_is_better=False)],
            branch=branch,
        )
    assert main(["history", "--compare", "main"]) == 0
    out = capsys.readouterr().out
    assert "metrics against main (4 run(s) recorded there" in out
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert "0.91" in lines["auc"] and "0.8" in lines["auc"]
    assert "-0.11 (-12.1%)" in lines["auc"] and "worse (beyond the gate -1%)" in lines["auc"]
    assert "ok (gate +10ms)" in lines["latency"]
    assert main(["history", "--compare", "nowhere"]) == 1
    assert "no run recorded at 'nowhere'" in capsys.readouterr().err


def test_record_metric_refuses_a_gate_that_contradicts_its_direction(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_contradiction(record_metric):
            with pytest.raises(ValueError, match="the gate -1% says higher is better"):
                record_metric("loss", 0.3, higher_is_better=False, gate="-1%")

        def test_bad_gate(record_metric):
            with pytest.raises(ValueError, match="gate 'lower' is not valid"):
                record_metric("loss", 0.3, gate="lower")

        def test_no_values(record_metric):
            with pytest.raises(ValueError, match="give at least one value"):
                record_metric("auc", [])

        def test_seeds(record_metric, request):
            record_metric("auc", [0.9, 0.8, 0.85])
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--report-json=r.json")
    result.assert_outcomes(passed=4)
    import json

    tests = json.loads((pytester.path / "r.json").read_text())["tests"]
    seeds = next(t for t in tests if t["nodeid"].endswith("test_seeds"))
    assert seeds["metrics"][0]["value"] == 0.85  # the median of the seeds


def test_the_examples_model_is_gated_against_main_in_a_repository_made_here(
    pytester: pytest.Pytester, on_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled example's cross-validated AUC (five folds, gate -2%): recorded on main,
    then a branch that trains on noisier labels fails against main, with the interval."""
    pytest.importorskip("sklearn")
    for name in ("GITHUB_REF_NAME", "GITHUB_HEAD_REF", "CI_COMMIT_BRANCH", "GIT_BRANCH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("EXAMPLES_LABEL_NOISE", raising=False)
    root = pytester.path
    shutil.copytree(
        ROOT / "examples", root / "examples", ignore=shutil.ignore_patterns("__pycache__")
    )
    pytester.makepyprojecttoml("[tool.orchestrator.metrics]\nwindow = 10\n")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "the churn model")
    test = "examples/ml/model_performance/test_logistic_regression.py"
    args = ("--ray", "--ray-workers", "1", "-p", "no:cacheprovider", test, "-k", "cross_valid")
    main_run = pytester.runpytest_subprocess(*args, timeout=240)
    assert main_run.ret == 0, main_run.stdout.str()
    _git(root, "checkout", "-q", "-b", "noisy-labels")
    same = pytester.runpytest_subprocess(*args, "--metrics-baseline", "main", timeout=240)
    assert same.ret == 0, same.stdout.str()  # the same model passes against main
    monkeypatch.setenv("EXAMPLES_LABEL_NOISE", "0.03")
    worse = pytester.runpytest_subprocess(*args, "--metrics-baseline", "main", timeout=240)
    assert worse.ret == 1, worse.stdout.str()
    worse.stdout.fnmatch_lines(
        [
            "*cv_roc_auc = * is worse than its baseline * (median of the last 1 passing runs "
            "at main)*the gate -2%; worse by * to * (95% confidence interval*",
        ]
    )
