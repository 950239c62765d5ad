"""A head start: tests the last run collected go to the workers while the controller collects.

The controller imports the whole suite before it can plan (0.1 s for a few hundred tests,
seconds for tens of thousands); its workers were started before that and would otherwise
wait. When an earlier run with the same arguments recorded what it collected, and none of
the files it came from (test files, conftest files, the ini file) changed since, the workers
are given the first batches of that run's plan at once. Each worker collects the files of
its tests itself, so what runs is the code on disk now; the record only says which tests
to start with.

After its own collection the controller keeps what the guess got right: a guessed test it
collected too counts as given to the worker that has it, exactly as if it had been handed
out then; one it did not collect (deselected after all, by a plugin or an environment
variable) runs but its result is dropped. Pure logic: no Ray, no pytest.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.scheduling.planner import make_plan
from orchestrator.scheduling.scheduler import Scheduler, file_of

#: What running a test costs a worker besides the test's own recorded duration (pytest's
#: protocol and the report; measured 0.3-0.5 ms on 2-core machines).
TEST_OVERHEAD_SECONDS = 0.0005
#: Each worker is given this many times the last run's collection time, plus
#: :data:`MARGIN_SECONDS`: enough to keep it busy until the controller takes over.
BUDGET_FACTOR = 1.5
MARGIN_SECONDS = 0.25
#: At most this many tests are guessed in all (their node ids go to every worker).
MAX_GUESSED = 5000

#: A file's stamp: modification time (ns) and size; None when it does not exist.
Stamp = tuple[int, int] | None


@dataclass(frozen=True)
class LastCollection:
    """What one run collected, in pytest's order, and the files it came from."""

    nodeids: tuple[str, ...]
    #: Stamps of the files the collection depended on, by path relative to the root.
    files: Mapping[str, Stamp]
    #: Seconds the controller spent collecting.
    seconds: float
    #: Tests never started early: they need resources or record metrics (both are known
    #: only after the controller's collection).
    held_back: frozenset[str] = frozenset()

    def to_json(self) -> str:
        return json.dumps(
            {
                "nodeids": list(self.nodeids),
                "files": {path: list(st) if st else None for path, st in self.files.items()},
                "seconds": self.seconds,
                "held_back": sorted(self.held_back),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> LastCollection:
        data = json.loads(text)
        return cls(
            nodeids=tuple(data["nodeids"]),
            files={p: (int(s[0]), int(s[1])) if s else None for p, s in data["files"].items()},
            seconds=float(data["seconds"]),
            held_back=frozenset(data.get("held_back", ())),
        )


#: pytest options (by ``config.option`` name) that cannot change what is collected, or the
#: order it comes in: where reports go, how much is printed, how tests run (a seed of
#: pytest-randomly does change the order, and workers run each file in this run's order).
#: Runs differing only in these share a recorded collection; any other difference (``-k``,
#: ``-m``, paths, a plugin's option) makes them separate.
OUTPUT_OPTIONS = frozenset(
    (
        "basetemp",
        "capture",
        "clean_durations",
        "code_highlight",
        "collectonly",
        "color",
        "debug",
        "disable_warnings",
        "durations",
        "durations_min",
        "durations_path",
        "fold_skipped",
        "force_short_summary",
        "fulltrace",
        "junit_pipelines",
        "junitprefix",
        "max_warnings",
        "maxfail",
        "no_header",
        "no_summary",
        "pastebin",
        "quiet",
        "report_html",
        "report_json",
        "reportchars",
        "showcapture",
        "showlocals",
        "store_durations",
        "strict_resources",
        "tbstyle",
        "trace",
        "usepdb",
        "usepdb_cls",
        "verbose",
        "xmlpath",
        "htmlpath",  # pytest-html's
        "timeout",  # pytest-timeout's
    )
)
#: Prefixes of option names that cannot change what is collected (ours, logging's,
#: pytest-cov's, pytest-rerunfailures').
OUTPUT_PREFIXES = ("ray", "log_", "cov_", "reruns")


def collection_key(
    options: Mapping[str, object], args: Sequence[str], invocation_dir: str, rootdir: str
) -> str:
    """Which runs share a recorded collection: the same paths and selecting options,
    started from the same place (``options``: pytest's ``config.option``)."""
    selecting = {
        name: str(value)
        for name, value in options.items()
        if name not in OUTPUT_OPTIONS and not name.startswith(OUTPUT_PREFIXES)
    }
    text = json.dumps([sorted(selecting.items()), list(args), invocation_dir, rootdir])
    return hashlib.sha256(text.encode()).hexdigest()


def stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def stamps(root: Path, paths: Iterable[str]) -> dict[str, Stamp]:
    """Stamps of ``paths`` (relative to ``root``, or absolute)."""
    return {path: stamp(root / path) for path in paths}


def files_of(nodeids: Iterable[str]) -> list[str]:
    """The distinct files of ``nodeids``, in first-seen order."""
    return list(dict.fromkeys(file_of(n) for n in nodeids))


def unchanged(collection: LastCollection, root: Path) -> bool:
    """True when every file the collection came from is as it was then."""
    return all(stamp(root / path) == was for path, was in collection.files.items())


@dataclass
class HeadStart:
    """The guessed tests and each early worker's batches (indices into ``nodeids``)."""

    nodeids: tuple[str, ...]
    #: Per early worker (in launch order), its batches in the order they are sent.
    batches: list[list[list[int]]] = field(default_factory=list)
    #: Per early worker, when to ask for more with each batch (see Scheduler.ask_at).
    ask_at: list[list[int]] = field(default_factory=list)

    def given(self, worker: int) -> list[int]:
        """Guessed tests (indices) given to early worker number ``worker``, in order."""
        return [i for batch in self.batches[worker] for i in batch]


def plan_head_start(
    collection: LastCollection,
    durations: Mapping[str, float],
    workers: int,
    *,
    entry_costs: Mapping[str, float] | None = None,
) -> HeadStart | None:
    """The first batches of the recorded collection's plan, for ``workers`` early workers.

    Batches come from the scheduler itself, on the plan the recorded collection and the
    durations give, so they are the ones the run would have handed out first. Each worker
    gets about :data:`BUDGET_FACTOR` times the recorded collection time. None when there
    is nothing worth starting early.
    """
    nodeids = [n for n in collection.nodeids if n not in collection.held_back]
    if workers < 1 or not nodeids:
        return None
    plan = make_plan(nodeids, durations)
    scheduler = Scheduler(plan, workers, entry_costs=entry_costs)
    budget = collection.seconds * BUDGET_FACTOR + MARGIN_SECONDS
    loads = [0.0] * workers
    batches: list[list[list[int]]] = [[] for _ in range(workers)]
    ask_at: list[list[int]] = [[] for _ in range(workers)]
    count = 0
    names = [f"w{i}" for i in range(workers)]
    open_workers = set(range(workers))
    while open_workers and count < MAX_GUESSED and scheduler.queued:
        # The least loaded worker first, as workers that ran out would ask.
        worker = min(open_workers, key=lambda w: (loads[w], w))
        batch = scheduler.next_batch(names[worker], available=names)
        batch = batch[: MAX_GUESSED - count]
        if not batch:
            open_workers.discard(worker)
            continue
        batches[worker].append(batch)
        ask_at[worker].append(scheduler.ask_at(batch))
        count += len(batch)
        loads[worker] += sum(plan.estimates[i] + TEST_OVERHEAD_SECONDS for i in batch)
        if loads[worker] >= budget:
            open_workers.discard(worker)
    if count == 0:
        return None
    # Only the guessed tests travel: renumber them in the order they were taken.
    used = sorted({i for per_worker in batches for batch in per_worker for i in batch})
    number = {index: n for n, index in enumerate(used)}
    return HeadStart(
        nodeids=tuple(plan.nodeids[i] for i in used),
        batches=[[[number[i] for i in batch] for batch in per_worker] for per_worker in batches],
        ask_at=ask_at,
    )


def match(guessed: Sequence[str], collected: Sequence[str]) -> list[int | None]:
    """For each guessed test, its index in what the controller collected (None: not there)."""
    where: dict[str, int] = {}
    for index, nodeid in enumerate(collected):
        where.setdefault(nodeid, index)
    return [where.get(nodeid) for nodeid in guessed]


@dataclass(frozen=True)
class Given:
    """A head start as the controller takes it over after its own collection."""

    #: Guessed tests every early worker holds; the controller's own tests are numbered
    #: after them on those workers.
    count: int
    #: Per early worker, the guessed tests it was given (in order) with their indices in
    #: the controller's plan; a guess the controller did not collect is left out.
    by_worker: Mapping[str, Sequence[tuple[int, int]]]
