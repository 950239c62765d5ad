"""The quarantine, kept in the store's file next to the durations and the history.

Entries added by hand (``orchestrator quarantine add``) or by the flake-rate threshold live
here, with each test's streak of clean passes; pyproject.toml's entries are read from the
file on every run, and only their streaks are kept here. Every CI job that restores the
store (the ``--shard`` jobs of one pipeline) sees the same quarantine. ``export`` writes it
to a JSON file to commit, and ``import`` reads such a file back.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.errors import OrchestratorError, UsageError
from orchestrator.pipelines.flaky import Entry, parse_until
from orchestrator.store.durations import SqliteStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS quarantine (
    nodeid TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    until TEXT,
    source TEXT NOT NULL,
    added REAL NOT NULL,
    streak INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS quarantine_released (
    nodeid TEXT NOT NULL,
    reason TEXT NOT NULL,
    released REAL NOT NULL,
    why TEXT NOT NULL
)
"""
#: Released entries kept for `orchestrator flaky` (the newest first).
KEEP_RELEASED = 200
#: The format of an exported file.
EXPORT_VERSION = 1


class QuarantineStore(SqliteStore):
    """Reads and changes the quarantine at ``path`` (the store's SQLite file)."""

    schema = _SCHEMA
    added_columns = (("quarantine", "updated", "REAL NOT NULL DEFAULT 0"),)
    what = "quarantine"
    consequence = "Tests quarantined with `orchestrator quarantine add` must be added again."

    def entries(self) -> list[Entry]:
        """Every entry, by test id; none when there is no store."""
        rows = self._rows(
            "SELECT nodeid, reason, until, source, streak FROM quarantine ORDER BY nodeid"
        )
        return [
            Entry(nodeid, reason, _date(until), source, streak)
            for nodeid, reason, until, source, streak in rows
        ]

    def entries_with(self, configured: Sequence[Entry]) -> list[Entry]:
        """Every entry of a run, those past their date included: ``configured``
        (pyproject's) with the streaks kept here, and this store's own (see
        :func:`with_streaks`)."""
        released = {(nodeid, reason) for nodeid, reason, _, _ in self.released()}
        return with_streaks(configured, self.entries(), released)

    def _rows(self, sql: str) -> list[Any]:
        """A query's rows; none where there is no store, or it cannot be read (the run's
        duration store sets an unreadable file aside, and says so)."""
        if not self.path.exists():
            return []
        try:
            conn = self._connect()
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            return []

    def add(self, entries: Sequence[Entry]) -> None:
        """Quarantine these tests (an entry already there is replaced, its streak kept)."""
        now = time.time()
        self._write(
            lambda conn: conn.executemany(
                "INSERT INTO quarantine (nodeid, reason, until, source, added, streak, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (nodeid) DO UPDATE SET"
                " reason = excluded.reason, until = excluded.until, source = excluded.source,"
                " updated = excluded.updated",
                (
                    (e.nodeid, e.reason, _text(e.until), e.source, now, e.streak, now)
                    for e in entries
                ),
            )
        )

    def remove(self, nodeids: Sequence[str]) -> int:
        """Take these tests out of quarantine; how many were in it."""
        removed = 0

        def work(conn: sqlite3.Connection) -> None:
            nonlocal removed
            for nodeid in nodeids:
                removed += conn.execute(
                    "DELETE FROM quarantine WHERE nodeid = ?", (nodeid,)
                ).rowcount

        self._write(work)
        return removed

    def apply(
        self,
        kept: Sequence[Entry],
        released: Sequence[tuple[Entry, str]],
        added: Sequence[Entry] = (),
    ) -> None:
        """Record one run's changes: streaks (of stored entries, and of pyproject's, which
        are kept here for their streak alone), releases and new automatic entries."""
        now = time.time()

        def work(conn: sqlite3.Connection) -> None:
            for entry in kept:
                # A streak that changed is dated, so that merging the stores of parallel
                # jobs (each ran some of the tests) keeps each test's newest count.
                conn.execute(
                    "INSERT INTO quarantine (nodeid, reason, until, source, added, streak, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (nodeid) DO UPDATE SET"
                    " streak = excluded.streak, updated = CASE WHEN quarantine.streak ="
                    " excluded.streak THEN quarantine.updated ELSE excluded.updated END",
                    (
                        entry.nodeid,
                        entry.reason,
                        _text(entry.until),
                        entry.source,
                        now,
                        entry.streak,
                        now,
                    ),
                )
            for entry, why in released:
                conn.execute("DELETE FROM quarantine WHERE nodeid = ?", (entry.nodeid,))
                conn.execute(
                    "INSERT INTO quarantine_released (nodeid, reason, released, why)"
                    " VALUES (?, ?, ?, ?)",
                    (entry.nodeid, entry.reason, now, why),
                )
            conn.executemany(
                "INSERT OR IGNORE INTO quarantine"
                " (nodeid, reason, until, source, added, streak, updated)"
                " VALUES (?, ?, ?, ?, ?, 0, ?)",
                ((e.nodeid, e.reason, _text(e.until), e.source, now, now) for e in added),
            )
            conn.execute(
                "DELETE FROM quarantine_released WHERE rowid NOT IN (SELECT rowid FROM"
                " quarantine_released ORDER BY released DESC LIMIT ?)",
                (KEEP_RELEASED,),
            )

        self._write(work)

    def absorb(self, other: QuarantineStore) -> int:
        """Take in what another store (a parallel job's copy of this one) changed: each
        test's newest entry, and its releases (a test released there after its newest
        change here leaves quarantine here too). Returns how many tests changed here."""
        if not other.path.exists():
            return 0
        try:
            conn = other._connect()
            try:
                rows = conn.execute(
                    "SELECT nodeid, reason, until, source, added, streak, updated FROM quarantine"
                ).fetchall()
                releases = conn.execute(
                    "SELECT nodeid, reason, released, why FROM quarantine_released"
                ).fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise OrchestratorError(f"cannot read the quarantine in {other.path}: {exc}") from None
        changed = 0

        def work(conn: sqlite3.Connection) -> None:
            nonlocal changed
            for nodeid, reason, when, why in releases:
                known = conn.execute(
                    "SELECT 1 FROM quarantine_released WHERE nodeid = ? AND released = ?",
                    (nodeid, when),
                ).fetchone()
                if known is None:
                    conn.execute(
                        "INSERT INTO quarantine_released (nodeid, reason, released, why)"
                        " VALUES (?, ?, ?, ?)",
                        (nodeid, reason, when, why),
                    )
                changed += conn.execute(
                    "DELETE FROM quarantine WHERE nodeid = ? AND updated < ?", (nodeid, when)
                ).rowcount
            for row in rows:
                nodeid, updated = row[0], row[6]
                released_since = conn.execute(
                    "SELECT 1 FROM quarantine_released WHERE nodeid = ? AND released >= ?",
                    (nodeid, updated),
                ).fetchone()
                if released_since is not None:
                    continue  # released after this entry last changed
                changed += conn.execute(
                    "INSERT INTO quarantine (nodeid, reason, until, source, added, streak, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (nodeid) DO UPDATE SET"
                    " reason = excluded.reason, until = excluded.until, source = excluded.source,"
                    " streak = excluded.streak, updated = excluded.updated"
                    " WHERE excluded.updated > quarantine.updated",
                    row,
                ).rowcount

        self._write(work)
        return changed

    def released(self) -> list[tuple[str, str, float, str]]:
        """(test, reason, when, why) of the released entries, newest first."""
        return self._rows(
            "SELECT nodeid, reason, released, why FROM quarantine_released ORDER BY released DESC"
        )

    def _write(self, work: Any) -> None:
        try:
            with self._transaction() as conn:
                work(conn)
        except sqlite3.DatabaseError as exc:
            raise OrchestratorError(
                f"could not change the quarantine in {self.path} ({exc}); check that its "
                "directory is writable, or point --ray-durations at another file"
            ) from None


