"""Benchmark results: the figures derived from them, and the Markdown, JSON and chart outputs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Baselines of the speed-up columns: (runner key, column heading).
BASELINES = (
    ("serial", "vs serial"),
    ("xdist-worksteal", "vs worksteal"),
    ("xdist-load", "vs load"),
)
_SHOWN_DIFFERENCES = 5


@dataclass
class RunResult:
    """One runner on one suite; with ``--repeat``, the run with the median wall time."""

    runner: str
    label: str
    parallelism: int  # processes running tests at once: the workers, or 1 for serial pytest
    commands: list[str]
    wall: float
    startup: float | None
    returncode: int
    walls: list[float]  # every repetition, in run order (round 1 first)
    differences: list[str] | None = None  # outcomes that differ from serial pytest's
    error: str | None = None
    log_tail: str = ""  # the end of the run's output, kept when it failed

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class SuiteResult:
    suite: str
    workers: int
    tests: int
    total_test_seconds: float
    longest_test_seconds: float
    repeat: int = 1  # rounds, each running every runner once (see benchmarks.run.schedule)
    runs: list[RunResult] = field(default_factory=list)

    @property
    def lower_bound(self) -> float:
        return max(self.total_test_seconds / self.workers, self.longest_test_seconds)

    def run(self, key: str) -> RunResult | None:
        return next((r for r in self.runs if r.runner == key and not r.failed), None)


def figures(suite: SuiteResult, run: RunResult) -> dict[str, float | None]:
    """The derived columns of one row (see ``FOOTNOTES``); None where they do not apply."""
    out: dict[str, float | None] = {
        "efficiency": None,
        "overhead_per_test_ms": None,
    }
    if run.startup is not None and not run.failed:
        busy = run.wall - run.startup
        out["efficiency"] = suite.lower_bound / busy if busy > 0 else None
        if suite.tests:
            unexplained = busy - suite.total_test_seconds / run.parallelism
            out["overhead_per_test_ms"] = 1000 * unexplained / suite.tests
    for key, _ in BASELINES:
        base = suite.run(key)
        if base is not None and not run.failed:
            out[f"speedup_vs_{key}"] = base.wall / run.wall
        else:
            out[f"speedup_vs_{key}"] = None
    return out


FOOTNOTES = """\
- *wall*: from starting the command to the exit of its last process (the pytest-split groups
  are started together). With `--repeat N`, the runs are interleaved: N rounds, each running
  every runner once, serial pytest first, so that the machine drifting over time weighs on
  every runner alike; *wall* is the median run's, and *every wall* lists all N in run order.
- *serial pytest*: plain `pytest -q -p no:cacheprovider --junitxml=...`, like every other
  runner. pytest-split's durations file comes from one more serial run with
  `--store-durations`, unmeasured, before the first round.
- *start-up*: from starting the command to the first `pytest_runtest_setup` in any process.
  A probe plugin, loaded into every pytest process through `PYTEST_PLUGINS` (controllers,
  xdist workers, split groups, orchestrator workers alike), writes that moment per process.
- *lower bound*: max(total test time / W, longest test) for W workers, from each test's time
  (setup + call + teardown) in the first serial run's JUnit report.
- *efficiency*: lower bound / (wall - start-up); 1.00 means nothing but start-up was lost.
- *overhead / test*: (wall - start-up - total test time / P) / tests, with P = W for the
  parallel runners and 1 for serial pytest: the time per test left over once start-up and
  the tests' own serial time (shared evenly over the workers) are taken away. It includes
  workers idling at the end, fixtures set up again on other workers, and shutting down.
