"""The HTML report: one self-contained page (no network, no script) rendered from the run's
JSON report (see :mod:`orchestrator.reports.run_report`).

Sections: the summary per kind and pipeline, failures with their tracebacks, flaky tests
with their attempts, the slowest tests, the model metrics with their trends, and a timeline
per worker (an SVG Gantt chart) showing what ran where and when, and where workers idled.
Hovering a bar shows its test (SVG ``<title>``); nothing needs JavaScript.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: Bar colours by outcome; "retry" marks earlier attempts of retried tests.
COLOURS = {
    "passed": "#3a9d5d",
    "failed": "#d64545",
    "error": "#b5179e",
    "skipped": "#c9a227",
    "xfailed": "#8d99ae",
    "xpassed": "#f77f00",
    "retry": "#f4a6a6",
}
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
SLOWEST = 15

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2430}
header{background:#1d2430;color:#fff;padding:16px 24px}
header h1{margin:0 0 4px;font-size:20px}
main{padding:8px 24px 40px;max-width:1400px}
section{margin-top:28px}
h2{font-size:17px;border-bottom:1px solid #d5d9e0;padding-bottom:4px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #eceef2;text-align:right}
th:first-child,td:first-child,td.name{text-align:left}
span.name{display:block;text-align:left;font-family:ui-monospace,monospace;font-size:12.5px;
word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;color:#fff;font-size:12px}
details{margin:6px 0;border:1px solid #e1e4ea;border-radius:6px;padding:6px 10px}
summary{cursor:pointer;font-family:ui-monospace,monospace;font-size:13px}
pre{background:#f6f7f9;padding:10px;overflow-x:auto;font-size:12px;max-height:480px}
.muted{color:#68707d}
.legend span{margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
svg text{font:11px ui-monospace,monospace;fill:#1d2430}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _seconds(value: float) -> str:
    if value >= 60:
        return f"{int(value // 60)}m{value % 60:04.1f}s"
    return f"{value:.2f}s"


def _badge(outcome: str) -> str:
    colour = COLOURS.get(outcome, "#68707d")
    return f'<span class="badge" style="background:{colour}">{_e(outcome)}</span>'


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    out = [f'<table class="{cls}"><thead><tr>']
    out += [f"<th>{_e(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _summary(report: Mapping[str, Any]) -> str:
    totals = report["totals"]
    rows = []
    for kind in report["kinds"]:
        rows.append(
            [
                _e(kind["kind"]),
                _e(kind["pipeline"]),
                str(kind["tests"]),
                *(str(kind.get(o, 0)) for o in OUTCOMES),
                str(kind["flaky"]),
                _seconds(kind["seconds"]),
            ]
        )
    rows.append(
        [
            "<b>all</b>",
            "",
            f"<b>{totals['tests']}</b>",
            *(f"<b>{totals.get(o, 0)}</b>" for o in OUTCOMES),
            f"<b>{totals['flaky']}</b>",
            _seconds(sum(k["seconds"] for k in report["kinds"])),
        ]
    )
    head = ["kind", "pipeline", "tests", *OUTCOMES, "flaky", "time"]
    return (
        '<section id="summary"><h2>Summary by kind and pipeline</h2>'
        + _table(head, rows, "summary")
        + "</section>"
    )


def _workers(report: Mapping[str, Any]) -> str:
    """Workers replaced during the run: recycled at their limit, or lost."""
    rows = [["recycled", _e(entry)] for entry in report.get("recycled_workers", ())]
    rows += [["lost", _e(entry)] for entry in report.get("lost_workers", ())]
    if not rows:
        return ""
    return (
        '<section id="workers"><h2>Workers replaced</h2>'
        + _table(["why", "worker"], rows)
        + "</section>"
    )


def _failures(tests: Sequence[Mapping[str, Any]]) -> str:
    failed = [t for t in tests if t["outcome"] in ("failed", "error")]
    if not failed:
        body = '<p class="muted">No failures.</p>'
    else:
        parts = []
        for test in failed:
            where = f" on {_e(test['worker'])}" if test.get("worker") else ""
            parts.append(
                f'<details class="failure" open><summary>{_badge(test["outcome"])} '
                f"{_e(test['nodeid'])}{where}</summary>"
                f"<pre>{_e(test.get('longrepr') or test.get('message') or '')}</pre></details>"
            )
        body = "".join(parts)
    return f'<section id="failures"><h2>Failures ({len(failed)})</h2>{body}</section>'


def _flaky(tests: Sequence[Mapping[str, Any]]) -> str:
    retried = [t for t in tests if t.get("earlier")]
    if not retried:
        body = '<p class="muted">No test needed a retry.</p>'
    else:
        parts = []
        for test in retried:
            label = "flaky" if test["flaky"] else "failed every attempt"
            rows = [
                [
                    str(n),
                    _badge(a["outcome"]),
                    _e(a.get("worker") or ""),
                    _e((a.get("message") or "").splitlines()[0][:200] if a.get("message") else ""),
                ]
                for n, a in enumerate(test["earlier"], start=1)
            ]
            rows.append(
                [str(len(test["earlier"]) + 1), _badge(test["outcome"]), _e(test["worker"]), ""]
            )
            parts.append(
                f'<details class="flaky"><summary>{_e(test["nodeid"])} ({label}, '
                f"{test['attempts']} attempts)</summary>"
                + _table(["attempt", "outcome", "worker", "message"], rows)
                + "</details>"
            )
        body = "".join(parts)
    return f'<section id="flaky"><h2>Flaky and retried tests ({len(retried)})</h2>{body}</section>'


def _flake_history(report: Mapping[str, Any]) -> str:
    found = report.get("flake_history") or []
    if not found:
        return ""
    rows = [
        [
            _e(test["nodeid"]),
            f"{test['rate']:.0%} ({test['flaked']}/{test['runs']})",
            sparkline_svg(test.get("series") or [0.0]),
            _e(f"quarantined: {test['quarantined']}" if test.get("quarantined") else ""),
        ]
        for test in found
    ]
    return (
        '<section id="flake-history"><h2>Flaky tests over their recorded runs '
        f"({len(found)})</h2>"
        + _table(["test", "flake rate", "rate over time (oldest left)", "quarantine"], rows)
        + "</section>"
    )


def _slowest(tests: Sequence[Mapping[str, Any]]) -> str:
    slow = sorted(tests, key=lambda t: -t["duration"])[:SLOWEST]
    rows = [
        [_seconds(t["duration"]), f'<span class="name">{_e(t["nodeid"])}</span>', _e(t["kind"])]
        for t in slow
    ]
    return (
        f'<section id="slowest"><h2>Slowest tests</h2>'
        f"{_table(['time', 'test', 'kind'], rows, 'slowest')}</section>"
    )


def sparkline_svg(values: Sequence[float], width: int = 140, height: int = 28) -> str:
    """A small line chart of ``values`` (oldest first), the last point marked."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or 1.0
    step = width / max(1, len(values) - 1)
    points = []
    for i, v in enumerate(values):
        if math.isfinite(v):
            y = height - 3 - (v - lo) / span * (height - 6)
            points.append((i * step if len(values) > 1 else width / 2, y))
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    x, y = points[-1]
    return (
        f'<svg class="trend" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<polyline fill="none" stroke="#3366cc" stroke-width="1.5" points="{path}"/>'
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#d64545"/></svg>'
    )


