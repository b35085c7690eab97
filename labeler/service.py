"""`densedpo serve`: a long-running batch labeling service around the same engine as `densedpo label`.

Jobs are rows in SQLite (WAL); each job runs `label_pairs` in a worker thread with its own journal, so a
killed service resumes every running job on restart without asking a finished segment again. At most
`max_running_jobs` run at once and they share the VLM servers.
"""

from __future__ import annotations

import hmac
import io
import logging
import os
import secrets
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from fastapi import Depends, FastAPI, Header, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from densedpo.errors import DenseDPOError
from densedpo.tables import LABELS, PAIRS, read_table, validate
from labeler.engine import LabelConfig, LabelHooks, LabelingStopped, label_pairs, partial_labels, plan_pairs
from labeler.jobs import JobStore

log = logging.getLogger("densedpo.serve")
SETTINGS = {"segment_seconds": float, "sample_fps": float, "min_confidence": float, "prompt": str}


@dataclass
class ServiceConfig:
    db: Path = Path("jobs.sqlite")
    data_root: Path = Path(".")
    server: list[str] = field(default_factory=list)
    model: str | None = None
    max_running_jobs: int = 2
    token_file: Path | None = None
    max_upload_mb: float = 64.0
    concurrency: int = 32  # requests in flight per job
    max_failure_rate: float = 0.05


def load_token(cfg: ServiceConfig) -> str:
    """From --token-file, else DENSEDPO_TOKEN, else a new random token written next to the database."""
    if cfg.token_file is not None:
        if not cfg.token_file.exists():
            raise DenseDPOError(f"--token-file {cfg.token_file} not found.")
        token = cfg.token_file.read_text().strip()
    else:
        token = os.environ.get("DENSEDPO_TOKEN", "").strip()
    if token:
        return token
    path = cfg.db.with_name(cfg.db.name + ".token")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32) + "\n")
        path.chmod(0o600)
    log.warning("no --token-file or DENSEDPO_TOKEN: using the token in %s", path)
    return path.read_text().strip()


class PathOutsideRoot(DenseDPOError):
    """A submitted path that resolves outside --data-root (`..`, an absolute path, or a symlink out)."""


def confined(root: Path, value: str) -> Path:
    """A path under root: relative to it, no `..` escape, no symlink leading out. Raises PathOutsideRoot."""
    root = root.resolve()
    p = Path(value)
    resolved = (p if p.is_absolute() else root / p).resolve()
    if resolved != root and root not in resolved.parents:
        raise PathOutsideRoot(f"path {value!r} is outside --data-root; give a path under it.")
    return resolved


