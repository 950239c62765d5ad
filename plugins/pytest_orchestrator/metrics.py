"""The ``record_metric`` fixture: a test records model metrics, checked against bounds
and against the history of earlier runs.

A recorded metric travels on the test's call report (``report.metrics``), so it reaches
the controller with the report, goes into the JUnit report and the history store. The
baseline of each metric comes from the history store: under ``--ray`` the controller
sends it to the workers with their start-up message; in a plain pytest run the plugin
reads the store itself (read only).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Generator
from typing import Any

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.pipelines.metrics import MetricPolicy, check_bounds, check_drift
from orchestrator.settings import load_settings

#: Key of the baselines in a worker's ``config.workerinput``.
WORKERINPUT_KEY = "orchestrator_baselines"

_recorded_key = pytest.StashKey[list[dict[str, Any]]]()
_baselines_key = pytest.StashKey[dict[str, dict[str, list[float]]]]()
_policy_key = pytest.StashKey[MetricPolicy]()


class MetricDriftWarning(UserWarning):
    """A metric is worse than its recorded baseline, and ``on_drift = "warn"``."""


def _policy(config: pytest.Config) -> MetricPolicy:
    policy = config.stash.get(_policy_key, None)
    if policy is None:
        policy = load_settings(config.rootpath).metrics
        config.stash[_policy_key] = policy
    return policy


def _history(config: pytest.Config, nodeid: str) -> dict[str, list[float]]:
    baselines = config.stash.get(_baselines_key, None)
    if baselines is None:
        shipped = getattr(config, "workerinput", {}).get(WORKERINPUT_KEY)
        baselines = shipped if shipped is not None else _read_store(config)
        config.stash[_baselines_key] = baselines
    return baselines.get(nodeid, {})


def _read_store(config: pytest.Config) -> dict[str, dict[str, list[float]]]:
    from orchestrator.config import store_path
    from orchestrator.options import DURATIONS
    from orchestrator.store.history import HistoryStore

    path = store_path(config.rootpath, config.getoption(DURATIONS.dest, None))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return HistoryStore(path).metric_history(_policy(config).window)
    except (OSError, OrchestratorError):
        return {}


@pytest.fixture
def record_metric(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Record a model metric: ``record_metric(name, value, higher_is_better=True,
    min=None, max=None)``.

    A value past ``min``/``max`` fails the test. A value worse than the median of the
    last passing runs by more than the tolerance of ``[tool.orchestrator.metrics]``
    fails it too (or warns, with ``on_drift = "warn"``); ``rel_tolerance=`` and
    ``abs_tolerance=`` override the tolerance for this metric, ``drift=False`` turns the
    check off (for metrics as noisy as wall-clock latency on shared machines). Values go
    into the JUnit report and the run history.
    """
    item = request.node
    recorded = item.stash.setdefault(_recorded_key, [])

    def record(
        name: str,
        value: float,
        higher_is_better: bool = True,
        min: float | None = None,
        max: float | None = None,
        *,
        rel_tolerance: float | None = None,
        abs_tolerance: float | None = None,
        drift: bool = True,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"record_metric: name must be a non-empty string, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value)  # numpy scalars
            except (TypeError, ValueError):
                raise TypeError(
                    f"record_metric({name!r}): value must be a number, got {value!r}"
                ) from None
        value = float(value)
        if any(m["name"] == name for m in recorded):
            raise ValueError(f"record_metric: metric {name!r} was already recorded by this test")
        recorded.append({"name": name, "value": value, "higher_is_better": bool(higher_is_better)})
        problem = check_bounds(name, value, min, max)
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        if not math.isfinite(value) or not drift:
            return
        policy = _policy(item.config)
        if rel_tolerance is not None:
            policy = dataclasses.replace(
                policy, rel_tolerance=_tolerance(name, "rel_tolerance", rel_tolerance)
            )
        if abs_tolerance is not None:
            policy = dataclasses.replace(
                policy, abs_tolerance=_tolerance(name, "abs_tolerance", abs_tolerance)
            )
        history = _history(item.config, item.nodeid).get(name, [])
        found = check_drift(name, value, history, policy, higher_is_better=higher_is_better)
        if found is None:
            return
        if policy.on_drift == "warn":
            warnings.warn(MetricDriftWarning(found.message()), stacklevel=2)
        else:
            pytest.fail(found.message(), pytrace=False)

    return record


def _tolerance(name: str, key: str, given: object) -> float:
    if isinstance(given, bool) or not isinstance(given, int | float) or not given >= 0:
        raise ValueError(f"record_metric({name!r}): {key} must be a number >= 0, got {given!r}")
    return float(given)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.when == "call":
        recorded = item.stash.get(_recorded_key, None)
        if recorded:
            report.metrics = list(recorded)  # type: ignore[attr-defined]
    return report
