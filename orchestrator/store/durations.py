"""The duration store: per-test seconds learnt from earlier runs, in an embedded SQLite file.

SQLite makes concurrent writers safe: two runs that end at the same moment each commit
their own transaction, one after the other. A store that cannot be read is moved aside
with a warning and rebuilt; a run never fails because of it.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from pathlib import Path

from orchestrator.errors import OrchestratorError
from orchestrator.scheduling.head_start import LastCollection
from orchestrator.scheduling.planner import junit_key

#: Weight of the newest run in the moving average of a test's duration.
NEW_WEIGHT = 0.5
#: Rows under this prefix hold what entering a test file costs (its module fixtures),
#: keyed by the file's path; the scheduler uses them near the end of a run.
ENTRY_PREFIX = "entry:"
#: Keys under the prefix sort between it and the prefix with its last character moved
#: one on (":" -> ";").
_ENTRY_BOUNDS = (ENTRY_PREFIX, ENTRY_PREFIX[:-1] + chr(ord(ENTRY_PREFIX[-1]) + 1))
_SCHEMA = """
CREATE TABLE IF NOT EXISTS durations (
    nodeid TEXT PRIMARY KEY,
    seconds REAL NOT NULL,
    samples INTEGER NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    nodeid TEXT PRIMARY KEY,
    seconds REAL NOT NULL,
    samples INTEGER NOT NULL,
    updated REAL NOT NULL
)
"""
#: Adds each test's pending value (see DurationStore.record) to its recorded one.
_FOLD = f"""
INSERT INTO durations (nodeid, seconds, samples, updated)
SELECT nodeid, seconds, samples, updated FROM pending WHERE true
ON CONFLICT(nodeid) DO UPDATE SET
    seconds = durations.seconds * {1 - NEW_WEIGHT} + excluded.seconds * {NEW_WEIGHT},
    samples = durations.samples + excluded.samples,
    updated = excluded.updated
