"""The service's scheduler: runs queued jobs (each `label_pairs` in a thread, at most max_running_jobs at once),
cancels and forgets them, and assembles a running job's finished rows."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pandas as pd

from densedpo.errors import DenseDPOError
from densedpo.tables import LABEL_STATUSES
from labeler.config import LabelConfig
from labeler.engine import LabelHooks, LabelingStopped, label_pairs
from labeler.plan import plan_pairs
from labeler.rows import partial_labels
from service.config import ServiceConfig
from service.jobs import JobStore
from service.metrics import Metrics

log = logging.getLogger("densedpo.serve")


class Scheduler:
    """Starts queued jobs while fewer than max_running_jobs run; each in a thread running label_pairs."""

    def __init__(self, cfg: ServiceConfig, store: JobStore, servers: list[str], metrics: Metrics):
        self.cfg, self.store, self.servers, self.metrics = cfg, store, servers, metrics
        self.cancelled: set[str] = set()
        self.running: dict[str, threading.Thread] = {}
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="densedpo-scheduler", daemon=True)
        self._plans: dict[str, list] = {}

    def start(self) -> None:
        n = self.store.requeue_running()
        if n:
            log.info("resuming %d job(s) that were running", n)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in list(self.running.values()):
            t.join(timeout=30)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.running = {k: t for k, t in self.running.items() if t.is_alive()}
            while len(self.running) < self.cfg.max_running_jobs and not self.stopping.is_set():
                job = self.store.claim_next()
                if job is None:
                    break
                t = threading.Thread(target=self._run, args=(job,), name=f"job-{job['id']}", daemon=True)
                self.running[job["id"]] = t
                t.start()
            self.stopping.wait(0.2)

    def label_config(self, job: dict) -> LabelConfig:
        return LabelConfig(
            pairs=Path(job["pairs_path"]),
            out=Path(job["job_dir"]) / "labels.parquet",
            server=self.servers,
            concurrency=self.cfg.concurrency,
            max_failure_rate=self.cfg.max_failure_rate,
            **job["settings"],
        )

    def _run(self, job: dict) -> None:
        job_id = job["id"]
        try:
            self._label(job)
        except Exception as e:  # a bug, not a user error: keep the job's record and the traceback in the log
            log.exception("job %s crashed", job_id)
            self.store.transition(
                job_id,
                ("running",),
                "failed",
                finished_at=time.time(),
                error=f"internal error: {type(e).__name__}: {e}",
            )

    def _label(self, job: dict) -> None:
        job_id = job["id"]
        try:
            cfg = self.label_config(job)
        except (TypeError, DenseDPOError) as e:  # settings this service cannot run (e.g. from another version)
            self.store.transition(job_id, ("running",), "failed", finished_at=time.time(), error=f"settings: {e}")
            return
        done_before = [job["segments_done"]]

        def on_progress(done: int, total: int) -> None:
            if done > done_before[0]:
                self.metrics.segments.inc(done - done_before[0])
            done_before[0] = done
            self.store.update(job_id, segments_done=done, segments_total=total)

        def on_request(status: str, seconds: float) -> None:
            self.metrics.latency.observe(seconds)
            if status != "ok":
                self.metrics.errors.labels(status=status).inc()

        hooks = LabelHooks(
            should_stop=lambda: self.stopping.is_set() or job_id in self.cancelled,
            on_progress=on_progress,
            on_request=on_request,
        )
        try:
            result = label_pairs(cfg, progress=False, hooks=hooks)
        except LabelingStopped:
            if job_id in self.cancelled:
                self._record_finished_rows(job)
                self.store.transition(job_id, ("running",), "cancelled", finished_at=time.time())
            # else: the service is stopping; the job stays 'running' and is requeued at the next start
            return
        except DenseDPOError as e:
            self.store.transition(job_id, ("running",), "failed", finished_at=time.time(), error=str(e))
            return
        s = result.summary
        error = None
        if s["failure_rate"] > cfg.max_failure_rate:
            error = f"{s['failure_rate']:.1%} of segments failed (request or parse errors); labels were written"
        self.store.update(
            job_id, status_counts=s["status_counts"], segments_done=s["segments"], segments_total=s["segments"]
        )
        # A cancel that came after the last answer stopped nothing: every label is written, so the job is
        # completed (and its labels are served whole), not cancelled with its full labels served as partial.
        self.store.transition(
            job_id, ("running", "cancelled"), "failed" if error else "completed", finished_at=time.time(), error=error
        )
        self.cancelled.discard(job_id)

    def _record_finished_rows(self, job: dict) -> None:
        """A stopped job's figures are its finished rows' (what GET .../labels returns): segments done, statuses."""
        rows = self.partial(job)
        counts = rows["status"].value_counts() if rows is not None else pd.Series(dtype=int)
        self.store.update(
            job["id"],
            status_counts={s: int(counts.get(s, 0)) for s in LABEL_STATUSES},
            segments_done=0 if rows is None else len(rows),
        )

    def cancel(self, job_id: str) -> dict | None:
        """One atomic transition from queued or running: a job claimed meanwhile is still cancelled.

        A running job's worker sees the flag before its next request and stops; its finished rows are kept.
        """
        self.cancelled.add(job_id)  # before the transition, so a worker that just claimed it stops promptly
        if not self.store.transition(job_id, ("queued", "running"), "cancelled", finished_at=time.time()):
            self.cancelled.discard(job_id)
        return self.store.get(job_id)

    def forget(self, job: dict) -> bool:
        """Delete a finished job's record and folder; False while it is queued, running or still stopping."""
        thread = self.running.get(job["id"])
        if job["state"] in ("queued", "running") or (thread is not None and thread.is_alive()):
            return False
        if not self.store.delete(job["id"], ("completed", "failed", "cancelled")):
            return False
        import shutil

        shutil.rmtree(job["job_dir"], ignore_errors=True)
        self._plans.pop(job["id"], None)
        return True

    def partial(self, job: dict) -> pd.DataFrame | None:
        cfg = self.label_config(job)
        if job["id"] not in self._plans:
            self._plans[job["id"]] = plan_pairs(cfg)
        return partial_labels(cfg, self._plans[job["id"]])
