"""`densedpo serve`: a long-running batch labeling service around the same engine as `densedpo label`.

Jobs are rows in SQLite (WAL); each job runs `label_pairs` in a worker thread with its own journal, so a
killed service resumes every running job on restart without asking a finished segment again. At most
`max_running_jobs` run at once and they share the VLM servers.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import secrets
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import pandas as pd
from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from densedpo.errors import DenseDPOError
from densedpo.files import atomic_write_text
from densedpo.tables import LABELS, PAIRS, read_table, validate
from labeler.config import LabelConfig
from labeler.engine import LabelHooks, LabelingStopped, label_pairs
from labeler.plan import max_images_per_request, plan_pairs
from labeler.prompts import DEFAULT_PROMPT, available_prompts
from labeler.rows import partial_labels
from service.jobs import JobStore

log = logging.getLogger("densedpo.serve")
SETTINGS = ("segment_seconds", "sample_fps", "min_confidence", "prompt")
# Bounds a job's settings may take (the OpenAPI document states them; the CLI's checks run as well).
MAX_SEGMENT_SECONDS = 60.0
MAX_SAMPLE_FPS = 60.0
PROMPT_NAME = r"^[A-Za-z0-9_.-]{1,100}$"


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
    max_images: int = 40  # images per request the VLM server accepts (vLLM's --limit-mm-per-prompt)


def db_lock(cfg: ServiceConfig):
    """One service per database: a second one would requeue the first's running jobs and run them twice."""
    from densedpo.locks import exclusive

    return exclusive(cfg.db.with_name(cfg.db.name + ".lock"), f"--db {cfg.db}", "give this service its own --db")


class Error(BaseModel):
    """Every error answer: one line saying what was wrong and how to fix it."""

    detail: str


class Job(BaseModel):
    id: str
    state: str = Field(description="queued, running, completed, failed or cancelled")
    created_at: float
    started_at: float | None
    finished_at: float | None
    segments_done: int
    segments_total: int
    status_counts: dict[str, int]
    error: str | None
    settings: dict[str, float | str]
    progress: float


