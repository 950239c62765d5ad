"""The benchmark runner's plan (benchmarks/run.py): the order of the measured runs, the
command lines, and where results go. Nothing here starts pytest or Ray: the runs are faked.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace, TracebackType
from typing import Any

import pytest

from benchmarks import run
from benchmarks.measure import Measurement
from benchmarks.report import RunResult, SuiteResult, markdown_suite
from benchmarks.runners import BY_KEY, SERIAL, SPLIT_DURATIONS, Context, Runner, Store, Target
from benchmarks.suites import _HEADER, heavy_tailed

XDIST = BY_KEY["xdist-worksteal"]
SPLIT = BY_KEY["pytest-split"]
COLD = BY_KEY["orchestrator-cold"]
WARM = BY_KEY["orchestrator-warm"]
CLUSTER = BY_KEY["orchestrator-cluster"]


def _context(tmp_path: Path) -> Context:
    return Context(
        target=Target("suite", tmp_path / "suite", (str(tmp_path / "suite"),)),
        workers=2,
        run_dir=tmp_path / "runs" / "serial-0",
        split_durations=tmp_path / "runs" / "suite.test_durations",
        store=tmp_path / "stores" / "durations.db",
        work_dir=tmp_path,
    )


def _keys(order: list[tuple[int, Runner]]) -> list[tuple[int, str]]:
    return [(round_, runner.key) for round_, runner in order]


# The schedule


def test_rounds_interleave_every_runner_serial_first() -> None:
    order = run.schedule([SERIAL, XDIST, SPLIT], repeat=3)
    assert _keys(order) == [
        (round_, key)
        for round_ in range(3)
        for key in ("serial", "xdist-worksteal", "pytest-split")
    ]


def test_serial_runs_first_in_every_round_whatever_the_order_given() -> None:
    assert _keys(run.schedule([XDIST, SERIAL, COLD], repeat=2)) == [
        (0, "serial"),
        (0, "xdist-worksteal"),
        (0, "orchestrator-cold"),
        (1, "serial"),
        (1, "xdist-worksteal"),
        (1, "orchestrator-cold"),
    ]
    assert _keys(run.schedule([XDIST], repeat=1)) == [(0, "serial"), (0, "xdist-worksteal")]


# The command lines


def _pytest(ctx: Context) -> list[str]:
    """What every runner's command starts with: plain pytest writing a JUnit report."""
    return [
        sys.executable,
        "-m",
        "pytest",
        *ctx.target.args,
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={ctx.run_dir / 'junit-0.xml'}",
    ]