- *speed-up*: the other runner's wall / this runner's wall; above 1 is faster.
- *outcomes*: each test's outcome (JUnit) compared with serial pytest's first run.
- *orchestrator cold*: an empty duration store; *warm*: the store the cold run of the same
  round left (or, without a cold run, pytest-split's durations imported, then one unmeasured
  run of the runner's own command before its first round); a warm run takes a head start
  from the collection the run before it recorded, unless it says *no head start*; *running
  cluster*: a Ray cluster started before the command, as `orchestrator up` starts one (with
  its warm worker relays), instead of one started and stopped by it; it is started and
  stopped around each run, unmeasured, so it never runs during other runners' runs.
"""


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _outcome_cell(run: RunResult) -> str:
    if run.failed:
        return f"run failed (exit {run.returncode})"
    if run.differences is None:
        return "-"
    return "same" if not run.differences else f"{len(run.differences)} differ"


def _walls_cell(run: RunResult) -> str:
    return ", ".join(f"{wall:.2f}" for wall in run.walls)


def markdown_suite(suite: SuiteResult) -> str:
    repeated = suite.repeat > 1
    header = (
        f"**{suite.suite}**: {suite.tests} tests, {suite.total_test_seconds:.1f} s of tests, "
        f"longest {suite.longest_test_seconds:.2f} s, lower bound {suite.lower_bound:.1f} s "
        f"with {suite.workers} workers"
    )
    if repeated:
        header += (
            f"; {suite.repeat} interleaved rounds (each runs every runner once, serial "
            "pytest first), the median wall shown"
        )
    lines = [
        header,
        "",
        "| runner | wall (s) | start-up (s) | efficiency | overhead / test (ms) "
        + "".join(f"| {heading} " for _, heading in BASELINES)
        + "| outcomes |"
        + (" every wall, in run order (s) |" if repeated else ""),
        "|---|" + "---:|" * (4 + len(BASELINES)) + "---|" + ("---|" if repeated else ""),
    ]
    for run in suite.runs:
        f = figures(suite, run)
        cells = [
            run.label,
            _num(None if run.failed else run.wall),
            _num(run.startup),
            _num(f["efficiency"]),
            _num(f["overhead_per_test_ms"]),
            *(_num(f[f"speedup_vs_{key}"]) for key, _ in BASELINES),
            _outcome_cell(run),
            *([_walls_cell(run)] if repeated else []),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    compared = [r for r in suite.runs if r.differences is not None and not r.failed]
    differing = [r for r in compared if r.differences]
    if compared:
        verdict = "yes" if not differing else "no"
        lines += ["", f"Identical outcomes to serial pytest: {verdict}."]
    for run in differing:
        assert run.differences is not None
        lines.append(f"{run.label}: {len(run.differences)} differ, e.g.")
        lines += [f"  - `{d}`" for d in run.differences[:_SHOWN_DIFFERENCES]]
    for run in suite.runs:
        if run.error:
            lines += ["", f"{run.label} failed: {run.error} (its output is in the JSON)."]
    return "\n".join(lines)


def markdown_tail(machine: dict[str, Any], command: str) -> str:
    """What follows the tables: the definitions, the command line and the machine."""
    about = "\n".join(f"- {k}: {v}" for k, v in machine.items())
    return f"{FOOTNOTES}\nCommand: `{command}`\n\nMachine:\n{about}\n"


def markdown(suites: list[SuiteResult], machine: dict[str, Any], command: str) -> str:
    return "\n\n".join([*(markdown_suite(s) for s in suites), markdown_tail(machine, command)])


def as_json(suites: list[SuiteResult], machine: dict[str, Any], command: str) -> str:
    data = {
        "command": command,
        "machine": machine,
        "suites": [
            {
                **{k: v for k, v in asdict(s).items() if k != "runs"},
                "lower_bound_seconds": s.lower_bound,
                "runs": [{**asdict(r), **figures(s, r)} for r in s.runs],
            }
            for s in suites
        ],
    }
    return json.dumps(data, indent=2)


def chart(suites: list[SuiteResult], path: Path) -> str | None:
    """Draw wall and start-up per runner, one panel per suite; say why not if impossible."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart (pip install matplotlib)"
    shown = [s for s in suites if s.runs]
    if not shown:
        return "no runs to chart"
    rows = max(len(s.runs) for s in shown)
    fig, axes = plt.subplots(
        len(shown), 1, figsize=(9, 0.45 * rows * len(shown) + 1.2), squeeze=False
    )
    for ax, suite in zip(axes[:, 0], shown, strict=True):
        runs = [r for r in suite.runs if not r.failed]
        labels = [r.label for r in runs]
        ax.barh(labels, [r.wall for r in runs], color="#7aa6c2", label="wall")
        ax.barh(labels, [r.startup or 0.0 for r in runs], color="#2f5d7c", label="start-up")
        ax.axvline(suite.lower_bound, color="#c0392b", linestyle="--", label="lower bound")
        for y, run in enumerate(runs):
            ax.text(run.wall, y, f" {run.wall:.1f}", va="center", fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{suite.suite}: {suite.tests} tests, {suite.workers} workers", fontsize=10)
        ax.set_xlabel("seconds")
        ax.tick_params(axis="y", labelsize=8)
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
