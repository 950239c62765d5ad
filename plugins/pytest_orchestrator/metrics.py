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
from collections.abc import Callable, Collection, Generator, Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import OrchestratorError, UsageError
from orchestrator.pipelines.metrics import (
    Gate,
    MetricPolicy,
    check_bounds,
    check_drift,
    median,
    parse_gate,
)
from orchestrator.settings import load_settings

#: Key of the baselines in a worker's ``config.workerinput`` (see :class:`Baselines`).
WORKERINPUT_KEY = "orchestrator_baselines"

_recorded_key = pytest.StashKey[list[dict[str, Any]]]()
_baselines_key = pytest.StashKey["Baselines"]()
_policy_key = pytest.StashKey[MetricPolicy]()


@dataclasses.dataclass(frozen=True)
class Baselines:
    """What ``record_metric`` compares with: each test's metrics' earlier passing values
    (one per run, oldest first) at ``ref``, and the values those were the medians of."""

    values: dict[str, dict[str, list[float]]] = dataclasses.field(default_factory=dict)
    samples: dict[str, dict[str, list[float]]] = dataclasses.field(default_factory=dict)
    #: "last", or the branch, tag or commit the values were recorded at.
    ref: str = "last"
    #: Why the baseline is not the one asked for (no run recorded there), if it is not.
    note: str | None = None

    def as_message(self) -> dict[str, Any]:
        return {"values": self.values, "samples": self.samples, "ref": self.ref}

    @classmethod
    def from_message(cls, data: Any) -> Baselines:
        return cls(data["values"], data["samples"], data["ref"])


def read_baselines(
    path: Path, window: int, ref: str, nodeids: Collection[str] | None = None
) -> Baselines:
    """The baselines in the store at ``path``: at ``ref``, else (none recorded there, or
    ``last``) the last passing runs'."""
    from orchestrator.store.history import HistoryStore

    store = HistoryStore(path)
    if ref != "last":
        values, samples, runs = store.metric_baselines_at(ref, window, nodeids)
        if runs:
            return Baselines(values, samples, ref)
        note = (
            f"no run recorded at {ref!r} in {path}; metrics are compared with the last "
            f"passing runs (record a run at {ref} first, e.g. in {ref}'s CI job)"
        )
    else:
        note = None
    values = store.metric_history(window, nodeids)
    return Baselines(values, {}, "last", note)


class MetricDriftWarning(UserWarning):
    """A metric is worse than its recorded baseline, and ``on_drift = "warn"``."""


class MetricBaselineWarning(UserWarning):
    """The baseline asked for (``--metrics-baseline REF``) has no recorded run."""


def _policy(config: pytest.Config) -> MetricPolicy:
    policy = config.stash.get(_policy_key, None)
    if policy is None:
        policy = load_settings(config.rootpath).metrics
        config.stash[_policy_key] = policy
    return policy


def _baselines(config: pytest.Config) -> Baselines:
    baselines = config.stash.get(_baselines_key, None)
    if baselines is None:
        shipped = getattr(config, "workerinput", {}).get(WORKERINPUT_KEY)
        baselines = Baselines.from_message(shipped) if shipped is not None else _read(config)
        config.stash[_baselines_key] = baselines
    return baselines


def _read(config: pytest.Config) -> Baselines:
    """A plain run's baselines, read from the store (read only)."""
    from orchestrator.config import store_path
    from orchestrator.options import DURATIONS, METRICS_BASELINE

    path = store_path(config.rootpath, config.getoption(DURATIONS.dest, None))
    ref = str(config.getoption(METRICS_BASELINE.dest, None) or "last")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = read_baselines(path, _policy(config).window, ref)
    except (OSError, OrchestratorError):
        return Baselines()
    if found.note:
        warnings.warn(MetricBaselineWarning(found.note), stacklevel=1)
    return found


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
        value: float | Sequence[float],
        higher_is_better: bool | None = None,
        min: float | None = None,
        max: float | None = None,
        *,
        rel_tolerance: float | None = None,
        abs_tolerance: float | None = None,
        drift: bool = True,
        gate: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"record_metric: name must be a non-empty string, got {name!r}")
        samples = _samples(name, value)
        value = median(samples) if len(samples) > 1 else samples[0]
        if any(m["name"] == name for m in recorded):
            raise ValueError(f"record_metric: metric {name!r} was already recorded by this test")
        policy = _policy(item.config)
        gate_text = gate if gate is not None else policy.gate_of(name)
        gated = _gate(name, gate_text, gate is not None)
        if (
            gated is not None
            and higher_is_better is not None
            and gated.higher_is_better != higher_is_better
        ):
            raise ValueError(
                f"record_metric({name!r}): the gate {gated.text} says "
                f"{'higher' if gated.higher_is_better else 'lower'} is better, but "
                f"higher_is_better={higher_is_better}; give one of them"
            )
        if higher_is_better is None:
            higher_is_better = gated.higher_is_better if gated is not None else True
        entry: dict[str, Any] = {
            "name": name,
            "value": value,
            "higher_is_better": bool(higher_is_better),
        }
        if len(samples) > 1:
            entry["samples"] = samples
        if gated is not None:
            entry["gate"] = gated.text
        recorded.append(entry)
        problem = check_bounds(name, value, min, max)
        if problem is not None:
            pytest.fail(problem, pytrace=False)
        if not math.isfinite(value) or not drift:
            return
        if rel_tolerance is not None:
            policy = dataclasses.replace(
                policy, rel_tolerance=_tolerance(name, "rel_tolerance", rel_tolerance)
            )
        if abs_tolerance is not None:
            policy = dataclasses.replace(
                policy, abs_tolerance=_tolerance(name, "abs_tolerance", abs_tolerance)
            )
        baselines = _baselines(item.config)
        found = check_drift(
            name,
            value,
            baselines.values.get(item.nodeid, {}).get(name, []),
            policy,
            higher_is_better=higher_is_better,
            gate=gated,
            samples=samples if len(samples) > 1 else (),
            baseline_samples=baselines.samples.get(item.nodeid, {}).get(name, []),
            ref=baselines.ref,
        )
        if found is None:
            return
        if policy.on_drift == "warn":
            warnings.warn(MetricDriftWarning(found.message()), stacklevel=2)
        else:
            pytest.fail(found.message(), pytrace=False)

    return record


def _samples(name: str, value: object) -> list[float]:
    """The values recorded: one number, or several (one per seed or fold)."""
    many = not isinstance(value, str | bytes) and hasattr(value, "__iter__")
    items: list[Any] = list(value) if many else [value]  # type: ignore[call-overload]
    if not items:
        raise ValueError(f"record_metric({name!r}): give at least one value")
    out = []
    for item in items:
        if isinstance(item, bool):
            raise TypeError(f"record_metric({name!r}): value must be a number, got {item!r}")
        try:
            out.append(float(item))  # numpy scalars too
        except (TypeError, ValueError):
            raise TypeError(
                f"record_metric({name!r}): value must be a number or a list of numbers "
                f"(one per seed or fold), got {item!r}"
            ) from None
    return out


def _gate(name: str, text: str | None, given: bool) -> Gate | None:
    if text is None:
        return None
    try:
        return parse_gate(text, f"record_metric({name!r})" if given else f"gates.{name}")
    except UsageError as exc:
        raise ValueError(str(exc)) from None


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