def test_the_measured_serial_run_is_plain_pytest(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    commands, junits = SERIAL.commands(ctx)
    assert commands == [_pytest(ctx)]
    assert junits == [ctx.run_dir / "junit-0.xml"]


def test_pytest_splits_durations_come_from_a_run_of_their_own(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    commands, _ = SPLIT_DURATIONS.commands(ctx)
    assert commands == [
        [*_pytest(ctx), "--store-durations", f"--durations-path={ctx.split_durations}"]
    ]
    split, _ = SPLIT.commands(ctx)
    assert all(f"--durations-path={ctx.split_durations}" in command for command in split)
    assert all("--store-durations" not in command for command in split)


def test_only_pytest_split_and_warm_stores_need_the_durations_file() -> None:
    needing = {runner.key for runner in BY_KEY.values() if runner.needs_split_durations}
    assert "pytest-split" in needing
    assert {runner.key for runner in BY_KEY.values() if runner.store is Store.WARM} <= needing
    assert not {"serial", "xdist-load", "xdist-worksteal", "orchestrator-cold"} & needing


# The runs, faked


class _FakeCluster:
    """Stands in for WarmCluster: says when it starts and stops."""

    def __init__(self, events: list[tuple[str, ...]]) -> None:
        self.events = events
        self.address = "127.0.0.1:6379"

    def __enter__(self) -> _FakeCluster:
        self.events.append(("cluster up",))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.events.append(("cluster down",))


def _junit(path: Path, outcome: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '<testsuites><testsuite><testcase classname="t" name="test_a" time="0.5">'
        f"{outcome}</testcase></testsuite></testsuites>"
    )


@pytest.fixture
def events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every run, store import and cluster start and stop ``bench_suite`` would do, in order.

    A run's wall is its round plus one (serial pytest's: three minus its round), so each
    runner's walls say which runs they came from. Every run passes its one test, but serial
    pytest's second.
    """
    log: list[tuple[str, ...]] = []

    def fake_subprocess_run(command: list[str], **_: Any) -> None:
        log.append(("import",) if "import" in command else ("collect",))

    def fake_run(runner: Runner, ctx: Context, timeout: float) -> tuple[Measurement, list[str]]:
        log.append(("run", ctx.run_dir.name, ctx.cluster_address or "no cluster"))
        junit = ctx.run_dir / "junit-0.xml"
        # Serial pytest's second run differs: the others are compared with its first.
        _junit(junit, '<failure message="no"/>' if ctx.run_dir.name == "serial-1" else "")
        if runner is SPLIT_DURATIONS:
            ctx.split_durations.write_text("{}")
        if runner.store is not Store.NONE:
            ctx.store.touch()
        round_ = int(ctx.run_dir.name.rsplit("-", 1)[1]) if ctx.run_dir.name[-1].isdigit() else 0
        wall = 3.0 - round_ if runner is SERIAL else 1.0 + round_
        return Measurement(wall, 0.1, 0, (junit,), ""), [runner.key]

    monkeypatch.setattr(run, "subprocess", SimpleNamespace(run=fake_subprocess_run))
    monkeypatch.setattr(run, "_run", fake_run)
    monkeypatch.setattr(run, "WarmCluster", lambda cpus: _FakeCluster(log))
    monkeypatch.setattr(
        run, "make_target", lambda name, work_dir, scale: Target(name, tmp_path, ("tests",))
    )
    return log


def _bench(runners: list[Runner], repeat: int, work_dir: Path) -> SuiteResult:
    return run.bench_suite(
        "suite", runners, workers=2, scale=1.0, repeat=repeat, timeout=60.0, work_dir=work_dir
    )


def test_durations_first_then_rounds_with_a_cluster_only_around_cluster_runs(
    events: list[tuple[str, ...]], tmp_path: Path
) -> None:
    suite = _bench([SERIAL, SPLIT, CLUSTER], repeat=2, work_dir=tmp_path)
    address = "127.0.0.1:6379"
    assert events == [
        ("collect",),
        ("run", "split-durations", "no cluster"),
        ("run", "serial-0", "no cluster"),
        ("run", "pytest-split-0", "no cluster"),
        # The warm store: seeded from pytest-split's durations, then one run, unmeasured.
        ("import",),
        ("cluster up",),
        ("run", "orchestrator-cluster-warm-up", address),
        ("cluster down",),
        ("cluster up",),
        ("run", "orchestrator-cluster-0", address),
        ("cluster down",),
        ("run", "serial-1", "no cluster"),
        ("run", "pytest-split-1", "no cluster"),
        ("cluster up",),
        ("run", "orchestrator-cluster-1", address),
        ("cluster down",),
    ]
    assert [r.runner for r in suite.runs] == ["serial", "pytest-split", "orchestrator-cluster"]
    assert [r.walls for r in suite.runs] == [[3.0, 2.0], [1.0, 2.0], [1.0, 2.0]]
    assert suite.repeat == 2
    assert suite.tests == 1
    assert [r.differences for r in suite.runs] == [None, [], []]


def test_no_durations_run_when_no_runner_reads_them(
    events: list[tuple[str, ...]], tmp_path: Path
) -> None:
    _bench([SERIAL, XDIST, COLD], repeat=1, work_dir=tmp_path)
    assert [e[1] for e in events if e[0] == "run"] == [
        "serial-0",
        "xdist-worksteal-0",
        "orchestrator-cold-0",
    ]


def test_a_warm_store_is_warmed_once_before_its_first_round(
    events: list[tuple[str, ...]], tmp_path: Path
) -> None:
    _bench([SERIAL, WARM], repeat=3, work_dir=tmp_path)
    assert [e[:2] for e in events] == [
        ("collect",),
        ("run", "split-durations"),
        ("run", "serial-0"),
        ("import",),
        ("run", "orchestrator-warm-warm-up"),
        ("run", "orchestrator-warm-0"),
        ("run", "serial-1"),
        ("run", "orchestrator-warm-1"),
        ("run", "serial-2"),
        ("run", "orchestrator-warm-2"),
    ]


def test_a_cold_store_is_reset_before_each_run_and_warm_runs_find_what_it_left(
    events: list[tuple[str, ...]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, bool]] = []
    fake = run._run

    def seeing(runner: Runner, ctx: Context, timeout: float) -> tuple[Measurement, list[str]]:
        seen.append((ctx.run_dir.name, ctx.store.exists()))
        return fake(runner, ctx, timeout)

    monkeypatch.setattr(run, "_run", seeing)
    _bench([SERIAL, COLD, WARM], repeat=2, work_dir=tmp_path)
    assert ("import",) not in events
    assert [s for s in seen if s[0].startswith("orchestrator")] == [
        ("orchestrator-cold-0", False),
        ("orchestrator-warm-0", True),
        ("orchestrator-cold-1", False),
        ("orchestrator-warm-1", True),
    ]


def test_the_suite_stops_when_serial_pytests_first_run_fails(
    events: list[tuple[str, ...]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(runner: Runner, ctx: Context, timeout: float) -> tuple[Measurement, list[str]]:
        events.append(("run", ctx.run_dir.name))
        return Measurement(1.0, None, 4, (), "usage error"), [runner.key]

    monkeypatch.setattr(run, "_run", failing)
    suite = _bench([SERIAL, XDIST], repeat=3, work_dir=tmp_path)
    assert [e[1] for e in events if e[0] == "run"] == ["serial-0"]
    assert [(r.runner, r.error) for r in suite.runs] == [("serial", "exit code 4")]


def test_the_suite_stops_when_pytest_split_durations_are_missing(
    events: list[tuple[str, ...]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_file(runner: Runner, ctx: Context, timeout: float) -> tuple[Measurement, list[str]]:
        events.append(("run", ctx.run_dir.name))
        junit = ctx.run_dir / "junit-0.xml"
        _junit(junit)
        return Measurement(1.0, 0.1, 0, (junit,), "no file written"), [runner.key]

    monkeypatch.setattr(run, "_run", no_file)
    suite = _bench([SERIAL, SPLIT], repeat=2, work_dir=tmp_path)
    assert [e[1] for e in events if e[0] == "run"] == ["split-durations"]
    assert [(r.runner, r.error) for r in suite.runs] == [("split-durations", "no durations file")]


# The results


def _row(key: str, walls: list[float]) -> RunResult:
    wall = sorted(walls)[(len(walls) - 1) // 2]
    return RunResult(key, key, 2, [key], wall, 0.5, 0, walls)


def test_the_table_says_the_rounds_were_interleaved_and_lists_every_wall() -> None:
    suite = SuiteResult("heavy-tailed", 2, 10, 8.0, 2.0, repeat=3)
    suite.runs = [_row("serial", [9.0, 8.5, 8.75]), _row("xdist-load", [5.0, 4.25, 4.5])]
    lines = markdown_suite(suite).splitlines()
    assert "3 interleaved rounds" in lines[0]
    assert lines[2].endswith("| outcomes | every wall, in run order (s) |")
    assert lines[3].count("|") == lines[2].count("|")
    assert lines[4].startswith("| serial | 8.75 |")
    assert lines[4].endswith("| 9.00, 8.50, 8.75 |")
    assert lines[5].endswith("| 5.00, 4.25, 4.50 |")


def test_one_round_has_no_column_of_walls() -> None:
    suite = SuiteResult("heavy-tailed", 2, 10, 8.0, 2.0)
    suite.runs = [_row("serial", [9.0])]
    text = markdown_suite(suite)
    assert "interleaved" not in text
    assert "every wall" not in text


def test_results_go_to_the_named_files(tmp_path: Path) -> None:
    suite = SuiteResult("heavy-tailed", 2, 10, 8.0, 2.0, runs=[_row("serial", [9.0])])
    run._write(tmp_path, "2-workers", [suite], {"cpus": 2}, "python -m benchmarks.run")
    written = {p.name for p in tmp_path.iterdir()}
    assert (
        {"2-workers.md", "2-workers.json"}
        <= written
        <= {
            "2-workers.md",
            "2-workers.json",
            "2-workers.png",
        }
    )


def test_the_name_is_latest_unless_given_and_never_a_path() -> None:
    parser = run._parser()
    assert parser.parse_args([]).name == "latest"
    assert parser.parse_args(["--name", "2-workers"]).name == "2-workers"
    for bad in ("", "..", "a/b"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--name", bad])


# The heavy-tailed suite


def test_heavy_tailed_tests_do_a_fixed_amount_of_work(tmp_path: Path) -> None:
    root = heavy_tailed(tmp_path / "suite", scale=0.005)
    for module in root.glob("test_*.py"):
        text = module.read_text()
        assert "    cpu_and_sleep(seconds)\n" in text
        assert "    work(seconds)\n" not in text
    helpers: dict[str, Any] = {}
    exec(_HEADER, helpers)
    assert helpers["cpu_and_sleep"](0.002) == helpers["crunch"](1.0)
