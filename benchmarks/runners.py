"""The ways of running a suite that the benchmark compares, as pytest command lines."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


@dataclass(frozen=True)
class Target:
    """What every runner runs: the pytest arguments naming the tests, and where to run them."""

    name: str
    cwd: Path
    args: tuple[str, ...]


@dataclass(frozen=True)
class Context:
    """Everything a runner's command line depends on, for one run."""

    target: Target
    workers: int
    run_dir: Path  # empty, one per run: JUnit reports and logs go here
    split_durations: Path  # pytest-split's durations file (see ``SPLIT_DURATIONS``)
    store: Path  # the orchestrator's duration store for this suite
    cluster_address: str | None = None
    work_dir: Path | None = None  # where suites, stores and runs live (shown as $WORK)


class Store(Enum):
    """What an orchestrator run needs of the duration store before it starts."""

    NONE = "none"  # not an orchestrator run
    FRESH = "fresh"  # an empty store: the cold run
    WARM = "warm"  # durations from an earlier run


@dataclass(frozen=True)
class Runner:
    key: str  # the name ``--runners`` takes
    label: str  # the table's name; ``{w}`` stands for the number of workers
    parallel: bool  # runs tests on the workers at once (serial pytest does not)
    processes: Callable[[Context], list[list[str]]]  # extra pytest arguments per process
    store: Store = Store.NONE
    cluster: bool = False  # needs a Ray cluster started before the run
    reads_split_durations: bool = False  # reads pytest-split's durations file

    def title(self, workers: int) -> str:
        return self.label.format(w=workers)

    @property
    def needs_split_durations(self) -> bool:
        """Whether pytest-split's durations file must exist before this runner's first run:
        pytest-split reads it, and a warm store is seeded from it when nothing ran before."""
        return self.reads_split_durations or self.store is Store.WARM

    def commands(self, ctx: Context) -> tuple[list[list[str]], list[Path]]:
        """The command lines to start at once, and the JUnit reports they write."""
        commands, junits = [], []
        for i, extra in enumerate(self.processes(ctx)):
            junit = ctx.run_dir / f"junit-{i}.xml"
            junits.append(junit)
            commands.append(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    *ctx.target.args,
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    f"--junitxml={junit}",
                    *extra,
                ]
            )
        return commands, junits


# Paths go in ``--option=value`` form: pytest takes any separate argument naming an existing
# path into account when it picks the rootdir, which would change every test's node id.


def _serial(ctx: Context) -> list[list[str]]:
    # Plain pytest: the baseline does nothing serial pytest would not do.
    return [[]]


def _store_split_durations(ctx: Context) -> list[list[str]]:
    return [["--store-durations", f"--durations-path={ctx.split_durations}"]]


def _xdist(dist: str) -> Callable[[Context], list[list[str]]]:
    return lambda ctx: [["-n", str(ctx.workers), "--dist", dist]]


def _split(ctx: Context) -> list[list[str]]:
    return [
        [
            "--splits",
            str(ctx.workers),
            "--group",
            str(group),
            "--splitting-algorithm",
            "least_duration",
            f"--durations-path={ctx.split_durations}",
        ]
        for group in range(1, ctx.workers + 1)
    ]


def _orchestrator(ctx: Context) -> list[list[str]]:
    args = ["--ray", "--ray-workers", str(ctx.workers), f"--ray-durations={ctx.store}"]
    if ctx.cluster_address is not None:
        args += ["--ray-address", ctx.cluster_address]
    return [args]


def _orchestrator_collect_all(ctx: Context) -> list[list[str]]:
    return [[*args, "--ray-collect=all"] for args in _orchestrator(ctx)]


def _orchestrator_lazy(ctx: Context) -> list[list[str]]:
    return [[*args, "--ray-collect=lazy"] for args in _orchestrator(ctx)]


def _orchestrator_no_head_start(ctx: Context) -> list[list[str]]:
    return [[*args, "--ray-head-start=off"] for args in _orchestrator(ctx)]


SERIAL = Runner("serial", "serial pytest", parallel=False, processes=_serial)

# Not a runner to compare: one more serial run, unmeasured, that writes pytest-split's
# durations file. Storing them costs a loop over the reports, which the measured serial
# run must not pay.
SPLIT_DURATIONS = Runner(
    "split-durations",
    "serial pytest storing pytest-split's durations",
    parallel=False,
    processes=_store_split_durations,
)

RUNNERS: tuple[Runner, ...] = (
    SERIAL,
    Runner("xdist-load", "xdist --dist load -n {w}", True, _xdist("load")),
    Runner("xdist-worksteal", "xdist --dist worksteal -n {w}", True, _xdist("worksteal")),
    Runner("xdist-loadscope", "xdist --dist loadscope -n {w}", True, _xdist("loadscope")),
    Runner(
        "pytest-split",
        "pytest-split, {w} groups at once",
        True,
        _split,
        reads_split_durations=True,
    ),
    Runner("orchestrator-cold", "orchestrator cold, {w} workers", True, _orchestrator, Store.FRESH),
    Runner("orchestrator-warm", "orchestrator warm, {w} workers", True, _orchestrator, Store.WARM),
    Runner(
        "orchestrator-cluster",
        "orchestrator warm, {w} workers, running cluster",
        True,
        _orchestrator,
        Store.WARM,
        cluster=True,
    ),
    Runner(
        "orchestrator-collect-all",
        "orchestrator warm, {w} workers, running cluster, workers collect everything first",
        True,
        _orchestrator_collect_all,
        Store.WARM,
        cluster=True,
    ),
    Runner(
        "orchestrator-lazy",
        "orchestrator warm, {w} workers, running cluster, workers import only their files",
        True,
        _orchestrator_lazy,
        Store.WARM,
        cluster=True,
    ),
    Runner(
        "orchestrator-no-head-start",
        "orchestrator warm, {w} workers, running cluster, no head start",
        True,
        _orchestrator_no_head_start,
        Store.WARM,
        cluster=True,
    ),
)

BY_KEY = {runner.key: runner for runner in RUNNERS}
