"""Pure retry bookkeeping: which failed attempts run again, and what the attempts were."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Attempt:
    """One run of one test on one worker."""

    worker: str
    #: The serialized reports the worker sent (setup, call, teardown; fewer if it died).
    reports: tuple[dict[str, Any], ...]
    #: The text of each failed report, in order.
    texts: tuple[str, ...] = ()
    #: Set when the attempt ended without its reports: the worker crashed or timed out.
    lost: str | None = None
    #: "crash" or "timeout" for lost attempts.
    cause: str | None = None
    #: Three reports that passed plainly (setup, call, teardown, timings only): most
    #: attempts of most runs, which need no looking into.
    plain: bool = False

    @property
    def failed(self) -> bool:
        if self.plain:
            return False
        if self.lost is not None:
            return True
        return any(r.get("outcome") == "failed" and "wasxfail" not in r for r in self.reports)

    @property
    def rerun_in_process(self) -> bool:
        """pytest-rerunfailures ran this test on its worker (``--reruns``, the ``flaky``
        marker): it marks every report with the attempt number ``rerun``."""
        return any("rerun" in r for r in self.reports)

    @property
    def error_text(self) -> str:
        """What went wrong, as text, for ``--retry-only`` and the reports of reruns."""
        if self.lost is not None:
            return self.lost
        return "\n".join(self.texts)

    @property
    def is_error(self) -> bool:
        """Failed outside the test's call (setup, teardown, crash, timeout): an error."""
        if self.lost is not None:
            return True
        return not any(
            r.get("when") == "call" and r.get("outcome") == "failed" for r in self.reports
        )


@dataclass
class RetryPolicy:
    """``--ray-retries``/``--ray-retry-only`` plus per-test ``retries`` markers."""

    retries: int = 0
    only: re.Pattern[str] | None = None
    #: Per-test retry counts from markers, by test index.
    per_test: Mapping[int, int] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        """Can any test be retried at all?"""
        return self.retries > 0 or any(n > 0 for n in self.per_test.values())

    def allowed(self, index: int) -> int:
        return self.per_test.get(index, self.retries)

    def should_retry(self, index: int, attempts_so_far: int, attempt: Attempt) -> bool:
        """Run again after ``attempts_so_far`` attempts, the last of which is ``attempt``?

        A failure pytest-rerunfailures already reran on its worker is its verdict: only a
        crash or a timeout of such a test (which it cannot rerun there) is retried."""
        if not attempt.failed or attempts_so_far > self.allowed(index):
            return False
        if attempt.lost is None and attempt.rerun_in_process:
            return False
        return self.only is None or bool(self.only.search(attempt.error_text))


def compile_pattern(pattern: str | None) -> re.Pattern[str] | None:
    """Compile ``--retry-only``; a bad pattern is a usage error naming it."""
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        from orchestrator.errors import UsageError

        raise UsageError(
            f"--ray-retry-only {pattern!r} is not a valid regular expression: {exc}"
        ) from None