class Metrics:
    def __init__(self, store: JobStore):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.store = store
        self.jobs = Gauge("densedpo_jobs", "Label jobs by state", ["state"], registry=self.registry)
        self.segments = Counter("densedpo_segments_labeled", "Segments labeled", registry=self.registry)
        self.latency = Histogram("densedpo_vlm_request_seconds", "VLM request latency", registry=self.registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))  # fmt: skip
        self.errors = Counter("densedpo_vlm_request_errors", "VLM requests that failed", ["status"],
                              registry=self.registry)  # fmt: skip

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        for state, n in self.store.count_by_state().items():
            self.jobs.labels(state=state).set(n)
        return generate_latest(self.registry)


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
        return LabelConfig(pairs=Path(job["pairs_path"]), out=Path(job["job_dir"]) / "labels.parquet",
                           server=self.servers, concurrency=self.cfg.concurrency,
                           max_failure_rate=self.cfg.max_failure_rate, **job["settings"])  # fmt: skip

    def _run(self, job: dict) -> None:
        job_id = job["id"]
        cfg = self.label_config(job)
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

        hooks = LabelHooks(should_stop=lambda: self.stopping.is_set() or job_id in self.cancelled,
                           on_progress=on_progress, on_request=on_request)  # fmt: skip
        try:
            result = label_pairs(cfg, progress=False, hooks=hooks)
        except LabelingStopped:
            if job_id in self.cancelled:
                self.store.transition(job_id, ("running",), "cancelled", finished_at=time.time())
            # else: the service is stopping; the job stays 'running' and is requeued at the next start
            return
        except DenseDPOError as e:
            self.store.transition(job_id, ("running",), "failed", finished_at=time.time(), error=str(e))
            return
        except Exception as e:  # a bug, not a user error: keep the job's record and the traceback in the log
            log.exception("job %s crashed", job_id)
            self.store.transition(job_id, ("running",), "failed", finished_at=time.time(),
                                  error=f"internal error: {type(e).__name__}: {e}")  # fmt: skip
            return
        s = result.summary
        error = None
        if s["failure_rate"] > cfg.max_failure_rate:
            error = f"{s['failure_rate']:.1%} of segments failed (request or parse errors); labels were written"
        self.store.update(job_id, status_counts=s["status_counts"], segments_done=s["segments"],
                          segments_total=s["segments"])  # fmt: skip
        self.store.transition(job_id, ("running",), "failed" if error else "completed", finished_at=time.time(),
                              error=error)  # fmt: skip

    def cancel(self, job_id: str) -> dict | None:
        job = self.store.get(job_id)
        if job is None:
            return None
        if job["state"] == "queued":
            self.store.transition(job_id, ("queued",), "cancelled", finished_at=time.time())
        elif job["state"] == "running":
            self.cancelled.add(job_id)
        return self.store.get(job_id)

    def partial(self, job: dict) -> pd.DataFrame | None:
        cfg = self.label_config(job)
        if job["id"] not in self._plans:
            self._plans[job["id"]] = plan_pairs(cfg)
        return partial_labels(cfg, self._plans[job["id"]])


