"""Retry decisions and the JUnit records of earlier attempts (pure, no Ray)."""

from __future__ import annotations

import re

import pytest

from orchestrator.errors import UsageError
from orchestrator.reports.junit import attempt_element
from orchestrator.scheduling.retry import Attempt, RetryPolicy, compile_pattern

PASSED = ({"when": "setup", "outcome": "passed"}, {"when": "call", "outcome": "passed"})
FAILED_CALL = (
    {"when": "setup", "outcome": "passed"},
    {
        "when": "call",
        "outcome": "failed",
        "sections": [["Captured stdout call", "hello\n"], ["Captured stderr call", "oops\n"]],
    },
    {"when": "teardown", "outcome": "passed"},
)
TEXT = "def test():\n>       assert 1 == 2\nE       AssertionError: assert 1 == 2"


def test_attempt_verdicts() -> None:
    assert not Attempt("gw0", PASSED).failed
    failed = Attempt("gw0", FAILED_CALL, texts=(TEXT,))
    assert failed.failed and not failed.is_error and "AssertionError" in failed.error_text
    xfailed = Attempt("gw0", ({"when": "call", "outcome": "failed", "wasxfail": ""},))
    assert not xfailed.failed
    setup_error = Attempt("gw0", ({"when": "setup", "outcome": "failed"},))
    assert setup_error.is_error
    crash = Attempt("gw0", (), lost="worker gw0 crashed", cause="crash")
    assert crash.failed and crash.is_error and crash.error_text == "worker gw0 crashed"


def test_policy_counts_attempts_and_matches_text() -> None:
    policy = RetryPolicy(retries=2, only=re.compile("Connection"), per_test={3: 0})
    transient = Attempt("gw0", FAILED_CALL, texts=("ConnectionError: reset",))
    assert policy.should_retry(0, 1, transient)
    assert policy.should_retry(0, 2, transient)
    assert not policy.should_retry(0, 3, transient)  # 1 run + 2 retries
    assert not policy.should_retry(0, 1, Attempt("gw0", FAILED_CALL, texts=(TEXT,)))
    assert not policy.should_retry(3, 1, transient)  # its marker says no retries
    assert not policy.should_retry(0, 1, Attempt("gw0", PASSED))


def test_bad_pattern_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not a valid regular expression"):
        compile_pattern("(")
    assert compile_pattern(None) is None


def test_attempt_elements_follow_surefire() -> None:
    failed = Attempt("gw0", FAILED_CALL, texts=(TEXT,))
    flaky = attempt_element(failed, final_failed=False)
    assert flaky.tag == "flakyFailure"
    assert flaky.get("type") == "AssertionError"
    assert flaky.get("message") == "E       AssertionError: assert 1 == 2"
    assert [child.tag for child in flaky] == ["stackTrace", "system-out", "system-err"]
    assert flaky.findtext("system-out") == "hello\n"
    crash = Attempt("gw1", (), lost="worker gw1 crashed \x00 badly", cause="crash")
    rerun = attempt_element(crash, final_failed=True)
    assert rerun.tag == "rerunError" and rerun.get("type") == "WorkerCrash"
    assert "\x00" not in (rerun.findtext("stackTrace") or "")
    timeout = Attempt("gw1", (), lost="t timed out after 2 s", cause="timeout")
    assert attempt_element(timeout, final_failed=True).get("type") == "Timeout"