def _errors(*codes: int) -> dict:
    what = {
        400: "a path outside --data-root",
        401: "missing or wrong bearer token",
        404: "no such job",
        409: "the job has no labels to give (yet)",
        413: "upload larger than --max-upload-mb",
        422: "invalid settings, form or table (the message names the field, row or column)",
    }
    return {c: {"model": Error, "description": what[c]} for c in codes}


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
    if not path.exists():  # created 0600: no moment in which another user could read it
        atomic_write_text(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
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
        self.latency = Histogram(
            "densedpo_vlm_request_seconds",
            "VLM request latency",
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
        )
        self.errors = Counter(
            "densedpo_vlm_request_errors", "VLM requests that failed", ["status"], registry=self.registry
        )

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

        hooks = LabelHooks(
            should_stop=lambda: self.stopping.is_set() or job_id in self.cancelled,
            on_progress=on_progress,
            on_request=on_request,
        )
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
            self.store.transition(
                job_id,
                ("running",),
                "failed",
                finished_at=time.time(),
                error=f"internal error: {type(e).__name__}: {e}",
            )
            return
        s = result.summary
        error = None
        if s["failure_rate"] > cfg.max_failure_rate:
            error = f"{s['failure_rate']:.1%} of segments failed (request or parse errors); labels were written"
        self.store.update(
            job_id, status_counts=s["status_counts"], segments_done=s["segments"], segments_total=s["segments"]
        )
        self.store.transition(
            job_id, ("running",), "failed" if error else "completed", finished_at=time.time(), error=error
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

    app = FastAPI(
        title="densedpo label service",
        version="1",
        lifespan=lifespan,
        description="Batch segment-level VLM preference labeling (DenseDPO). Every error answers "
        '`{"detail": "one line"}`.',
    )

    @app.exception_handler(RequestValidationError)
    async def one_line_422(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One error shape for the whole API: the first problem, named by its field.
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "header", "path"))
        given = f" (got {e['input']!r})" if isinstance(e.get("input"), str | int | float) else ""
        return JSONResponse({"detail": f"{where or 'request'}: {e.get('msg', 'invalid')}{given}"[:500]}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def errors_with_allow(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first route's methods; GET and DELETE share a path
            allowed = {
                m
                for r in app.routes
                if hasattr(r, "methods") and r.matches(request.scope)[0] != Match.NONE
                for m in r.methods
            }
            headers["Allow"] = ", ".join(sorted(allowed))
        return JSONResponse({"detail": str(exc.detail)}, exc.status_code, headers=headers)

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next):
        # Before the form is parsed (and spooled to disk): a declared length over the limit is refused at once.
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_bytes + 64 * 1024:  # room for the form's other fields
            return JSONResponse({"detail": f"upload larger than --max-upload-mb {cfg.max_upload_mb:g}"}, 413)
        return await call_next(request)

    def auth(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = creds.credentials if creds else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def public(job: dict) -> dict:
        keys = (
            "id",
            "state",
            "created_at",
            "started_at",
            "finished_at",
            "segments_done",
            "segments_total",
            "status_counts",
            "error",
            "settings",
        )
        return {k: job[k] for k in keys} | {"progress": job["segments_done"] / max(job["segments_total"], 1)}

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get(
        "/metrics",
        dependencies=[Depends(auth)],
        response_class=Response,
        responses={
            **_errors(401),
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus"},
        },
    )
    def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.post(
        "/v1/label-jobs",
        dependencies=[Depends(auth)],
        status_code=201,
        response_model=Job,
        responses={
            200: {"model": Job, "description": "the job an earlier request with this Idempotency-Key made"},
            **_errors(400, 401, 413, 422),
        },
    )
    async def submit(
        file: Annotated[
            UploadFile,
            File(description="A pairs table (parquet) to upload; its video paths are relative to --data-root."),
        ] = None,
        path: Annotated[
            str | None, Form(description="Instead of `file`: a pairs table under --data-root.", max_length=4096)
        ] = None,
        segment_seconds: Annotated[
            float | None, Form(gt=0, le=MAX_SEGMENT_SECONDS, description="Segment length in seconds [1.0].")
        ] = None,
        sample_fps: Annotated[
            float | None, Form(gt=0, le=MAX_SAMPLE_FPS, description="Frames per second shown to the VLM [8].")
        ] = None,
        min_confidence: Annotated[
            float | None, Form(ge=0, le=1, description="Below it a segment is a tie [0.5].")
        ] = None,
        prompt: Annotated[
            str | None,
            Form(pattern=PROMPT_NAME, description=f"A prompt name from the service's prompts/ [{DEFAULT_PROMPT}]."),
        ] = None,
        idempotency_key: Annotated[
            str | None,
            Header(max_length=200, description="Retrying with the same key and payload returns the same job."),
        ] = None,
    ):
        given = dict(
            segment_seconds=segment_seconds, sample_fps=sample_fps, min_confidence=min_confidence, prompt=prompt
        )
        settings = {k: v for k, v in given.items() if v is not None}
        if prompt is not None and prompt not in available_prompts():
            raise HTTPException(
                422, f"prompt {prompt!r} is not a prompt of this service; use one of {', '.join(available_prompts())}."
            )
        upload = None
        if file is not None and file.filename:
            upload = await file.read(max_bytes + 1)
            if len(upload) > max_bytes:
                raise HTTPException(413, f"upload larger than --max-upload-mb {cfg.max_upload_mb:g}")
        elif not path:
            raise HTTPException(422, "send a pairs table as the `file` field or a `path` under --data-root")
        # Idempotency first: a retry stores nothing; a key reused for another payload is refused.
        digest = hashlib.sha256(upload if upload is not None else f"path:{path}".encode())
        digest.update(json.dumps(settings, sort_keys=True).encode())
        if idempotency_key:
            existing = store.by_idempotency_key(idempotency_key)
            if existing is not None:
                if existing["request_sha256"] not in (None, digest.hexdigest()):
                    raise HTTPException(
                        422,
                        f"Idempotency-Key {idempotency_key!r} was used for another payload "
                        f"(job {existing['id']}); use a new key for a new job.",
                    )
                return JSONResponse(public(existing), status_code=200)
        job_id = secrets.token_hex(8)
        job_dir = jobs_root / job_id
        try:
            cfg_job = LabelConfig(pairs=Path("-"), out=job_dir / "labels.parquet", server=["-"], **settings)
            cfg_job.check()  # the CLI's own checks and messages
            if upload is not None:
                df = _read_upload(upload, data_root)
                pairs_path = job_dir / "pairs.parquet"
            else:
                pairs_path = confined(data_root, path)
                df = read_table(pairs_path, PAIRS)
                _confine_videos(df, pairs_path, data_root)
            # Validate like the CLI does, so a bad table is refused now, not failed later.
            cfg_job.pairs = pairs_path
            plans = plan_pairs(cfg_job, df)
            images = max_images_per_request(plans, cfg_job.sample_fps)
            if images > cfg.max_images:
                raise DenseDPOError(
                    f"this job asks {images} images per request (2 videos x frames of a {cfg_job.segment_seconds:g} s "
                    f"segment at {cfg_job.sample_fps:g} fps) but the VLM server takes at most {cfg.max_images} "
                    "(--max-images); lower sample_fps or segment_seconds."
                )
        except PathOutsideRoot as e:
            raise HTTPException(400, str(e)) from None
        except DenseDPOError as e:  # an invalid setting, table or video: the CLI's one-line message
            raise HTTPException(422, str(e)) from None
        if upload is not None:  # stored only once accepted: a refused or repeated upload leaves nothing behind
            job_dir.mkdir(parents=True, exist_ok=True)
            df.to_parquet(pairs_path, index=False)
        job, created = store.create(
            str(pairs_path), jobs_root, settings, idempotency_key, job_id=job_id, request_sha256=digest.hexdigest()
        )
        return JSONResponse(public(job), status_code=201 if created else 200)

    @app.get("/v1/label-jobs", dependencies=[Depends(auth)], response_model=list[Job], responses=_errors(401))
    def list_jobs() -> list[dict]:
        return [public(j) for j in store.list()]

    def get_or_404(job_id: str) -> dict:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @app.get(
        "/v1/label-jobs/{job_id}", dependencies=[Depends(auth)], response_model=Job, responses=_errors(401, 404, 422)
    )
    def status(job_id: str) -> dict:
        return public(get_or_404(job_id))

    @app.post(
        "/v1/label-jobs/{job_id}/cancel",
        dependencies=[Depends(auth)],
        response_model=Job,
        responses=_errors(401, 404, 422),
    )
    def cancel(job_id: str) -> dict:
        """Cancel a queued or running job; its finished segments are kept. A finished job is left as it is."""
        get_or_404(job_id)
        return public(scheduler.cancel(job_id))

    @app.delete(
        "/v1/label-jobs/{job_id}",
        dependencies=[Depends(auth)],
        status_code=204,
        response_class=Response,
        responses=_errors(401, 404, 409, 422),
    )
    def delete(job_id: str) -> Response:
        """Forget a finished job and remove its folder (labels, journal, an uploaded table); 409 while it runs."""
        job = get_or_404(job_id)
        if not scheduler.forget(job):
            raise HTTPException(
                409,
                f"job {job_id} is {job['state']}: cancel it first (POST "
                f"/v1/label-jobs/{job_id}/cancel), then delete it once it has stopped.",
            )
        return Response(status_code=204)

    parquet = {"application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}}}
    partial_header = {
        "X-Densedpo-Partial": {
            "description": "true while the job is not completed: the rows so far",
            "schema": {"type": "string", "enum": ["true", "false"]},
        }
    }

    @app.get(
        "/v1/label-jobs/{job_id}/labels",
        dependencies=[Depends(auth)],
        response_class=Response,
        responses={
            200: {"content": parquet, "headers": partial_header, "description": "labels.parquet"},
            **_errors(401, 404, 409, 422),
        },
    )
    def labels(job_id: str) -> Response:
        job = get_or_404(job_id)
        out = Path(job["job_dir"]) / "labels.parquet"
        if job["state"] == "completed" or (job["state"] == "failed" and out.exists()):
            return Response(
                out.read_bytes(), media_type="application/vnd.apache.parquet", headers={"X-Densedpo-Partial": "false"}
            )
        try:
            rows = scheduler.partial(job)
        except DenseDPOError as e:  # e.g. the videos of a failed job are gone: its segments cannot be rebuilt
            raise HTTPException(409, f"job {job_id} is {job['state']} and its rows cannot be assembled: {e}") from None
        if rows is None:
            raise HTTPException(409, f"job {job_id} is {job['state']} and has no finished segment yet")
        buf = io.BytesIO()
        validate(rows, LABELS).to_parquet(buf, index=False)
        return Response(
            buf.getvalue(), media_type="application/vnd.apache.parquet", headers={"X-Densedpo-Partial": "true"}
        )

    app.state.scheduler = scheduler
    return app


def _read_upload(data: bytes, data_root: Path) -> pd.DataFrame:
    """An uploaded pairs table, validated, with its video paths made absolute under --data-root."""
    import pyarrow.parquet as pq

    try:
        df = pq.read_table(io.BytesIO(data)).to_pandas()
    except Exception as e:  # pyarrow raises several types for bytes that are not parquet
        raise DenseDPOError(f"the upload is not a parquet table ({type(e).__name__}).") from None
    df = validate(df, PAIRS, where="uploaded pairs table")
    _confine_videos(df, data_root / "pairs.parquet", data_root)
    for col in ("video_a", "video_b"):
        df[col] = [str(confined(data_root, v)) for v in df[col]]
    return df


def _confine_videos(df: pd.DataFrame, table_path: Path, data_root: Path) -> None:
    from densedpo.tables import resolve_path

    for i, row in enumerate(df.itertuples(index=False)):
        for col in ("video_a", "video_b"):
            p = resolve_path(table_path, getattr(row, col))
            try:
                confined(data_root, str(p))
            except PathOutsideRoot:
                raise PathOutsideRoot(
                    f"row {i} (pair_id={row.pair_id!r}), column {col}: {getattr(row, col)!r} is outside --data-root."
                ) from None
