"""`densedpo serve`: a long-running batch labeling service around the same engine as `densedpo label`.

Jobs are rows in SQLite (WAL, service/jobs.py); the scheduler (service/scheduler.py) runs each job's
`label_pairs` in a worker thread with its own journal, so a killed service resumes every running job on restart
without asking a finished segment again. At most `max_running_jobs` run at once and they share the VLM servers.
This file assembles the HTTP API: one error shape, the upload limit, the token, and the routes.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from densedpo.errors import DenseDPOError
from densedpo.tables import LABELS, PAIRS, validate, write_table
from labeler.prompts import DEFAULT_PROMPT, available_prompts
from service.auth import TokenGate, bearer_auth, load_token
from service.config import ServiceConfig, db_lock
from service.jobs import JobStore
from service.metrics import Metrics
from service.scheduler import Scheduler
from service.submit import PathOutsideRoot, check_submission

__all__ = ["ServiceConfig", "create_app", "db_lock"]

# Bounds a job's settings may take (the OpenAPI document states them; the CLI's checks run as well).
MAX_SEGMENT_SECONDS = 60.0
MAX_SAMPLE_FPS = 60.0
# The prompt field is an enum of the names this service holds, so its schema admits nothing the service refuses.
PROMPT_NAMES = available_prompts()
PROMPT_NAME = r"^[A-Za-z0-9_.-]{1,100}$"  # and never a path
PARQUET = "application/vnd.apache.parquet"
SUBMISSION_CHECKS = 2  # submissions checked at once (each probes every video of its table with 4 threads)


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


JOB_FIELDS = tuple(f for f in Job.model_fields if f != "progress")


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


def public(job: dict) -> dict:
    """A job row as the API shows it."""
    return {k: job[k] for k in JOB_FIELDS} | {"progress": job["segments_done"] / max(job["segments_total"], 1)}


@dataclass
class Service:
    """What the routes share."""

    cfg: ServiceConfig
    store: JobStore
    scheduler: Scheduler
    metrics: Metrics
    jobs_root: Path
    data_root: Path
    checks: ThreadPoolExecutor  # submissions are checked here, never in the pool that answers other requests

    @property
    def max_bytes(self) -> int:
        return int(self.cfg.max_upload_mb * 2**20)

    def job_or_404(self, job_id: str) -> dict:
        job = self.store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job


def create_app(cfg: ServiceConfig, servers: list[str]) -> FastAPI:
    token = load_token(cfg)
    store = JobStore(cfg.db)
    metrics = Metrics(store)
    scheduler = Scheduler(cfg, store, servers, metrics)
    jobs_root = cfg.db.resolve().parent / (cfg.db.stem + "-jobs")
    checks = ThreadPoolExecutor(max_workers=SUBMISSION_CHECKS, thread_name_prefix="submission-check")
    service = Service(cfg, store, scheduler, metrics, jobs_root, cfg.data_root.resolve(), checks)

    @asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        yield
        scheduler.stop()
        service.checks.shutdown(wait=True, cancel_futures=True)
        store.close()

    app = FastAPI(
        title="densedpo label service",
        version="1",
        lifespan=lifespan,
        description="Batch segment-level VLM preference labeling (DenseDPO). Every error answers "
        '`{"detail": "one line"}`.',
    )
    install_error_handlers(app)
    install_body_limit(app, service)
    app.add_middleware(TokenGate, token=token)  # outermost: before the body limit and before any body is read
    app.get("/healthz")(healthz)
    app.include_router(submit_router(service), dependencies=[Depends(bearer_auth(token))])
    app.include_router(jobs_router(service), dependencies=[Depends(bearer_auth(token))])
    app.state.scheduler = scheduler
    return app


async def healthz() -> dict[str, bool]:
    """On the event loop: no thread pool, so no amount of work queued in one can delay it."""
    return {"ok": True}


# ---------------------------------------------------------------------------------------------- errors, limits


def install_error_handlers(app: FastAPI) -> None:
    """One error shape for the whole API: `{"detail": "one line"}`, the first problem named by its field."""

    @app.exception_handler(RequestValidationError)
    async def one_line_422(request: Request, exc: RequestValidationError) -> JSONResponse:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "header", "path"))
        given = f" (got {e['input']!r})" if isinstance(e.get("input"), str | int | float) else ""
        return JSONResponse({"detail": f"{where or 'request'}: {e.get('msg', 'invalid')}{given}"[:500]}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def errors_with_allow(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first route's methods; GET and DELETE share a path
            matching = [r for r in app.routes if hasattr(r, "methods") and r.matches(request.scope)[0] != Match.NONE]
            headers["Allow"] = ", ".join(sorted({m for r in matching for m in r.methods}))
        return JSONResponse({"detail": str(exc.detail)}, exc.status_code, headers=headers)


class BodyLimit:
    """Refuses a body over the limit before the form is parsed and spooled to disk: a declared Content-Length at
    once, a chunked body as soon as the bytes read pass the limit (reading stops there)."""

    def __init__(self, app, max_bytes: int, detail: str):
        self.app, self.max_bytes, self.detail = app, max_bytes, detail

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").decode()
        if length.isdigit() and int(length) > self.max_bytes:
            return await JSONResponse({"detail": self.detail}, 413)(scope, receive, send)
        read = 0

        async def counted():
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_bytes:  # FastAPI passes an HTTPException from the form parser through as is
                    raise StarletteHTTPException(413, self.detail)
            return message

        await self.app(scope, counted, send)


def install_body_limit(app: FastAPI, service: Service) -> None:
    detail = f"upload larger than --max-upload-mb {service.cfg.max_upload_mb:g}"
    app.add_middleware(BodyLimit, max_bytes=service.max_bytes + 64 * 1024, detail=detail)  # room for other fields


# ---------------------------------------------------------------------------------------------- routes


# OpenAPI links: what a client (or a fuzzer) can do with the id of the job a submission made.
JOB_LINKS = {
    name: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}, "description": what}
    for name, op, what in (
        ("status", "get_job", "the job's state and progress"),
        ("labels", "get_job_labels", "its labels.parquet (partial while it runs)"),
        ("cancel", "cancel_job", "cancel it"),
        ("delete", "delete_job", "forget it once finished"),
    )
}


def submit_router(service: Service) -> APIRouter:
    router = APIRouter()
    earlier = "the job an earlier request with this Idempotency-Key made"
    responses = {
        201: {"description": "the job was created", "links": JOB_LINKS},
        200: {"model": Job, "description": earlier, "links": JOB_LINKS},
        **_errors(400, 401, 413, 422),
    }

    @router.post("/v1/label-jobs", status_code=201, response_model=Job, responses=responses, operation_id="submit_job")
    async def submit(
        file: Annotated[
            UploadFile,
            File(description="A pairs table (parquet) to upload; its video paths are relative to `base`."),
        ] = None,
        base: Annotated[
            str | None,
            Form(
                description="With `file`: the folder under --data-root the uploaded table's video paths are relative "
                "to (e.g. the folder `generate` wrote it in) [the root itself].",
                max_length=4096,
            ),
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
            Form(
                pattern=PROMPT_NAME,
                description=f"A prompt name from the service's prompts/ [{DEFAULT_PROMPT}].",
                json_schema_extra={"enum": PROMPT_NAMES},
            ),
        ] = None,
        idempotency_key: Annotated[
            str | None,
            Header(max_length=200, description="Retrying with the same key and payload returns the same job."),
        ] = None,
    ):
        given = dict(segment_seconds=segment_seconds, sample_fps=sample_fps, min_confidence=min_confidence)
        settings = {k: v for k, v in {**given, "prompt": prompt}.items() if v is not None}
        if prompt is not None and prompt not in PROMPT_NAMES:
            names = ", ".join(PROMPT_NAMES)
            raise HTTPException(422, f"prompt {prompt!r} is not a prompt of this service; use one of {names}.")
        upload = None
        if file is not None and file.filename:
            upload = await file.read(service.max_bytes + 1)
            if len(upload) > service.max_bytes:
                raise HTTPException(413, f"upload larger than --max-upload-mb {service.cfg.max_upload_mb:g}")
        elif not path:
            raise HTTPException(422, "send a pairs table as the `file` field or a `path` under --data-root")
        loop = asyncio.get_running_loop()
        job = functools.partial(create_job, service, upload, path, settings, idempotency_key, base)
        return await loop.run_in_executor(service.checks, job)

    return router


def create_job(
    service: Service, upload: bytes | None, path: str | None, settings: dict, key: str | None, base: str | None = None
):
    """Idempotency first (a retry stores nothing; a key reused for another payload is refused), then the checks,
    then the job. Blocking work (table reading, video probing): runs in a worker thread, off the event loop."""
    digest = hashlib.sha256(upload if upload is not None else f"path:{path}".encode())
    digest.update(json.dumps({**settings, **({"base": base} if base else {})}, sort_keys=True).encode())
    if key:
        existing = service.store.by_idempotency_key(key)
        if existing is not None:
            if existing["request_sha256"] not in (None, digest.hexdigest()):
                raise HTTPException(
                    422,
                    f"Idempotency-Key {key!r} was used for another payload (job {existing['id']}); use a new key "
                    "for a new job.",
                )
            return JSONResponse(public(existing), status_code=200)
    job_id = secrets.token_hex(8)
    job_dir = service.jobs_root / job_id
    try:
        accepted = check_submission(upload, path, settings, job_dir, service.data_root, service.cfg.max_images, base)
    except PathOutsideRoot as e:
        raise HTTPException(400, str(e)) from None
    except DenseDPOError as e:  # an invalid setting, table or video: the CLI's one-line message
        raise HTTPException(422, str(e)) from None
    # The job runs the table that was checked: an upload, or a copy of the `path` as it was read (a file swapped
    # after the check is not read again). Stored only once accepted: a refused request leaves nothing behind.
    job_dir.mkdir(parents=True, exist_ok=True)
    pairs_path = job_dir / "pairs.parquet"
    write_table(accepted.table, pairs_path, PAIRS)
    job, created = service.store.create(
        str(pairs_path), service.jobs_root, settings, key, job_id=job_id, request_sha256=digest.hexdigest()
    )
    if not created:  # another request with this key won the race meanwhile: keep nothing, compare its payload
        shutil.rmtree(job_dir, ignore_errors=True)
        if job["request_sha256"] not in (None, digest.hexdigest()):
            raise HTTPException(
                422,
                f"Idempotency-Key {key!r} was used for another payload (job {job['id']}); use a new key for a new job.",
            )
    return JSONResponse(public(job), status_code=201 if created else 200)


def jobs_router(service: Service) -> APIRouter:
    router = APIRouter()
    store, scheduler = service.store, service.scheduler
    prometheus_text = {200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus"}}

    @router.get("/metrics", response_class=Response, responses={**_errors(401), **prometheus_text})
    def prometheus() -> Response:
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @router.get("/v1/label-jobs", response_model=list[Job], responses=_errors(401), operation_id="list_jobs")
    def list_jobs() -> list[dict]:
        return [public(j) for j in store.list()]

    @router.get("/v1/label-jobs/{job_id}", response_model=Job, responses=_errors(401, 404, 422), operation_id="get_job")
    def status(job_id: str) -> dict:
        return public(service.job_or_404(job_id))

    @router.post(
        "/v1/label-jobs/{job_id}/cancel",
        response_model=Job,
        responses=_errors(401, 404, 422),
        operation_id="cancel_job",
    )
    def cancel(job_id: str) -> dict:
        """Cancel a queued or running job; its finished segments are kept. A finished job is left as it is."""
        service.job_or_404(job_id)
        return public(scheduler.cancel(job_id))

    @router.delete(
        "/v1/label-jobs/{job_id}",
        status_code=204,
        response_class=Response,
        responses=_errors(401, 404, 409, 422),
        operation_id="delete_job",
    )
    def delete(job_id: str) -> Response:
        """Forget a finished job and remove its folder (labels, journal, an uploaded table); 409 while it runs."""
        job = service.job_or_404(job_id)
        if not scheduler.forget(job):
            raise HTTPException(
                409,
                f"job {job_id} is {job['state']}: cancel it first (POST /v1/label-jobs/{job_id}/cancel), then "
                "delete it once it has stopped.",
            )
        return Response(status_code=204)

    @router.get(
        "/v1/label-jobs/{job_id}/labels",
        response_class=Response,
        responses={**LABELS_RESPONSE, **_errors(401, 404, 409, 422)},
        operation_id="get_job_labels",
    )
    def labels(job_id: str) -> Response:
        return job_labels(service, job_id)

    return router


LABELS_RESPONSE = {
    200: {
        "content": {PARQUET: {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            "X-Densedpo-Partial": {
                "description": "true while the job is not completed: the rows so far",
                "schema": {"type": "string", "enum": ["true", "false"]},
            }
        },
        "description": "labels.parquet",
    }
}


def job_labels(service: Service, job_id: str) -> Response:
    """The job's labels.parquet; while it runs (or after it stopped early), the rows finished so far."""
    job = service.job_or_404(job_id)
    out = Path(job["job_dir"]) / "labels.parquet"
    if job["state"] == "completed" or (job["state"] == "failed" and out.exists()):
        return Response(out.read_bytes(), media_type=PARQUET, headers={"X-Densedpo-Partial": "false"})
    try:
        rows = service.scheduler.partial(job)
    except DenseDPOError as e:  # e.g. the videos of a failed job are gone: its segments cannot be rebuilt
        raise HTTPException(409, f"job {job_id} is {job['state']} and its rows cannot be assembled: {e}") from None
    if rows is None:
        raise HTTPException(409, f"job {job_id} is {job['state']} and has no finished segment yet")
    buf = io.BytesIO()
    validate(rows, LABELS).to_parquet(buf, index=False)
    return Response(buf.getvalue(), media_type=PARQUET, headers={"X-Densedpo-Partial": "true"})
