"""Durable label jobs in SQLite (WAL): the batch service's queue and record of every job."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

STATES = ("queued", "running", "completed", "failed", "cancelled")
_COLUMNS = (
    "id",
    "idempotency_key",
    "state",
    "created_at",
    "started_at",
    "finished_at",
    "pairs_path",
    "job_dir",
    "settings",
    "segments_done",
    "segments_total",
    "status_counts",
    "error",
    "request_sha256",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    pairs_path TEXT NOT NULL,
    job_dir TEXT NOT NULL,
    settings TEXT NOT NULL,
    segments_done INTEGER NOT NULL DEFAULT 0,
    segments_total INTEGER NOT NULL DEFAULT 0,
    status_counts TEXT,
    error TEXT,
    request_sha256 TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at);
"""


class JobStore:
    """Thread-safe access to the jobs table; one connection guarded by a lock (writes are tiny)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
        if "request_sha256" not in columns:  # a database from before idempotency checked the payload
            self._db.execute("ALTER TABLE jobs ADD COLUMN request_sha256 TEXT")
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Close the database. A worker still stopping may write after this: its writes are dropped (the job stays
        'running' in the file and is requeued, and resumed from its journal, at the next start)."""
        with self._lock:
            self._closed = True
            self._db.close()

    def _row(self, row) -> dict | None:
        if row is None:
            return None
        job = dict(zip(_COLUMNS, row))
        job["settings"] = json.loads(job["settings"])
        job["status_counts"] = json.loads(job["status_counts"]) if job["status_counts"] else {}
        return job

    def create(
        self,
        pairs_path: str,
        job_dir_root: Path,
        settings: dict,
        idempotency_key: str | None,
        job_id: str | None = None,
        request_sha256: str | None = None,
    ) -> tuple[dict, bool]:
        """(job, created). With an idempotency key already used, returns that job and created=False."""
        with self._lock:
            job_id = job_id or uuid.uuid4().hex[:16]
            try:
                self._db.execute(
                    "INSERT INTO jobs (id, idempotency_key, state, created_at, pairs_path, job_dir, settings, "
                    "request_sha256) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        idempotency_key,
                        time.time(),
                        pairs_path,
                        str(job_dir_root / job_id),
                        json.dumps(settings),
                        request_sha256,
                    ),
                )
            except sqlite3.IntegrityError:  # the key was taken between the caller's lookup and now
                return self.by_idempotency_key(idempotency_key, locked=True), False
        return self.get(job_id), True

    def by_idempotency_key(self, key: str, locked: bool = False) -> dict | None:
        def find():
            cur = self._db.execute(f"SELECT {','.join(_COLUMNS)} FROM jobs WHERE idempotency_key=?", (key,))
            return self._row(cur.fetchone())

        if locked:
            return find()
        with self._lock:
            return find()

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            cur = self._db.execute(f"SELECT {','.join(_COLUMNS)} FROM jobs WHERE id=?", (job_id,))
            return self._row(cur.fetchone())

    def list(self, limit: int = 100) -> list[dict]:
        with self._lock:
            cur = self._db.execute(f"SELECT {','.join(_COLUMNS)} FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))
            return [self._row(r) for r in cur.fetchall()]

    def update(self, job_id: str, **fields) -> None:
        if "status_counts" in fields:
            fields["status_counts"] = json.dumps(fields["status_counts"])
        sets = ", ".join(f"{k}=?" for k in fields)
        with self._lock:
            if self._closed:
                return
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id=?", (*fields.values(), job_id))

    def transition(self, job_id: str, from_states: tuple[str, ...], to_state: str, **fields) -> bool:
        """Atomically move a job between states; False when it was in none of from_states."""
        sets = ", ".join(["state=?"] + [f"{k}=?" for k in fields])
        marks = ",".join("?" * len(from_states))
        with self._lock:
            if self._closed:
                return False
            cur = self._db.execute(
                f"UPDATE jobs SET {sets} WHERE id=? AND state IN ({marks})",
                (to_state, *fields.values(), job_id, *from_states),
            )
            return cur.rowcount == 1

    def delete(self, job_id: str, from_states: tuple[str, ...]) -> bool:
        """Remove a job's record when it is in one of from_states (atomically); False otherwise."""
        marks = ",".join("?" * len(from_states))
        with self._lock:
            cur = self._db.execute(f"DELETE FROM jobs WHERE id=? AND state IN ({marks})", (job_id, *from_states))
            return cur.rowcount == 1

    def claim_next(self) -> dict | None:
        """The oldest queued job, now running."""
        with self._lock:
            if self._closed:
                return None
            row = self._db.execute("SELECT id FROM jobs WHERE state='queued' ORDER BY created_at LIMIT 1").fetchone()
            if row is None:
                return None
            cur = self._db.execute(
                "UPDATE jobs SET state='running', started_at=? WHERE id=? AND state='queued'", (time.time(), row[0])
            )
            if cur.rowcount != 1:
                return None
        return self.get(row[0])

    def requeue_running(self) -> int:
        """After a restart, jobs that were running go back to the queue; their journals make them resume."""
        with self._lock:
            return self._db.execute("UPDATE jobs SET state='queued' WHERE state='running'").rowcount

    def count_by_state(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts = dict.fromkeys(STATES, 0)
        counts.update(dict(rows))
        return counts