def _text(day: dt.date | None) -> str | None:
    return day.isoformat() if day is not None else None


def _date(text: str | None) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


# -- a file to commit ---------------------------------------------------------------------
def export_entries(entries: Sequence[Entry]) -> str:
    """The quarantine as JSON, for a file kept in version control."""
    data = {
        "version": EXPORT_VERSION,
        "tests": [
            {
                "test": e.nodeid,
                "reason": e.reason,
                **({"until": e.until.isoformat()} if e.until else {}),
                "source": e.source,
            }
            for e in entries
        ],
    }
    return json.dumps(data, indent=2) + "\n"


def import_entries(path: Path) -> list[Entry]:
    """Entries from a file written by :func:`export_entries`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path} is not JSON ({exc}); give a file `quarantine export` wrote"
        ) from None
    if not isinstance(data, Mapping) or not isinstance(data.get("tests"), list):
        raise UsageError(f"{path} has no list of tests; give a file `quarantine export` wrote")
    entries = []
    for number, item in enumerate(data["tests"], 1):
        where = f"{path}: test {number}"
        if not isinstance(item, Mapping) or not isinstance(item.get("test"), str):
            raise UsageError(f"{where} has no test id")
        reason = item.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise UsageError(f"{where} ({item['test']}) has no reason")
        until = item.get("until")
        source = item.get("source", "manual")
        entries.append(
            Entry(
                item["test"],
                reason,
                parse_until(until, where) if until is not None else None,
                source if source in ("manual", "auto", "pyproject") else "manual",
            )
        )
    return entries


def with_streaks(
    configured: Sequence[Entry],
    stored: Sequence[Entry],
    released: Collection[tuple[str, str]] = (),
) -> list[Entry]:
    """The quarantine of a run: pyproject's entries with the streaks the store keeps for
    them, except those released already (a ``(test, reason)`` of ``released``: named
    again with another reason, an entry counts afresh); then the store's own entries.
    A pyproject entry the file no longer names is gone."""
    streak = {e.nodeid: e.streak for e in stored}
    named = {e.nodeid for e in configured}
    kept = [
        replace(e, streak=streak.get(e.nodeid, 0))
        for e in configured
        if (e.nodeid, e.reason) not in released
    ]
    return kept + [e for e in stored if e.nodeid not in named and e.source != "pyproject"]
