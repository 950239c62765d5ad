"""Pure dispatch state machine: who runs what next, and what to do when a worker is lost.

Workers pull: a worker asks for work and gets a batch taken from the head of the
longest-first queue. Long tests travel alone; the short tail is batched, in batches that
shrink as the queue drains (guided self-scheduling), so that workers finish close
together while dispatch round trips stay few.

A worker asks for its next batch a little before it runs out (see :meth:`Scheduler.ask_at`),
so that the round trip does not leave it idle. Such a request is granted only while the
worker holds little (at most :data:`AHEAD_SECONDS` of estimated work) or the queue holds
enough that no other worker can run dry while it does.

Batches stay within one test file where they can: a worker keeps to the file it is in,
and one changing files picks a file no other worker is in, because pytest tears a
module's fixtures down when the next test is in another file, so every switch can cost a
model load or a database set-up again. Near the end, a worker that has no free file left
joins one another worker is in only when that pays: the cost of entering a file (its
module fixtures: a warm worker's setup when it enters the file, less the file's shortest
setup, learnt during the run or by earlier ones) against the share of its queued work the
worker would take over. Files known to cost next to nothing to enter (at most 5% of the
test entered for) need no such care: a long test in one of them (a batch of its own) is
taken first wherever it is, so long tests that share a file are spread over the workers,
longest first, as if files did not matter. Without entry costs every worker stays busy
while work is queued, so the greedy makespan bound (total / workers + longest) holds.

Tests that need particular resources (a GPU, more CPUs) form resource classes, each
with its own longest-first queue. A worker serves the classes its shape can run, in
its own order of preference (see :func:`orchestrator.resources.serves`); a worker
nobody told about serves class 0 only, which is every test of a plain run.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence

from orchestrator.scheduling.planner import Plan

#: The queue's remaining work is split in this many batches per worker, at least.
CHUNKS_PER_WORKER = 3
#: A batch is never cut below this many estimated seconds (dispatch overhead dominates).
MIN_BATCH_SECONDS = 0.1
#: Upper bound on tests in one batch, so reports keep flowing.
MAX_BATCH_TESTS = 256
#: A worker asks for more while about this many estimated seconds of its work are left,
#: and is given more early only while it holds at most this much (or the queue is long).
AHEAD_SECONDS = MIN_BATCH_SECONDS
#: An early request is also granted when the queue holds this many times what every
#: worker could be holding: nobody runs dry while one worker holds a batch ahead.
AHEAD_QUEUE_FACTOR = 2.0
#: Entering a file whose known entry cost is at most this share of the test entered for
#: costs next to nothing: such files need no affinity, and tests go longest first.
CHEAP_ENTRY_SHARE = 0.05


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


class _Queue:
    """One resource class's queued tests: longest first overall, and per file in
    collection order (a plan's indices are in collection order).

    ``main`` entries carry a generation: taking a test or queueing it again makes its
    entry there stale, and stale entries are dropped when they reach the head. A file's
    list is sorted and never shrinks: taken tests stay in it (``queued`` says which are
    live) and ``head`` skips those at its front.
    """

    def __init__(self) -> None:
        self.main: deque[tuple[int, int]] = deque()
        #: Per file, its tests longest first (entries as in ``main``).
        self.longest: dict[int, deque[tuple[int, int]]] = {}
        self.by_file: dict[int, list[int]] = {}
        #: Per file, the position in ``by_file`` before which no test is queued.
        self.head: dict[int, int] = {}
        #: Estimated seconds queued per file.
        self.left: dict[int, float] = {}
        self.count = 0

    def add(self, index: int, gen: int, file: int, seconds: float, *, front: bool = False) -> None:
        entry = (index, gen)
        self.left[file] = self.left.get(file, 0.0) + seconds
        longest = self.longest.setdefault(file, deque())
        if front:
            self.main.appendleft(entry)
            longest.appendleft(entry)
        else:
            self.main.append(entry)
            longest.append(entry)
        tests = self.by_file.setdefault(file, [])
        position = bisect.bisect_left(tests, index)
        if position == len(tests) or tests[position] != index:
            tests.insert(position, index)
        self.head[file] = min(self.head.get(file, 0), position)
        self.count += 1


class Scheduler:
    """Tracks the queue and each worker's assigned tests; knows nothing of Ray or pytest."""

    def __init__(
        self,
        plan: Plan,
        workers: int,
        *,
        min_batch_seconds: float = MIN_BATCH_SECONDS,
        max_batch_tests: int = MAX_BATCH_TESTS,
        entry_costs: Mapping[str, float] | None = None,
    ) -> None:
        """``entry_costs`` are earlier runs' costs of entering a file (by path), used
        until this run has measured its own."""
        if workers < 1:
            raise ValueError("a scheduler needs at least one worker")
        self.plan = plan
        self._workers = workers
        files: dict[str, int] = {}
        #: Each test's file, as a small number.
        self._file = [files.setdefault(file_of(n), len(files)) for n in plan.nodeids]
        self._file_number = files
        self._groups = plan.groups
        #: Each test's queue generation, and whether it is queued now.
        self._gen = [0] * len(plan.nodeids)
        self._queued = [False] * len(plan.nodeids)
        #: Longest-first queue per resource class.
        self._queues: dict[int, _Queue] = {}
        self._fill()
        #: The file of the last test each worker was given.
        self._file_at: dict[str, int] = {}
        #: How many workers are in each file (by ``_file_at``).
        self._in_file: dict[int, set[str]] = {}
        #: The classes each worker serves, in its order of preference.
        self._serves: dict[str, tuple[int, ...]] = {}
        #: Per worker, the last test (in collection order) it was given in each file and
        #: resource class (by ``(class, file)``): it never goes back to a test before it.
        self._passed: dict[str, dict[tuple[int, int], int]] = {}
        #: The last test each worker was given (in order), and each fixture group's last test.
        self._last_given: dict[str, int] = {}
        self._group_end: dict[int, int] = {}
        #: Workers that asked, were given tests or were declared, and have not left.
        self._known: set[str] = set()
        #: Replacement workers the controller no longer counts on soon (Ray has not placed
        #: them for a while: a lost node's place may never come back). Tests only they could
        #: still run in order go to the workers there are instead of waiting for them.
        self.late = 0
        #: Tests given against collection order: every worker that could run them had
        #: passed them (after a worker was lost), so one of them runs them anyway.
        self.out_of_order = 0
        #: Counts what may give a waiting worker work: tests queued again, a worker
        #: leaving a file or the run. A worker told "nothing now" need not ask again
        #: before it changes.
        self.changes = 0
        #: Tests to run again, each with the workers it already failed on.
        self._retries: deque[int] = deque()
        self._queued_seconds = math.fsum(plan.estimates)
        self._assigned: dict[str, deque[int]] = {}
        self._done: set[int] = set()
        self._failed_on: dict[int, frozenset[str]] = {}
        self._min_batch = min_batch_seconds
        self._max_tests = max(1, max_batch_tests)
        # A batch never holds more than the longest test, so the bound of longest-first
        # holds; without any recorded duration the estimates are guesses and only the
        # shrinking batch size applies (else a new suite goes out one test at a time).
        self._cap = max(plan.longest, min_batch_seconds) if plan.known else math.inf
        #: Per file, the longest setup phase of a test a worker entered the file with, and
        #: the shortest of one run after another test of the file: their difference is
        #: the cost of entering it (module and class fixtures built for its first test).
        self._entering: dict[int, float] = {}
        self._staying: dict[int, float] = {}
        #: The file of the test each worker finished last.
        self._last_file: dict[str, int] = {}
        self._prior = {
            files[path]: cost for path, cost in (entry_costs or {}).items() if path in files
        }
        #: Workers that finished a test (a worker's first setup also builds session
        #: fixtures, which would be charged to its file).
        self._warm: set[str] = set()
        self.stopped = False

    # -- queries ---------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return sum(q.count for q in self._queues.values()) + len(self._retries)

    def serves(self, worker: str) -> tuple[int, ...]:
        return self._serves.get(worker, (0,))

    def set_serves(self, worker: str, classes: Iterable[int]) -> None:
        """Declare the resource classes ``worker`` can run, most preferred first."""
        self._serves[worker] = tuple(classes)
        self._known.add(worker)

    def has_work_for(self, worker: str, *, running_counts: bool) -> bool:
        """Could ``worker`` still get a test: one queued in its classes or, when
        ``running_counts`` (retries are on), one running that may fail and come back?"""
        classes = set(self.serves(worker))
        if any(self._queues[c].count for c in classes if c in self._queues):
            return True
        if any(self.plan.class_of(i) in classes for i in self._retries):
            return True
        return running_counts and any(
            self.plan.class_of(i) in classes for pending in self._assigned.values() for i in pending
        )

    def passed(self, worker: str, index: int) -> bool:
        """Was ``worker`` given test ``index`` or one after it in its file and class (so
        that it never gets ``index`` in collection order)?"""
        return self._passed_in(worker, self.plan.class_of(index), self._file[index]) >= index

    @property
    def completed(self) -> int:
        return len(self._done)

    def assigned(self, worker: str) -> tuple[int, ...]:
        """Tests sent to ``worker`` and not finished yet, in the order it runs them."""
        return tuple(self._assigned.get(worker, ()))

    @property
    def running(self) -> bool:
        """True while any worker has tests it has not finished."""
        return any(self._assigned.values())

    def in_flight(self, worker: str) -> int | None:
        """The test ``worker`` is running now (the first unfinished one it was sent)."""
        pending = self._assigned.get(worker)
        return pending[0] if pending else None

    def remaining_seconds(self) -> float:
        """Estimated work not finished yet (queued plus assigned)."""
        assigned = math.fsum(
            self.plan.estimates[i] for pending in self._assigned.values() for i in pending
        )
        return max(0.0, self._queued_seconds) + assigned

    # -- transitions -----------------------------------------------------------------
    def next_batch(
        self, worker: str, *, available: Collection[str] = (), ahead: bool = False
    ) -> list[int]:
        """The next tests for ``worker``; an empty list means: nothing for it now.

        ``available`` names the workers that can still take work. A retry waits for one
        of them that it has not failed on, rather than running again where it failed.
        ``ahead``: the worker still has tests to run and asks early (see :meth:`ask_at`);
        it gets nothing while what it holds could keep others waiting. Without, an
        empty answer makes the worker tear its fixtures down: it has left its group.
        """
        if self.stopped or (ahead and not self._may_hold_more(worker)):
            return []
        self._known.add(worker)
        retry = self._take_retry(worker, available)
        if retry is not None:
            last = self._last_given.get(worker)
            if last is not None and self._groups[last] != self._groups[retry]:
                self._leave_group(worker, last)  # it runs elsewhere in between
            self._queued_seconds -= self.plan.estimates[retry]
            self._assigned.setdefault(worker, deque()).append(retry)
            return [retry]
        estimates = self.plan.estimates
        target = self._queued_seconds / (self._workers * CHUNKS_PER_WORKER)
        target = min(max(target, self._min_batch), self._cap)
        here = self._file_at.get(worker)
        for cls in self.serves(worker):
            queue = self._queues.get(cls)
            if queue is None or not queue.count:
                continue
            first = self._choose(worker, cls, queue, here, target)
            if first is not None:
                break
        else:
            # Joining any file left would cost more than it saves, or every test queued
            # for it lies before where it is: wait (unless nobody else can run them).
            return [] if ahead else self._stranded(worker, target)
        batch = [first]
        seconds = estimates[first]
        self._take_for(worker, queue, first)
        file = self._file[first]
        while len(batch) < self._max_tests:
            # The rest of this file in collection order, else where a new batch would start.
            nxt = self._after(queue, file, first)
            if nxt is None:
                nxt = self._choose(worker, cls, queue, None, target)
            if nxt is None or seconds + estimates[nxt] > target:
                break
            self._take_for(worker, queue, nxt)
            batch.append(nxt)
            seconds += estimates[nxt]
            first, file = nxt, self._file[nxt]
        self._move(worker, file)
        self._queued_seconds -= seconds
        self._assigned.setdefault(worker, deque()).extend(batch)
        return batch

    def give(self, worker: str, indices: Sequence[int]) -> list[int]:
        """Record that ``worker`` was given these tests already (a head start, see
        orchestrator.scheduling.head_start), in this order; returns those that were still queued
        (the others are left alone)."""
        self._known.add(worker)
        given: list[int] = []
        for index in indices:
            if not self._queued[index]:
                continue
            self._take_for(worker, self._queues[self.plan.class_of(index)], index)
            self._queued_seconds -= self.plan.estimates[index]
            given.append(index)
        if given:
            self._assigned.setdefault(worker, deque()).extend(given)
            self._move(worker, self._file[given[-1]])
        return given

    def ask_at(self, batch: Sequence[int]) -> int:
        """When the worker given ``batch`` should ask for more: as it starts the test
        after which this many of the batch are left.

        That is as early as the request is sure to be granted, with at most
        :data:`AHEAD_SECONDS` of estimated work left; at the batch's last test when that
        test alone is longer.
        """
        estimates = self.plan.estimates
        left = 0.0
        after = 0
        for remaining, index in enumerate(reversed(batch)):
            left += estimates[index]
            if left > AHEAD_SECONDS:
                break
            after = remaining
        return after

    def _may_hold_more(self, worker: str) -> bool:
        """May ``worker``, which still has tests to run, be given more now? Yes while what
        it holds is short, or while the queue could keep every other worker busy for
        longer than that."""
        held = math.fsum(self.plan.estimates[i] for i in self._assigned.get(worker, ()))
        if held <= AHEAD_SECONDS:
            return True
        return self._queued_seconds >= AHEAD_QUEUE_FACTOR * held * self._workers

    # -- collection order ------------------------------------------------------------
    def _passed_in(self, worker: str, cls: int, file: int) -> int:
        """The last test of class ``cls`` in ``file`` given to ``worker`` (-1: none)."""
        passed = self._passed.get(worker)
        return -1 if passed is None else passed.get((cls, file), -1)

    def _front(self, queue: _Queue, file: int) -> int | None:
        """The first test of ``file`` queued in ``queue``, in collection order."""
        tests = queue.by_file.get(file)
        if not tests:
            return None
        head, queued = queue.head.get(file, 0), self._queued
        while head < len(tests) and not queued[tests[head]]:
            head += 1
        queue.head[file] = head
        return tests[head] if head < len(tests) else None

    def _after(self, queue: _Queue, file: int, index: int) -> int | None:
        """The first test of ``file`` queued in ``queue`` after test ``index``."""
        tests = queue.by_file.get(file)
        if not tests or self._front(queue, file) is None:
            return None
        position = max(queue.head[file], bisect.bisect_right(tests, index))
        queued = self._queued
        while position < len(tests):
            if queued[tests[position]]:
                return tests[position]
            position += 1
        return None

    def _first_for(self, cls: int, queue: _Queue, file: int, worker: str) -> int | None:
        """The first test of ``file`` queued in class ``cls``'s ``queue`` that
        ``worker`` may run: one after every test of that class and file it was given."""
        return self._after(queue, file, self._passed_in(worker, cls, file))

    def _reachable(self, index: int, cls: int, file: int, but: str | None = None) -> bool:
        """Can a worker (other than ``but``) still run queued test ``index`` in order:
        one that serves its class and has not passed it, or one not heard of yet?"""
        unheard = self._workers - len(self._known) - self.late
        if cls == 0 and unheard > 0:
            return True
        return any(
            other != but and cls in self.serves(other) and self._passed_in(other, cls, file) < index
            for other in self._known
        )

    def _may_skip(
        self, worker: str, cls: int, queue: _Queue, file: int, start: int, *, within: bool = False
    ) -> bool:
        """May ``worker`` start at test ``start`` of ``file`` (class ``cls``), passing the
        queued tests before it there? Only if another worker can still run them in order
        (``within``: one that is in the file now, so that nobody enters it for them)."""
        skipped = self._first_for(cls, queue, file, worker)
        if skipped is None or skipped >= start:
            return True
        if not within:
            return self._reachable(skipped, cls, file, worker)
        return self._other_in(worker, cls, file, skipped)

    def _join_at(
        self,
        worker: str,
        cls: int,
        queue: _Queue,
        file: int,
        first: int,
        target: float,
        others: int,
    ) -> int | None:
        longest = self._peek(queue.longest[file])
        if (
            longest is not None
            and longest > first
            and self.plan.estimates[longest] >= target
            and self.plan.estimates[longest] > self.plan.estimates[first]
            and self._may_skip(worker, cls, queue, file, longest, within=True)
        ):
            return longest  # a long one, a batch of its own: the others run those before it
        """Where ``worker`` joins a file other workers are in: at the next start of a
        fixture group (the others finish theirs), when what it leaves them is at most a
        batch and they can run it; else at ``first``, the first test it may run, splitting
        a group, when the group's queued rest is worth sharing (see :meth:`_pays`, with at
        least a minimum batch for entering); else nowhere. ``others``: the workers in
        the file that can still run ``first``."""
        estimates, queued, groups = self.plan.estimates, self._queued, self._groups
        others = max(1, others)
        least = max(self._min_batch / 2 * (others + 1), 0.0)
        worth = queue.left.get(file, 0.0) >= least  # its share of the rest is worth it
        tests = queue.by_file[file]
        start = bisect.bisect_left(tests, first)
        left = 0.0
        for position in range(start, len(tests)):
            index = tests[position]
            if not queued[index]:
                continue
            if self.plan.starts_group(index):
                if index == first or self._may_skip(worker, cls, queue, file, index):
                    return index
                break
            left += estimates[index]
            if left > target:
                break
        if not worth:
            return None
        rest = 0.0
        for position in range(start, len(tests)):
            index = tests[position]
            if groups[index] != groups[first]:
                break
            if queued[index]:
                rest += estimates[index]
        if rest < least:
            return None  # its share would be less than half a batch: not worth a split
        return first if self._pays(file, others, rest) else None

    def _may_leave(self, worker: str, index: int, target: float) -> bool:
        """May ``worker`` go to test ``index``? If that leaves the fixture group it is in
        with tests of it queued, only when they add up to a batch at least (else it
        finishes the group first) and another worker can still run them in order."""
        last = self._last_given.get(worker)
        if last is None or self._groups[last] == self._groups[index]:
            return True
        cls, file = self.plan.class_of(last), self._file[last]
        queue = self._queues.get(cls)
        rest = None if queue is None else self._after(queue, file, last)
        if queue is None or rest is None or self._groups[rest] != self._groups[last]:
            return True
        left = 0.0
        following: int | None = rest
        while following is not None and self._groups[following] == self._groups[last]:
            left += self.plan.estimates[following]
            if left >= target:
                return self._reachable(rest, cls, file, worker)
            following = self._after(queue, file, following)
        return False

    def _take_for(self, worker: str, queue: _Queue, index: int) -> None:
        """Take test ``index`` from ``queue`` for ``worker``, which passes it (and the
        rest of the fixture group it was in, if ``index`` is in another one)."""
        self._take(queue, index)
        last = self._last_given.get(worker)
        if last is not None and self._groups[last] != self._groups[index]:
            self._leave_group(worker, last)
        self._last_given[worker] = index
        self._pass(worker, index, index)

    def _pass(self, worker: str, index: int, last: int) -> None:
        """``worker`` never gets a test of ``index``'s file and class up to ``last``."""
        passed = self._passed.setdefault(worker, {})
        key = (self.plan.class_of(index), self._file[index])
        if passed.get(key, -1) < last:
            passed[key] = last

    def _leave_group(self, worker: str, index: int) -> None:
        """``worker`` left the fixture group of test ``index`` (pytest tore it down):
        it never comes back to it."""
        group, groups = self._groups[index], self._groups
        end = self._group_end.get(group)
        if end is None:
            end = index
            while end + 1 < len(groups) and groups[end + 1] == group:
                end += 1
            self._group_end[group] = end
        self._pass(worker, index, end)
        self.changes += 1

    def _stranded(self, worker: str, target: float) -> list[int]:
        """``worker`` gets nothing in order: it tears its fixtures down, leaving its
        fixture group for good. Tests that no worker can run in order any more (each one
        serving their class passed them: a worker was lost) are given to it anyway."""
        last = self._last_given.get(worker)
        if last is not None:
            self._leave_group(worker, last)
        estimates = self.plan.estimates
        for cls in self.serves(worker):
            queue = self._queues.get(cls)
            if queue is None or not queue.count:
                continue
            for file in list(queue.by_file):
                index = self._front(queue, file)
                if index is None or self._reachable(index, cls, file):
                    continue
                batch: list[int] = []
                seconds = 0.0
                while index is not None and not self._reachable(index, cls, file):
                    if batch and (
                        seconds + estimates[index] > target or len(batch) >= self._max_tests
                    ):
                        break
                    self._take(queue, index)
                    batch.append(index)
                    seconds += estimates[index]
                    index = self._after(queue, file, index)
                self.out_of_order += len(batch)
                self._queued_seconds -= seconds
                self._assigned.setdefault(worker, deque()).extend(batch)
                return batch
        return []

    # -- choosing where to go --------------------------------------------------------
    def _choose(
        self, worker: str, cls: int, queue: _Queue, here: int | None, target: float
    ) -> int | None:
        """The next test for a worker in file ``here``, always one after every test of
        its file (and class) it was given before.

        The longest test queued, when it is a long one (``target`` seconds at least: a
        batch of its own) longer than the worker's next one in ``here``, entering its
        file (and leaving ``here``) is known to cost next to nothing, and every test it
        passes or leaves can still run in order elsewhere; else the next one in ``here``,
        or a long one further on when another worker in the file can run those before it;
        else the first one in the file with the most work left that no other worker is
        in; else in a file others are in, cheap to enter or worth joining (see
        :meth:`_pays`), where :meth:`_join_at` says; else none.
        """
        estimates = self.plan.estimates
        same = self._first_for(cls, queue, here, worker) if here is not None else None
        head = self._peek(queue.main)
        if head is not None and head != same and estimates[head] >= target:
            file = self._file[head]
            if self._cheap(file, head):
                long_head = same is None or (
                    estimates[head] > estimates[same] and self._cheap(here, same)
                )
                within = False
            else:
                # Entering it may cost: only a worker that is out of work, while the queue
                # holds plenty (nobody runs dry for the tests it passes), for a long test in
                # a file of long tests (half a batch each on average) that one other worker
                # is in (it runs those before it), whose cost is not known to be more than
                # nothing.
                others = len(self._in_file.get(file, ()))
                plenty = AHEAD_QUEUE_FACTOR * estimates[head] * self._workers
                entries = len(queue.by_file[file]) - queue.head[file]  # queued, at most
                long_head = (
                    same is None
                    and others == 1
                    and self._queued_seconds >= plenty
                    and queue.left[file] >= entries * target / 2
                    and self._pays(file, others, 0.0)
                )
                within = True
            if (
                long_head
                and head > self._passed_in(worker, cls, file)
                and self._may_skip(worker, cls, queue, file, head, within=within)
                and self._may_leave(worker, head, target)
            ):
                return head
        if same is not None:
            assert here is not None
            longest = self._peek(queue.longest[here])
            if (
                longest is not None
                and estimates[longest] >= target
                and estimates[longest] > estimates[same]
                and longest > same
                and self._may_skip(worker, cls, queue, here, longest, within=True)
                and self._may_leave(worker, longest, target)
            ):
                return longest  # a long one: the others in this file run those before it
            return same
        # Files with the most work left first (ties: the earlier in collection order).
        files: list[tuple[float, int, int]] = []
        for file, left in list(queue.left.items()):
            front = self._front(queue, file)
            if front is None:
                del queue.by_file[file], queue.left[file], queue.head[file]
                del queue.longest[file]
            else:
                files.append((-left, front, file))
        files.sort()
        joinable: tuple[int, int, int] | None = None  # (file, first test, others)
        in_file, mine = self._in_file, self._file_at.get(worker)
        for minus_left, _, file in files:
            candidate = self._first_for(cls, queue, file, worker)
            if candidate is None:
                continue
            others = len(in_file.get(file, ())) - (file == mine)
            if others and not self._other_in(worker, cls, file, candidate):
                others = 0  # those in it passed this test: as good as a free file
            if not others:
                return candidate
            if self._cheap(file, candidate):
                # Free to enter, but a fixture group is split only where that is worth it.
                start = self._join_at(worker, cls, queue, file, candidate, target, others)
                if start is not None:
                    return start
            elif joinable is None and self._pays(file, others, -minus_left):
                joinable = (file, candidate, others)
        if joinable is None:
            return None
        file, first, others = joinable
        return self._join_at(worker, cls, queue, file, first, target, others)

    def _move(self, worker: str, file: int | None) -> None:
        """Record that ``worker`` is now in ``file`` (``None``: in none)."""
        old = self._file_at.pop(worker, None)
        if old != file:
            self.changes += 1
        if old is not None:
            self._in_file[old].discard(worker)
        if file is not None:
            self._file_at[worker] = file
            self._in_file.setdefault(file, set()).add(worker)

    def _other_in(self, worker: str, cls: int, file: int, index: int) -> bool:
        """Is another worker that serves class ``cls`` in ``file``, able to run its test
        ``index`` in order?"""
        return any(
            other != worker
            and cls in self.serves(other)
            and self._passed_in(other, cls, file) < index
            for other in self._in_file.get(file, ())
        )

    # -- entry costs -----------------------------------------------------------------
    def entry_cost(self, path: str) -> float:
        """Seconds a worker spends entering the test file ``path`` beyond a test's usual
        setup, as learnt so far in this run (0.0 when nothing is known)."""
        file = self._file_number.get(path)
        return 0.0 if file is None else self._entry_cost(file)

    def _entry_cost(self, file: int) -> float:
        known = self._known_cost(file)
        return 0.0 if known is None else known

    def _known_cost(self, file: int) -> float | None:
        """The cost of entering ``file``: measured in this run, else learnt by an earlier
        one; None when nothing is known."""
        measured = self._measured_cost(file)
        return measured if measured is not None else self._prior.get(file)

    def _measured_cost(self, file: int) -> float | None:
        """The cost of entering ``file`` measured in this run (a setup entering it and one
        staying in it), or None."""
        entering, staying = self._entering.get(file), self._staying.get(file)
        if entering is None or staying is None:
            return None
        return max(0.0, entering - staying)

    def _cheap(self, file: int | None, index: int) -> bool:
        """Is entering ``file`` known to cost next to nothing, next to test ``index``?"""
        if file is None:
            return True
        cost = self._known_cost(file)
        return cost is not None and cost <= CHEAP_ENTRY_SHARE * self.plan.estimates[index]

    def learnt_entry_costs(self) -> dict[str, float]:
        """The entry costs measured in this run, by file path (for the next run)."""
        paths = {number: path for path, number in self._file_number.items()}
        measured = {file: self._measured_cost(file) for file in self._entering}
        return {paths[file]: cost for file, cost in measured.items() if cost is not None}

    def _pays(self, file: int, others: int, left: float) -> bool:
        """Does one more worker in a file ``others`` workers are in finish it sooner?

        They would take ``left / others`` seconds; with one more, the newcomer needs its
        entry cost plus ``left / (others + 1)``.
        """
        cost = self._entry_cost(file)
        return cost <= 0.0 or cost < left / (others * (others + 1))

    # -- the queues ------------------------------------------------------------------
    def _fill(self) -> None:
        """Queue every test: :meth:`_enqueue` for each, done in bulk (a million tests
        are queued in about a second)."""
        plan, files, estimates = self.plan, self._file, self.plan.estimates
        classes = plan.classes or (0,) * len(plan.nodeids)
        self._gen = [1] * len(plan.nodeids)
        self._queued = [True] * len(plan.nodeids)
        for index in plan.order:
            queue = self._queues.get(classes[index])
            if queue is None:
                queue = self._queues[classes[index]] = _Queue()
            entry = (index, 1)
            queue.main.append(entry)
            longest = queue.longest.get(files[index])
            if longest is None:
                longest = queue.longest[files[index]] = deque()
            longest.append(entry)
        for index in range(len(plan.nodeids)):  # per file, in collection order
            queue = self._queues[classes[index]]
            file = files[index]
            tests = queue.by_file.get(file)
            if tests is None:
                tests = queue.by_file[file] = []
                queue.head[file] = 0
                queue.left[file] = 0.0
            tests.append(index)
            queue.left[file] += estimates[index]
            queue.count += 1

    def _enqueue(self, index: int, *, front: bool = False) -> None:
        self._gen[index] += 1
        self._queued[index] = True
        queue = self._queues.setdefault(self.plan.class_of(index), _Queue())
        file = self._file[index]
        queue.add(index, self._gen[index], file, self.plan.estimates[index], front=front)

    def _peek(self, entries: deque[tuple[int, int]]) -> int | None:
        """The first live test of ``entries`` (dropping stale entries on the way)."""
        while entries:
            index, gen = entries[0]
            if self._queued[index] and self._gen[index] == gen:
                return index
            entries.popleft()
        return None

    def _take(self, queue: _Queue, index: int) -> None:
        self._queued[index] = False
        queue.count -= 1
        file = self._file[index]
        if file in queue.left:
            queue.left[file] -= self.plan.estimates[index]

    # -- retries, losses and the end -------------------------------------------------
    def _take_retry(self, worker: str, available: Collection[str]) -> int | None:
        """A retry for ``worker``: one it has not failed on, else one no one else can take.

        Retries are the one exception to collection order: a test runs again wherever
        a worker is free, after whatever that worker ran before."""
        classes = self.serves(worker)
        for position, index in enumerate(self._retries):
            cls = self.plan.class_of(index)
            if cls not in classes:
                continue
            avoid = self._failed_on[index]
            others = {w for w in available if cls in self.serves(w)} - avoid - {worker}
            if worker not in avoid or not others:
                del self._retries[position]
                return index
        return None

    def retry(self, index: int, failed_on: str) -> None:
        """Queue test ``index`` again, preferring workers it has not failed on yet."""
        avoid = self._failed_on.get(index, frozenset()) | {failed_on}
        self._failed_on[index] = avoid
        self._done.discard(index)
        self._retries.append(index)
        self._queued_seconds += self.plan.estimates[index]
        self.changes += 1

    def finished(self, worker: str, index: int, setup_seconds: float | None = None) -> None:
        """``worker`` reported the last phase of test ``index``; ``setup_seconds`` is its
        setup phase's duration, when known (it teaches the scheduler what entering the
        test's file costs)."""
        pending = self._assigned.get(worker)
        if pending and pending[0] == index:
            pending.popleft()
        elif pending and index in pending:
            pending.remove(index)
        else:
            raise ValueError(f"test {index} was not assigned to worker {worker!r}")
        self._done.add(index)
        file = self._file[index]
        entered = self._last_file.get(worker) != file
        self._last_file[worker] = file
        if setup_seconds is not None:
            if entered and worker in self._warm:
                self._entering[file] = max(self._entering.get(file, 0.0), setup_seconds)
            elif not entered:
                self._staying[file] = min(self._staying.get(file, math.inf), setup_seconds)
            self._warm.add(worker)

    def _forget(self, worker: str) -> None:
        self._workers = max(1, self._workers - 1)
        self._serves.pop(worker, None)
        self._passed.pop(worker, None)
        self._last_given.pop(worker, None)
        self._known.discard(worker)
        self._move(worker, None)

    def worker_lost(self, worker: str) -> tuple[int | None, list[int]]:
        """Forget ``worker``: return the test it was running and requeue the rest.

        The test that was running is *not* requeued; the caller decides what it becomes
        (an error now, a retry later). The rest go back to where they were in collection
        order, for a worker that has not passed them (a replacement has passed nothing).
        """
        pending = self._assigned.pop(worker, deque())
        running = pending.popleft() if pending else None
        if running is not None:
            self._done.add(running)
        self._forget(worker)
        self.requeue(pending)
        return running, list(pending)

    def requeue(self, indices: Iterable[int]) -> None:
        """Put tests back in the queue, first among tests as long as they are."""
        items = list(indices)
        self.changes += 1
        for index in reversed(items):
            self._enqueue(index, front=True)
        self._queued_seconds += math.fsum(self.plan.estimates[i] for i in items)

    def stop(self) -> list[int]:
        """Stop handing out work (``-x``/``--maxfail``); return what will never run."""
        self.stopped = True
        queued = [i for q in self._queues.values() for i, gen in q.main if self._gen[i] == gen]
        dropped = list(self._retries) + [i for i in queued if self._queued[i]]
        self._queues.clear()
        self._queued = [False] * len(self._queued)
        self._retries.clear()
        self._queued_seconds = 0.0
        return dropped

    def add_worker(self) -> None:
        """A replacement worker joined."""
        self._workers += 1

    def release(self, worker: str) -> list[int]:
        """``worker`` ended normally: forget it and return what it was sent but never ran.

        After a stop these are the tests a worker skipped; otherwise the list is empty.
        """
        self._forget(worker)
        return list(self._assigned.pop(worker, ()))