"""


class StoreWarning(UserWarning):
    """The store file could not be used as it was; the run goes on."""


class SqliteStore:
    """One embedded SQLite file under ``.orchestrator/``, shared by the stores that use it.

    Each subclass names its tables in ``schema`` (``CREATE ... IF NOT EXISTS`` statements, so
    opening the file creates only what is missing) and says in ``consequence`` what a run
    loses when the file has to be set aside.
    """

    schema = ""
    what = "store"
    consequence = ""
    #: Columns added to ``schema``'s tables since stores were first written, as
    #: (table, column, declaration): a store an earlier version wrote gets them on opening.
    added_columns: tuple[tuple[str, str, str], ...] = ()

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        gitignore = self.path.parent / ".gitignore"
        if not gitignore.exists():
            with contextlib.suppress(OSError):
                gitignore.write_text("# created by orchestrator\n*\n")
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.executescript(self.schema)
            for table, column, declaration in self.added_columns:
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    with contextlib.suppress(sqlite3.OperationalError):  # another run added it
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one write transaction: committed, or rolled back on error."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def _set_aside(self, error: Exception, stacklevel: int = 3) -> None:
        # stacklevel points the warning at the code that called the public method.
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        try:
            self.path.replace(aside)
            where = f"moved to {aside}"
        except OSError:
            where = "left in place"
        warnings.warn(
            StoreWarning(
                f"{self.what} {self.path} is unreadable ({error}); {where}, "
                f"starting a new one. {self.consequence}"
            ),
            stacklevel=stacklevel,
        )


class DurationStore(SqliteStore):
    """Reads and updates recorded test durations at ``path``."""

    schema = _SCHEMA
    what = "duration store"
    consequence = "Scheduling falls back to estimates for this run."

    def load(self) -> dict[str, float]:
        """All recorded test durations; an empty mapping when there is no usable store."""
        return self._select("NOT (nodeid >= ? AND nodeid < ?)", 0)

    def entry_costs(self) -> dict[str, float]:
        """Recorded cost of entering each test file (see :data:`ENTRY_PREFIX`), by path."""
        return self._select("nodeid >= ? AND nodeid < ?", len(ENTRY_PREFIX))

    def _select(self, where: str, strip: int) -> dict[str, float]:
        if not self.path.exists():
            return {}
        try:
            conn = self._connect()
            try:
                rows = conn.execute(
                    f"SELECT nodeid, seconds FROM durations WHERE {where}", _ENTRY_BOUNDS
                ).fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc, stacklevel=4)
            return {}
        return {str(nodeid)[strip:]: float(seconds) for nodeid, seconds in rows}

    def rows(self) -> dict[str, tuple[float, int, float]]:
        """Every test's (seconds, samples, updated), with the values shard runs left apart
        folded in; for merging stores. Unlike :meth:`load`, a file that is not a duration
        store is an error, not a warning."""
        if not self.path.is_file():
            raise OrchestratorError(f"{self.path}: no such duration store")
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30.0)
            try:
                rows = conn.execute(
                    "SELECT nodeid, seconds, samples, updated FROM durations"
                ).fetchall()
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
                pending = (
                    conn.execute("SELECT nodeid, seconds, samples, updated FROM pending").fetchall()
                    if "pending" in tables  # stores written before shard runs kept theirs apart
                    else []
                )
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise OrchestratorError(
                f"{self.path}: not a duration store ({exc}); give the durations.db files "
                "that runs left in .orchestrator/"
            ) from None
        out = {str(n): (float(s), int(c), float(u)) for n, s, c, u in rows}
        for nodeid, seconds, samples, updated in pending:
            key = str(nodeid)
            if key in out:
                old, count, _ = out[key]
                seconds = old * (1 - NEW_WEIGHT) + float(seconds) * NEW_WEIGHT
                samples = count + int(samples)
            out[key] = (float(seconds), int(samples), float(updated))
        return out

    def absorb(self, rows: Mapping[str, tuple[float, int, float]]) -> int:
        """Take another store's rows: a test this store has too keeps the more recently
        updated value. Returns how many tests were written."""
        values = [(n, s, c, u) for n, (s, c, u) in rows.items() if math.isfinite(s) and s >= 0]
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT INTO durations (nodeid, seconds, samples, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(nodeid) DO UPDATE SET seconds = excluded.seconds,"
                " samples = excluded.samples, updated = excluded.updated"
                " WHERE excluded.updated > durations.updated",
                values,
            )
            return conn.total_changes - before

    def record(
        self, durations: Mapping[str, float], *, replace: bool = False, apart: bool = False
    ) -> int:
        """Merge a run's durations into the store; returns how many tests were written.

        A test's stored value moves halfway towards each new measurement, which follows
        real changes quickly without trusting one noisy run completely. ``replace``
        overwrites instead (imports).

        ``apart`` (runs of one shard of a split) keeps the values in a table of their own
        that :meth:`load` does not read, so the other shards of the same split, run later
        from this store, split the suite as this one did. :meth:`fold` (a run without
        ``--shard``, ``orchestrator durations merge``) adds them to the recorded values;
        a run without ``apart`` folds them in first.
        """
        rows = [(k, float(v)) for k, v in durations.items() if math.isfinite(v) and v >= 0]
        if not rows:
            return 0
        try:
            return self._write(rows, replace, apart)
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc)
            return self._write(rows, replace, apart)

    def _write(self, rows: list[tuple[str, float]], replace: bool, apart: bool) -> int:
        now = time.time()
        values = [(k, v, now) for k, v in rows]
        with self._transaction() as conn:
            if replace:
                conn.executemany(
                    "INSERT INTO durations (nodeid, seconds, samples, updated) VALUES (?, ?, 1, ?)"
                    " ON CONFLICT(nodeid) DO UPDATE SET seconds = excluded.seconds,"
                    " samples = 1, updated = excluded.updated",
                    values,
                )
                return len(rows)
            table = "pending" if apart else "durations"
            if not apart:
                self._fold(conn)
            conn.executemany(
                f"INSERT INTO {table} (nodeid, seconds, samples, updated) VALUES (?, ?, 1, ?)"
                " ON CONFLICT(nodeid) DO UPDATE SET"
                f" seconds = seconds * {1 - NEW_WEIGHT} + excluded.seconds * {NEW_WEIGHT},"
                " samples = samples + 1, updated = excluded.updated",
                values,
            )
        return len(rows)

    def fold(self) -> int:
        """Add the values shard runs kept apart to the recorded ones (the next split uses
        them); returns how many tests they were."""
        if not self.path.exists():
            return 0
        with self._transaction() as conn:
            return self._fold(conn)

    @staticmethod
    def _fold(conn: sqlite3.Connection) -> int:
        (count,) = conn.execute("SELECT count(*) FROM pending").fetchone()
        if count:
            conn.execute(_FOLD)
            conn.execute("DELETE FROM pending")
        return int(count)

    def apart(self) -> int:
        """How many tests have values kept apart by shard runs, waiting to be folded in."""
        if not self.path.exists():
            return 0
        try:
            conn = self._connect()
            try:
                (count,) = conn.execute(
                    "SELECT count(*) FROM pending WHERE NOT (nodeid >= ? AND nodeid < ?)",
                    _ENTRY_BOUNDS,
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            return 0
        return int(count)


#: Collections kept (one per set of arguments a run was started with), newest first.
COLLECTIONS_KEPT = 20
_COLLECTIONS = """
CREATE TABLE IF NOT EXISTS collections (
    key TEXT PRIMARY KEY,
    data TEXT NOT NULL,
    updated REAL NOT NULL
)
"""


class CollectionStore(SqliteStore):
    """What the last run with each set of arguments collected (see
    orchestrator.scheduling.head_start)."""

    schema = _COLLECTIONS
    what = "duration store"
    consequence = "Runs start without a head start until the next one has collected."

    def load(self, key: str) -> LastCollection | None:
        if not self.path.exists():
            return None
        try:
            conn = self._connect()
            try:
                row = conn.execute("SELECT data FROM collections WHERE key = ?", (key,)).fetchone()
            finally:
                conn.close()
            return LastCollection.from_json(row[0]) if row else None
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc)
        except (ValueError, KeyError, TypeError, IndexError):
            pass  # written by another version: the next run writes it afresh
        return None

    def save(self, key: str, collection: LastCollection) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO collections (key, data, updated) VALUES (?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET data = excluded.data, updated = excluded.updated",
                (key, collection.to_json(), time.time()),
            )
            conn.execute(
                "DELETE FROM collections WHERE key NOT IN"
                " (SELECT key FROM collections ORDER BY updated DESC LIMIT ?)",
                (COLLECTIONS_KEPT,),
            )


def read_pytest_split(path: Path) -> dict[str, float]:
    """Durations from pytest-split's ``.test_durations`` (a JSON object nodeid -> seconds)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise OrchestratorError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, list):  # very old pytest-split wrote [[nodeid, seconds], ...]
        data = dict(data)
    if not isinstance(data, dict):
        raise OrchestratorError(f"{path}: expected a JSON object of test ids to seconds")
    out: dict[str, float] = {}
    for nodeid, seconds in data.items():
        if not isinstance(seconds, int | float):
            raise OrchestratorError(f"{path}: duration of {nodeid!r} is not a number")
        out[str(nodeid)] = float(seconds)
    return out