def _metrics(tests: Sequence[Mapping[str, Any]], ref: str) -> str:
    rows = []
    for test in tests:
        for metric in test.get("metrics", ()):
            history = list(metric.get("history", ()))
            baseline = metric.get("baseline")
            change = ""
            if baseline is not None:
                change = f"{metric['value'] - baseline:+.4g}"
                if baseline:
                    change += f" ({(metric['value'] - baseline) / abs(baseline):+.1%})"
            rows.append(
                [
                    f'<span class="name">{_e(test["nodeid"])}</span>',
                    _e(metric["name"]),
                    f"{metric['value']:.4g}",
                    "" if baseline is None else f"{baseline:.4g}",
                    _e(change),
                    sparkline_svg([*history, metric["value"]]),
                    _badge(test["outcome"]),
                ]
            )
    at = "the last passing runs" if ref == "last" else ref
    if not rows:
        body = '<p class="muted">No test recorded a metric (record_metric).</p>'
    else:
        head = ["test", "metric", "value", f"baseline ({at})", "change", "trend", "verdict"]
        body = _table(head, rows, "metrics")
    return f'<section id="metrics"><h2>Model metrics against {_e(at)}</h2>{body}</section>'


def timeline_svg(report: Mapping[str, Any], width: int = 1200) -> str:
    """One row per worker, one bar per test (earlier attempts of retried tests too)."""
    spans: list[tuple[str, float, float, str, str]] = []
    for test in report["tests"]:
        if test.get("start") is not None and test.get("worker"):
            spans.append(
                (test["worker"], test["start"], test["stop"], test["outcome"], test["nodeid"])
            )
        for attempt in test.get("earlier", ()):
            if attempt.get("start") is not None and attempt.get("worker"):
                spans.append(
                    (attempt["worker"], attempt["start"], attempt["stop"], "retry", test["nodeid"])
                )
    if not spans:
        return '<p class="muted">No timings were reported.</p>'
    workers = sorted({s[0] for s in spans}, key=_worker_key)
    first = min(s[1] for s in spans)
    # From the start of the session when known: the wait for the first test shows too.
    started = report.get("started")
    origin = min(first, started) if isinstance(started, int | float) else first
    end = max(s[2] for s in spans)
    total = max(end - origin, 1e-6)
    label_w, row_h, top = 70, 22, 24
    scale = (width - label_w - 10) / total
    height = top + row_h * len(workers) + 8
    out = [
        f'<svg id="timeline-chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="worker timeline">'
    ]
    for i in range(6):  # time axis
        t = total * i / 5
        x = label_w + t * scale
        anchor = ("start", "middle", "middle", "middle", "middle", "end")[i]
        out.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 6}" stroke="#e1e4ea"/>'
            f'<text x="{x:.1f}" y="{top - 8}" text-anchor="{anchor}">{_seconds(t)}</text>'
        )
    if first > origin:  # start-up: no test anywhere yet
        w = (first - origin) * scale
        out.append(
            f'<rect class="startup" x="{label_w}" y="{top - 2}" width="{w:.2f}" '
            f'height="{row_h * len(workers) + 2}" fill="#eef0f4"><title>start-up: '
            f"{_seconds(first - origin)} before the first test</title></rect>"
        )
    row_of = {w: i for i, w in enumerate(workers)}
    busy: dict[str, float] = dict.fromkeys(workers, 0.0)
    for worker, start, stop, outcome, nodeid in spans:
        y = top + row_of[worker] * row_h + 3
        x = label_w + (start - origin) * scale
        w = max((stop - start) * scale, 0.8)
        busy[worker] += max(0.0, stop - start)
        out.append(
            f'<rect class="bar {outcome}" x="{x:.2f}" y="{y}" width="{w:.2f}" height="{row_h - 6}" '
            f'fill="{COLOURS.get(outcome, "#68707d")}"><title>{_e(nodeid)} ({outcome}, '
            f"{_seconds(stop - start)})</title></rect>"
        )
    for worker in workers:
        label_y = top + row_of[worker] * row_h + row_h / 2 + 4
        idle = 1 - busy[worker] / total
        out.append(
            f'<text x="4" y="{label_y:.1f}"><title>{_e(worker)}: idle {idle:.0%} of the span'
            f"</title>{_e(worker)}</text>"
        )
    out.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{name}</span>'
        for name, colour in COLOURS.items()
    )
    idle_rows = [[_e(w), _seconds(busy[w]), f"{1 - busy[w] / total:.0%}"] for w in workers]
    return (
        f'<div class="legend">{legend}</div>'
        + "".join(out)
        + _table(["worker", "busy", "idle"], idle_rows, "idle")
    )


def _worker_key(worker: str) -> tuple[int, str]:
    digits = "".join(ch for ch in worker if ch.isdigit())
    return (int(digits) if digits else -1, worker)


def render(report: Mapping[str, Any]) -> str:
    """The whole page."""
    totals = report["totals"]
    title = (
        f"{totals['tests']} tests: {totals.get('passed', 0)} passed, "
        f"{totals.get('failed', 0)} failed, {totals.get('error', 0)} errors"
    )
    where = report.get("where") or "this machine"
    meta = (
        f"{_e(where)}, {report.get('workers', 1)} worker(s); wall "
        f"{_seconds(report.get('wall', 0.0))}; started {_e(report.get('created', ''))}"
    )
    tests = report["tests"]
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>Test report: {_e(title)}</title><style>{_CSS}</style></head><body>",
            f"<header><h1>{_e(title)}</h1><div>{meta}</div></header><main>",
            _summary(report),
            '<section id="timeline"><h2>Timeline per worker</h2>',
            timeline_svg(report),
            "</section>",
            _workers(report),
            _failures(tests),
            _flaky(tests),
            _flake_history(report),
            _slowest(tests),
            _metrics(tests, str(report.get("metrics_baseline") or "last")),
            "</main></body></html>",
        ]
    )
