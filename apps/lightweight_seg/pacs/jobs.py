"""Persistent job state (SQLite, WAL, synchronous=FULL): one job per series, plus the record of every SEG sent.

States: queued (waiting for its quiet time or a worker), running, done, failed (will be retried after a delay),
parked (gave up after `max_attempts`, or rejected on arrival). An attempt is counted when a job starts to segment, so
a series that crashes the node is parked after `max_attempts` restarts instead of crashing it forever.

A job whose SEG is written but could not be sent keeps that SEG (`seg_generation`, `seg_files`) and only re-sends it,
with an exponential back-off and without ever being parked: a destination that comes back gets it.
A series whose delivering association was aborted (or cut by a node crash) is `incomplete`: it waits the longer
`aborted_quiet_seconds` for the sender's retry unless a later association that delivers it ends normally.
"""

from __future__ import annotations

import json
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
    error TEXT,
    incomplete INTEGER NOT NULL DEFAULT 0,
    receiving INTEGER NOT NULL DEFAULT 0,
    seg_generation INTEGER,
    seg_files TEXT,
    seg_note TEXT,
    send_failures INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sent (
    seg_uid TEXT NOT NULL,
    destination TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sent_at REAL NOT NULL,
    PRIMARY KEY (seg_uid, destination)
);
"""
# Columns added after the first release: added to an older database when it is opened.
_ADDED_COLUMNS = {
    "incomplete": "INTEGER NOT NULL DEFAULT 0",  # the last association delivering it was aborted / cut by a crash
    "receiving": "INTEGER NOT NULL DEFAULT 0",  # associations delivering it right now (> 0 after a crash: cut)
    "seg_generation": "INTEGER",  # the generation the written SEG files cover
    "seg_files": "TEXT",  # JSON list of the written SEG files, relative to the spool
    "seg_note": "TEXT",  # the pipeline's note for them ("partly segmented: ...")
    "send_failures": "INTEGER NOT NULL DEFAULT 0",  # failed sends since the SEG was written
}


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
    incomplete: int = 0
    receiving: int = 0
    seg_generation: int | None = None
    seg_files: str | None = None
    seg_note: str | None = None
    send_failures: int = 0

    @property
    def prepared(self) -> list[str] | None:
        """The written SEG files (relative to the spool) if they cover the series as it is now, else None."""
        if self.seg_generation is None or self.seg_generation != self.generation or self.seg_files is None:
            return None
        return json.loads(self.seg_files)


class JobStore:
    """Thread-safe access to the job database (one connection, one lock; every change is one transaction)."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")

    @classmethod
    def in_spool(cls, spool_dir: Path) -> JobStore:
        """The job database of a spool (`jobs.sqlite` in it), the folder made if need be."""
        Path(spool_dir).mkdir(parents=True, exist_ok=True)
        return cls(Path(spool_dir) / "jobs.sqlite")

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

    def received(
        self,
        series_uid: str,
        study_uid: str,
        is_new: bool,
        quiet: float,
        destination: str | None,
        opened: bool = False,
    ) -> None:
        """An instance of the series is safely in the spool: (re)start the quiet time.

        A new instance re-opens a finished series (a later SEG then covers the full set); a re-sent copy of an
        instance the spool already holds does not. `opened`: this is the first instance of the series in its
        association (which `association_ended` closes again).
        """
        now = time.time()

        def update(db):
            job = db.execute("SELECT state FROM jobs WHERE series_uid = ?", (series_uid,)).fetchone()
            if job is None:
                db.execute(
                    "INSERT INTO jobs (series_uid, study_uid, state, not_before, instances, destination,"
                    " last_received, updated, receiving) VALUES (?, ?, 'queued', ?, 1, ?, ?, ?, ?)",
                    (series_uid, study_uid, now + quiet, destination, now, now, int(opened)),
                )
                return
            if job["state"] in ("done", "parked") and is_new:
                db.execute(
                    "UPDATE jobs SET state = 'queued', attempts = 0, error = NULL, not_before = ?,"
                    " generation = generation + 1, destination = ?, send_failures = 0, updated = ?"
                    " WHERE series_uid = ?",
                    (now + quiet, destination, now, series_uid),
                )
            elif job["state"] in ("queued", "failed", "running"):
                db.execute(
                    "UPDATE jobs SET not_before = max(not_before, ?), generation = generation + ? WHERE series_uid = ?",
                    (now + quiet, int(is_new), series_uid),
                )
            db.execute(  # a re-sent copy of an instance of a finished series changes nothing but `receiving`
                "UPDATE jobs SET instances = instances + ?, receiving = receiving + ?, last_received = CASE"
                " WHEN state IN ('done', 'parked') THEN last_received ELSE ? END WHERE series_uid = ?",
                (int(is_new), int(opened), now, series_uid),
            )

        self._tx(update)

    def association_ended(self, series_uids: set[str], aborted: bool, quiet: float, aborted_quiet: float) -> None:
        """An association that delivered instances of these series ended: released normally (the sender says it
        is complete: the normal quiet time) or aborted (possibly incomplete: wait `aborted_quiet` for a retry)."""

        def update(db):
            for uid in series_uids:
                db.execute(
                    "UPDATE jobs SET receiving = max(receiving - 1, 0), incomplete = ? WHERE series_uid = ?",
                    (int(aborted), uid),
                )
                db.execute(
                    "UPDATE jobs SET not_before = last_received + ? WHERE series_uid = ? AND state = 'queued'",
                    (aborted_quiet if aborted else quiet, uid),
                )

        self._tx(update)

    def reconcile(self, series_uid: str, on_disk: int, quiet: float, destination: str | None) -> bool:
        """At start-up: a spooled series whose job is missing or counts fewer instances than the spool holds (the
        node died between the file's rename and the database update) is queued as if its instances just arrived,
        and marked possibly incomplete (its transfer was cut)."""
        job = self.get(series_uid)
        if job is not None and job.instances >= on_disk:
            return False
        self.received(series_uid, job.study_uid if job else "", True, quiet, destination)
        self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET instances = ?, incomplete = 1 WHERE series_uid = ?", (on_disk, series_uid)
            )
        )
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
        """After a crash: jobs left running go back to the queue, or are parked if they used up their attempts
        (a job that only had its SEG left to send is never parked); series whose transfer was cut (an association
        still delivering them) are marked possibly incomplete."""
        now = time.time()

        def update(db):
            n = db.execute("SELECT count(*) FROM jobs WHERE state = 'running'").fetchone()[0]
            db.execute(
                "UPDATE jobs SET state = 'parked', updated = ?, error = 'interrupted ' || attempts ||"
                " ' times (node stopped while running)' WHERE state = 'running' AND attempts >= ?"
                " AND seg_generation IS NOT generation",
                (now, max_attempts),
            )
            db.execute("UPDATE jobs SET state = 'queued', updated = ? WHERE state = 'running'", (now,))
            db.execute("UPDATE jobs SET incomplete = 1 WHERE receiving > 0 AND state = 'queued'")
            db.execute("UPDATE jobs SET receiving = 0 WHERE receiving > 0")
            return n

        return self._tx(update)

    def restart_quiet(self, quiet: float, aborted_quiet: float) -> int:
        """The node (re)started listening: every queued series still to be segmented waits its quiet time again
        from now (`aborted_quiet` if possibly incomplete), so that a sender whose transfer the stop cut can
        reconnect and finish before it is segmented. Returns how many jobs wait again."""
        now = time.time()
        return self._tx(
            lambda db: (
                db.execute(
                    "UPDATE jobs SET not_before = max(not_before, ? + CASE WHEN incomplete THEN ? ELSE ? END)"
                    " WHERE state = 'queued' AND seg_generation IS NOT generation",
                    (now, aborted_quiet, quiet),
                ).rowcount
            )
        )

    def claim(self, only: set[str] | None = None) -> Job | None:
        """Take the oldest job whose quiet time / retry delay is over and mark it running (one attempt used,
        unless it only has its written SEG left to send).

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
                "UPDATE jobs SET state = 'running', updated = ?,"
                " attempts = attempts + (seg_generation IS NOT generation) WHERE series_uid = ?",
                (now, row["series_uid"]),
            )
            return Job(**db.execute("SELECT * FROM jobs WHERE series_uid = ?", (row["series_uid"],)).fetchone())

        return self._tx(update)

    def generation(self, series_uid: str) -> int:
        job = self.get(series_uid)
        return job.generation if job else -1

    def prepare(self, job: Job, files: list[str], note: str | None) -> None:
        """The SEG files for the series as the job saw it are written: a failed send only re-sends them."""
        self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET seg_generation = ?, seg_files = ?, seg_note = ?, send_failures = 0"
                " WHERE series_uid = ?",
                (job.generation, json.dumps(files), note, job.series_uid),
            )
        )

    def was_sent(self, seg_uid: str, destination: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM sent WHERE seg_uid = ? AND destination = ?", (seg_uid, destination)
            ).fetchone()
        return row is not None

    def sent_for(self, series_uid: str, destination: str) -> list[tuple[str, float]]:
        """(SEG SOP Instance UID, time) of every SEG of this series the destination acknowledged, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seg_uid, sent_at FROM sent WHERE series_uid = ? AND destination = ? ORDER BY sent_at",
                (series_uid, destination),
            ).fetchall()
        return [(row["seg_uid"], row["sent_at"]) for row in rows]

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
                " error = ?, updated = ?, send_failures = 0 WHERE series_uid = ?",
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

    def send_failed(self, job: Job, reason: str, retry_seconds: float, max_retry_seconds: float) -> float:
        """Sending the written SEG failed: try again later, each wait twice the last (from `retry_seconds` up to
        `max_retry_seconds`), never parked. Returns the wait."""
        now = time.time()
        delay = min(max_retry_seconds, retry_seconds * 2 ** min(job.send_failures, 30))
        failures = job.send_failures + 1
        self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET state = 'failed', error = ?, not_before = ?, updated = ?, send_failures = ?"
                " WHERE series_uid = ?",
                (
                    f"send failed {failures} time{'s' * (failures > 1)}: {reason}",
                    now + delay,
                    now,
                    failures,
                    job.series_uid,
                ),
            )
        )
        return delay

    def interrupted(self, job: Job, reason: str) -> None:
        """The node stops while this job sends: back to the queue (its written SEG is sent at the next start)."""
        now = time.time()
        self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET state = 'queued', error = ?, not_before = ?, updated = ?"
                " WHERE series_uid = ? AND state = 'running'",
                (reason, now, now, job.series_uid),
            )
        )

    def retry(self, series_uid: str) -> bool:
        """Operator action: give a parked or failed job a fresh set of attempts."""
        now = time.time()
        cursor = self._tx(
            lambda db: db.execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, send_failures = 0, not_before = ?, updated = ?"
                " WHERE series_uid = ? AND state IN ('parked', 'failed')",
                (now, now, series_uid),
            )
        )
        return cursor.rowcount > 0
