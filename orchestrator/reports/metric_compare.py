"""What ``orchestrator history --compare REF`` prints: every metric's newest value against
its baseline at a branch, tag or commit, with the verdict a run would give."""

from __future__ import annotations

from orchestrator.errors import OrchestratorError
from orchestrator.pipelines.metrics import MetricPolicy, check_drift, fmt, median, parse_gate
from orchestrator.store.history import HistoryStore


def compare_lines(store: HistoryStore, ref: str, policy: MetricPolicy) -> list[str]:
    """One line per recorded metric: its baseline at ``ref`` (the median of the passing
    runs recorded there), its newest value, the difference and the verdict under the
    project's tolerance or gate. Raises :class:`OrchestratorError` where ``ref`` has no
    recorded run."""
    values, samples, runs = store.metric_baselines_at(ref, policy.window)
    if not runs:
        raise OrchestratorError(
            f"no run recorded at {ref!r} in {store.path}; a run records its branch, tag and "
            "commit: run the suite there first (in its CI job), or compare with another ref"
        )
    latest = store.latest_metrics()
    if not latest:
        return [f"no metric recorded in {store.path}"]
    rows = [("test", "metric", f"baseline at {ref}", "current", "change", "verdict")]
    for (nodeid, name), (value, current, passed, higher, recorded_gate) in sorted(latest.items()):
        base_values = values.get(nodeid, {}).get(name, [])
        if not base_values:
            rows.append((nodeid, name, "-", fmt(value), "-", f"no passing run at {ref}"))
            continue
        base = median(base_values)
        change = fmt(value - base) + (f" ({(value - base) / abs(base):+.1%})" if base else "")
        gate_text = recorded_gate or policy.gate_of(name)
        gate = parse_gate(gate_text, f"gates.{name}") if gate_text else None
        drift = check_drift(
            name,
            value,
            base_values,
            policy,
            higher_is_better=gate.higher_is_better if gate else higher,
            gate=gate,
            samples=current if len(current) > 1 else (),
            baseline_samples=samples.get(nodeid, {}).get(name, []),
            ref=ref,
        )
        rule = f"gate {gate.text}" if gate else "tolerance"
        verdict = f"worse (beyond the {rule})" if drift is not None else f"ok ({rule})"
        if not passed:
            verdict += "; the test failed"
        rows.append((nodeid, name, fmt(base), fmt(value), change, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(1, 6)]
    lines = [
        f"metrics against {ref} ({runs} run(s) recorded there; current: each metric's newest "
        f"recorded value) in {store.path}"
    ]
    for row in rows:
        cells = "  ".join(cell.ljust(width) for cell, width in zip(row[1:], widths, strict=True))
        lines.append(f"  {cells}  {row[0]}")
    return lines
