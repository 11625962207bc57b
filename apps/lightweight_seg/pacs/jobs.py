"""Persistent job state (SQLite, WAL, synchronous=FULL): one job per series, plus the record of every SEG sent.

States: queued (waiting for its quiet time or a worker), running, done, failed (will be retried after a delay),
parked (gave up after `max_attempts`, or rejected on arrival). An attempt is counted when a job starts, so a series
that crashes the node is parked after `max_attempts` restarts instead of crashing it forever.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

STATES = ("queued", "running", "done", "failed", "parked")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    instances INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0,
    destination TEXT,
    last_received REAL,
    updated REAL NOT NULL,
    seg_uid TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS sent (
    seg_uid TEXT NOT NULL,
    destination TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sent_at REAL NOT NULL,
    PRIMARY KEY (seg_uid, destination)
);
"""


@dataclass
class Job:
    series_uid: str
    study_uid: str
    state: str
    attempts: int
    not_before: float
    instances: int
    generation: int
    destination: str | None
    last_received: float | None
    updated: float
    seg_uid: str | None
    error: str | None


class JobStore:
    """Thread-safe access to the job database (one connection, one lock; every change is one transaction)."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, fn):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    def get(self, series_uid: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE series_uid = ?", (series_uid,)).fetchone()
        return Job(**row) if row else None

    def all(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY updated").fetchall()
        return [Job(**row) for row in rows]

    def received(self, series_uid: str, study_uid: str, is_new: bool, quiet: float, destination: str | None) -> None:
        """An instance of the series is safely in the spool: (re)start the quiet time.

        A new instance re-opens a finished series (a later SEG then covers the full set); a re-sent copy of an
        instance the spool already holds does not.
        """
        now = time.time()

        def update(db):
            job = db.execute("SELECT state FROM jobs WHERE series_uid = ?", (series_uid,)).fetchone()
            if job is None:
                db.execute(
                    "INSERT INTO jobs (series_uid, study_uid, state, not_before, instances, destination,"
                    " last_received, updated) VALUES (?, ?, 'queued', ?, 1, ?, ?, ?)",
                    (series_uid, study_uid, now + quiet, destination, now, now),
                )
            elif job["state"] in ("done", "parked") and is_new:
                db.execute(
                    "UPDATE jobs SET state = 'queued', attempts = 0, error = NULL, not_before = ?,"
                    " instances = instances + 1, generation = generation + 1, destination = ?, last_received = ?,"
                    " updated = ? WHERE series_uid = ?",
                    (now + quiet, destination, now, now, series_uid),
                )
            elif job["state"] in ("queued", "failed", "running"):
                db.execute(
                    "UPDATE jobs SET not_before = max(not_before, ?), instances = instances + ?,"
                    " generation = generation + ?, last_received = ? WHERE series_uid = ?",
                    (now + quiet, int(is_new), int(is_new), now, series_uid),
                )

        self._tx(update)

    def reconcile(self, series_uid: str, on_disk: int, quiet: float, destination: str | None) -> bool:
        """At start-up: a spooled series whose job is missing or counts fewer instances than the spool holds (the
        node died between the file's rename and the database update) is queued as if its instances just arrived."""
        job = self.get(series_uid)
        if job is not None and job.instances >= on_disk:
            return False
        self.received(series_uid, job.study_uid if job else "", True, quiet, destination)
        self._tx(lambda db: db.execute("UPDATE jobs SET instances = ? WHERE series_uid = ?", (on_disk, series_uid)))
        return True

    def reject(self, key: str, reason: str) -> None:
        """Record an object that could not be filed under a series: parked at once, with the reason."""
        now = time.time()
        self._tx(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO jobs (series_uid, state, updated, last_received, error)"
                " VALUES (?, 'parked', ?, ?, ?)",
                (key, now, now, reason),
            )
        )

    def recover(self, max_attempts: int) -> int:
        """After a crash: jobs left running go back to the queue, or are parked if they used up their attempts."""
        now = time.time()

        def update(db):
            n = db.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone()[0]
            db.execute(
                "UPDATE jobs SET state = 'parked', updated = ?, error = 'interrupted ' || attempts ||"
                " ' times (node stopped while running)' WHERE state = 'running' AND attempts >= ?",
                (now, max_attempts),
            )
            db.execute("UPDATE jobs SET state = 'queued', updated = ? WHERE state = 'running'", (now,))
            return n

        return self._tx(update)

    def claim(self, only: set[str] | None = None) -> Job | None:
        """Take the oldest job whose quiet time / retry delay is over and mark it running (one attempt used).

        `only`: consider just these series (a `pull` works on its own series, not on a listener's).
        """
        now = time.time()
        where, args = "", [now]
        if only is not None:
            where = f" AND series_uid IN ({', '.join('?' * len(only))})"
            args += sorted(only)

        def update(db):
            row = db.execute(
                "SELECT series_uid FROM jobs WHERE state IN ('queued', 'failed') AND not_before <= ?"
                f"{where} ORDER BY not_before LIMIT 1",
                args,
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated = ? WHERE series_uid = ?",
                (now, row["series_uid"]),
            )
            return Job(**db.execute("SELECT * FROM jobs WHERE series_uid = ?", (row["series_uid"],)).fetchone())

        return self._tx(update)

    def was_sent(self, seg_uid: str, destination: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM sent WHERE seg_uid = ? AND destination = ?", (seg_uid, destination)
            ).fetchone()
        return row is not None

    def record_sent(self, seg_uid: str, destination: str, series_uid: str) -> None:
        """Called only after the destination acknowledged the SEG."""
        self._tx(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO sent VALUES (?, ?, ?, ?)", (seg_uid, destination, series_uid, time.time())
            )
        )

    def finish(self, job: Job, seg_uid: str, note: str | None = None) -> None:
        """Done, unless new instances arrived while it ran: then it is queued again for a SEG of the full set."""
        now = time.time()
        self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET state = CASE WHEN generation = ? THEN 'done' ELSE 'queued' END, seg_uid = ?,"
                " error = ?, updated = ? WHERE series_uid = ?",
                (job.generation, seg_uid, note, now, job.series_uid),
            )
        )

    def fail(self, job: Job, reason: str, max_attempts: int, retry_seconds: float) -> str:
        """Failed: retried after `retry_seconds`, or parked once `max_attempts` are used. Returns the new state."""
        now = time.time()
        state = "parked" if job.attempts >= max_attempts else "failed"
        self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET state = ?, error = ?, not_before = ?, updated = ? WHERE series_uid = ?",
                (state, reason, now + retry_seconds, now, job.series_uid),
            )
        )
        return state

    def retry(self, series_uid: str) -> bool:
        """Operator action: give a parked or failed job a fresh set of attempts."""
        now = time.time()
        cursor = self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, not_before = ?, updated = ?"
                " WHERE series_uid = ? AND state IN ('parked', 'failed')",
                (now, now, series_uid),
            )
        )
        return cursor.rowcount > 0