def read_junit(path: Path) -> dict[str, float]:
    """Durations from a JUnit XML report, keyed the way :func:`junit_key` names tests.

    The report is read as a stream, each ``<testcase>`` dropped once read, and not with
    junitparser (which reads a run's own report in
    :mod:`orchestrator.reports.junit_kinds`): junitparser loads the whole document first,
    which makes imports of large CI reports markedly slower, and their memory grows with
    the report (its captured output included).
    """
    out: dict[str, float] = {}
    try:
        for _event, elem in ET.iterparse(path, events=("end",)):
            if elem.tag == "testcase":
                name = elem.get("name")
                if name is not None:
                    classname = elem.get("classname", "")
                    try:
                        seconds = float(elem.get("time", "0") or 0)
                    except ValueError:
                        seconds = 0.0
                    key = f"junit:{classname}::{name}"
                    out[key] = out.get(key, 0.0) + seconds
                elem.clear()
    except ET.ParseError as exc:
        line, column = exc.position
        raise OrchestratorError(f"{path}:{line}:{column}: not well-formed XML ({exc})") from None
    return out


def read_durations_file(path: Path) -> dict[str, float]:
    """Read a JUnit XML report or a pytest-split durations file, by content."""
    try:
        head = path.read_bytes()[:512].lstrip()
    except OSError as exc:
        raise OrchestratorError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head.startswith(b"<"):
        return read_junit(path)
    if head.startswith((b"{", b"[")):
        return read_pytest_split(path)
    raise OrchestratorError(
        f"{path}: neither a JUnit XML report nor a pytest-split .test_durations file"
    )


__all__ = [
    "DurationStore",
    "SqliteStore",
    "StoreWarning",
    "junit_key",
    "read_durations_file",
    "read_junit",
    "read_pytest_split",
]