def create_app(cfg: ServiceConfig, servers: list[str]):
    token = load_token(cfg)
    store = JobStore(cfg.db)
    metrics = Metrics(store)
    scheduler = Scheduler(cfg, store, servers, metrics)
    jobs_root = cfg.db.resolve().parent / (cfg.db.stem + "-jobs")
    data_root = cfg.data_root.resolve()
    max_bytes = int(cfg.max_upload_mb * 2**20)
    bearer = HTTPBearer(auto_error=False)

    @asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        yield
        scheduler.stop()
        store.close()

    app = FastAPI(title="densedpo label service", version="1", lifespan=lifespan,
                  description="Batch segment-level VLM preference labeling (DenseDPO).")  # fmt: skip

    def auth(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = creds.credentials if creds else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def public(job: dict) -> dict:
        keys = ("id", "state", "created_at", "started_at", "finished_at", "segments_done", "segments_total",
                "status_counts", "error", "settings")  # fmt: skip
        return {k: job[k] for k in keys} | {"progress": job["segments_done"] / max(job["segments_total"], 1)}

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/metrics", dependencies=[Depends(auth)])
    def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/label-jobs", dependencies=[Depends(auth)], status_code=201)
    async def submit(
        request: Request,
        file: UploadFile | None = None,
        idempotency_key: str | None = Header(default=None),
    ):
        if int(request.headers.get("content-length") or 0) > max_bytes:
            raise HTTPException(413, f"upload larger than --max-upload-mb {cfg.max_upload_mb:g}")
        form = await request.form()
        settings = {}
        for key, kind in SETTINGS.items():
            if form.get(key) not in (None, ""):
                try:
                    settings[key] = kind(form[key])
                except ValueError:
                    raise HTTPException(422, f"{key} must be {kind.__name__}, got {form[key]!r}") from None
        unknown = sorted(set(form) - set(SETTINGS) - {"file", "path"})
        if unknown:
            raise HTTPException(422, f"unknown field(s) {', '.join(unknown)}; valid: file, path, {', '.join(SETTINGS)}")
        job_id = secrets.token_hex(8)
        job_dir = jobs_root / job_id
        try:
            if file is not None and getattr(file, "filename", None):
                data = await file.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise HTTPException(413, f"upload larger than --max-upload-mb {cfg.max_upload_mb:g}")
                pairs_path = _store_upload(data, job_dir, data_root)
            elif form.get("path"):
                pairs_path = confined(data_root, str(form["path"]))
                _confine_videos(read_table(pairs_path, PAIRS), pairs_path, data_root)
            else:
                raise HTTPException(422, "send a pairs table as the `file` field or a `path` under --data-root")
            # Validate like the CLI does, so a bad table is refused now, not failed later.
            plan_pairs(LabelConfig(pairs=pairs_path, out=job_dir / "labels.parquet", server=["-"], **settings))
        except PathOutsideRoot as e:
            raise HTTPException(400, str(e)) from None
        except DenseDPOError as e:  # an invalid table or video: the CLI's one-line message
            raise HTTPException(422, str(e)) from None
        job, created = store.create(str(pairs_path), jobs_root, settings, idempotency_key, job_id=job_id)
        return JSONResponse(public(job), status_code=201 if created else 200)

    @app.get("/v1/label-jobs", dependencies=[Depends(auth)])
    def list_jobs() -> list[dict]:
        return [public(j) for j in store.list()]

    def get_or_404(job_id: str) -> dict:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @app.get("/v1/label-jobs/{job_id}", dependencies=[Depends(auth)])
    def status(job_id: str) -> dict:
        return public(get_or_404(job_id))

    @app.delete("/v1/label-jobs/{job_id}", dependencies=[Depends(auth)])
    def cancel(job_id: str) -> dict:
        get_or_404(job_id)
        return public(scheduler.cancel(job_id))

    @app.get("/v1/label-jobs/{job_id}/labels", dependencies=[Depends(auth)])
    def labels(job_id: str) -> Response:
        job = get_or_404(job_id)
        out = Path(job["job_dir"]) / "labels.parquet"
        if job["state"] == "completed" or (job["state"] == "failed" and out.exists()):
            return Response(out.read_bytes(), media_type="application/vnd.apache.parquet",
                            headers={"X-Densedpo-Partial": "false"})  # fmt: skip
        rows = scheduler.partial(job)
        if rows is None:
            raise HTTPException(409, f"job {job_id} is {job['state']} and has no finished segment yet")
        buf = io.BytesIO()
        validate(rows, LABELS).to_parquet(buf, index=False)
        return Response(buf.getvalue(), media_type="application/vnd.apache.parquet",
                        headers={"X-Densedpo-Partial": "true"})  # fmt: skip

    app.state.scheduler = scheduler
    return app


def _store_upload(data: bytes, job_dir: Path, data_root: Path) -> Path:
    """Save an uploaded pairs table; its relative video paths are taken relative to --data-root."""
    import pyarrow.parquet as pq

    try:
        df = pq.read_table(io.BytesIO(data)).to_pandas()
    except Exception as e:  # pyarrow raises several types for bytes that are not parquet
        raise DenseDPOError(f"the upload is not a parquet table ({type(e).__name__}).") from None
    df = validate(df, PAIRS, where="uploaded pairs table")
    _confine_videos(df, data_root / "pairs.parquet", data_root)
    for col in ("video_a", "video_b"):
        df[col] = [str(confined(data_root, v)) for v in df[col]]
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / "pairs.parquet"
    df.to_parquet(path, index=False)
    return path


def _confine_videos(df: pd.DataFrame, table_path: Path, data_root: Path) -> None:
    from densedpo.tables import resolve_path

    for i, row in enumerate(df.itertuples(index=False)):
        for col in ("video_a", "video_b"):
            p = resolve_path(table_path, getattr(row, col))
            try:
                confined(data_root, str(p))
            except PathOutsideRoot:
                raise PathOutsideRoot(f"row {i} (pair_id={row.pair_id!r}), column {col}: {getattr(row, col)!r} is "
                                      "outside --data-root.") from None  # fmt: skip
