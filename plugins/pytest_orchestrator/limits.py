"""How often a test may run and for how long, from the options and the test's markers.

Retries: ``--ray-retries`` and ``--ray-retry-only``, or a test's ``retries(n)`` marker.
Time limits: a test's ``timeout`` marker, else ``--ray-timeout``; where pytest-timeout
enforces a limit in the worker itself, the controller's is a backstop a little later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from orchestrator.config import RunOptions
from orchestrator.scheduling.retry import RetryPolicy, compile_pattern

#: Seconds the controller waits past a limit that pytest-timeout enforces in the worker.
TIMEOUT_GRACE = 5.0


def retry_policy(items: Sequence[pytest.Item], options: RunOptions) -> RetryPolicy:
    """The run's retries; a ``retries`` marker sets a test's own."""
    per_test = {}
    for index, item in enumerate(items):
        marker = item.get_closest_marker("retries")
        if marker is not None:
            value = marker.args[0] if marker.args else marker.kwargs.get("n", 0)
            per_test[index] = max(0, int(value))
    return RetryPolicy(
        retries=options.retries,
        only=compile_pattern(options.retry_only),
        per_test=per_test,
    )


def time_limits(
    config: pytest.Config, items: Sequence[pytest.Item], options: RunOptions
) -> Callable[[int], float | None]:
    """The controller's hard limit for each test (by index), or None."""

    def limit(index: int) -> float | None:
        return time_limit(config, items[index], options)

    return limit


def time_limit(config: pytest.Config, item: pytest.Item, options: RunOptions) -> float | None:
    """The controller's hard limit for ``item``: its timeout marker, else
    ``--ray-timeout``. Where pytest-timeout enforces the limit itself in the worker (its
    marker, ``--timeout``, the ``timeout`` ini value), ours is a backstop
    :data:`TIMEOUT_GRACE` seconds later, for what it cannot interrupt."""
    pytest_timeout = config.pluginmanager.has_plugin("timeout")
    grace = TIMEOUT_GRACE if pytest_timeout else 0.0
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
        if value is not None:
            return float(value) + grace if float(value) else None
    if options.timeout is not None or not pytest_timeout:
        return options.timeout
    value = getattr(config.option, "timeout", None)
    if value is None:
        try:
            value = config.getini("timeout") or None
        except (ValueError, KeyError):
            value = None
    return float(value) + grace if value and float(value) else None
