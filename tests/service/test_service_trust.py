"""Races and limits of the service, each of which once left a job or a request wrong without an error. No VLM:
the scheduler's cases drive it directly, the HTTP cases run the app in process (or under uvicorn on loopback)."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
from types import SimpleNamespace

import httpx
import pandas as pd
import pytest

from densedpo.synthetic import make_synthetic_pairs
from service.config import ServiceConfig
from service.jobs import JobStore
from service.metrics import Metrics
from service.scheduler import Scheduler
from tests.service.test_service import AUTH, TOKEN, Service


def scheduler_at(tmp_path) -> tuple[JobStore, Scheduler]:
    store = JobStore(tmp_path / "jobs.sqlite")
    return store, Scheduler(ServiceConfig(db=tmp_path / "jobs.sqlite"), store, ["http://127.0.0.1:9"], Metrics(store))


def test_settings_the_engine_refuses_fail_the_job_not_hang_it(tmp_path):
    """label_config raising (settings from another version of the service) ends the job failed, never 'running'."""
    store, scheduler = scheduler_at(tmp_path)
    store.create("p.parquet", tmp_path, {"frames_per_segment": 8}, None)
    job = store.claim_next()
    scheduler._run(job)
    after = store.get(job["id"])
    assert after["state"] == "failed" and "frames_per_segment" in after["error"]


def test_a_cancel_after_the_last_answer_leaves_the_job_completed(tmp_path, monkeypatch):
    """The cancel lands while label_pairs writes its table: every label exists, so the job is completed."""
    store, scheduler = scheduler_at(tmp_path)
    store.create("p.parquet", tmp_path, {}, None)
    job = store.claim_next()

    def finishes_while_cancelled(cfg, progress, hooks):
        assert scheduler.cancel(job["id"])["state"] == "cancelled"
        summary = {"failure_rate": 0.0, "status_counts": {"ok": 3}, "segments": 3}
        return SimpleNamespace(summary=summary)

    monkeypatch.setattr("service.scheduler.label_pairs", finishes_while_cancelled)
    scheduler._run(job)
    after = store.get(job["id"])
    assert after["state"] == "completed" and after["segments_done"] == 3


def test_writes_after_shutdown_are_dropped_and_the_job_requeued(tmp_path):
    """A worker still stopping when the service closes its database: no exception, the job resumes at restart."""
    store, _ = scheduler_at(tmp_path)
    store.create("p.parquet", tmp_path, {}, None)
    job = store.claim_next()
    store.close()
    store.update(job["id"], segments_done=5)
    assert store.transition(job["id"], ("running",), "completed") is False
    again = JobStore(tmp_path / "jobs.sqlite")
    assert again.get(job["id"])["state"] == "running" and again.requeue_running() == 1


@pytest.fixture
def app(tmp_path):
    from service.app import create_app

    (tmp_path / "data").mkdir()
    (tmp_path / "token").write_text(TOKEN)
    cfg = ServiceConfig(db=tmp_path / "jobs.sqlite", data_root=tmp_path / "data", token_file=tmp_path / "token")
    return create_app(cfg, ["http://127.0.0.1:9"]), tmp_path / "data"


def test_healthz_and_other_requests_answer_while_every_submission_check_is_busy(app, monkeypatch):
    """50 submissions whose checks block (more than the thread pool that answers sync routes has threads):
    /healthz and the job list still answer. Before, the checks filled that pool and both waited."""
    app, _ = app
    release = threading.Event()

    def slow_check(*args, **kwargs):
        release.wait(60)
        raise RuntimeError("released")

    monkeypatch.setattr("service.app.check_submission", slow_check)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH, timeout=60) as c:
            submits = [asyncio.create_task(c.post("/v1/label-jobs", data={"path": f"p{i}.parquet"})) for i in range(50)]
            await asyncio.sleep(0.5)
            try:
                health = await asyncio.wait_for(c.get("/healthz"), 10)
                jobs = await asyncio.wait_for(c.get("/v1/label-jobs"), 10)
            finally:
                release.set()
                await asyncio.gather(*submits, return_exceptions=True)
            return health, jobs

    health, jobs = asyncio.run(scenario())
    assert health.json() == {"ok": True} and jobs.status_code == 200


def test_a_path_is_run_as_it_was_checked_and_an_idempotency_race_leaves_nothing(app, monkeypatch):
    """The job keeps the table it checked (a file swapped afterwards is not read again); the loser of a race on
    one Idempotency-Key leaves no folder, and a different payload under that key is refused."""
    app, root = app
    pairs, _ = make_synthetic_pairs(root / "one", num_pairs=2, num_frames=17, height=32, width=32)

    async def submit(data, key=None):
        headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as c:
            return await c.post("/v1/label-jobs", data=data, headers=headers)

    r = asyncio.run(submit({"path": "one/pairs.parquet"}))
    assert r.status_code == 201, r.text
    job = app.state.scheduler.store.get(r.json()["id"])
    original = pd.read_parquet(job["pairs_path"])
    pd.DataFrame(
        {"pair_id": ["swapped"], "prompt": ["x"], "video_a": ["/etc/passwd"], "video_b": ["/etc/passwd"]}
    ).to_parquet(pairs)
    assert list(pd.read_parquet(job["pairs_path"])["pair_id"]) == list(original["pair_id"]) != ["swapped"]
    assert str(root) in original["video_a"].iloc[0]  # absolute: the copy finds the videos from the job's folder

    # the race: both requests pass the key lookup before either has stored its job
    make_synthetic_pairs(root / "two", num_pairs=1, num_frames=17, height=32, width=32)
    store = app.state.scheduler.store
    real_lookup = store.by_idempotency_key
    # the route's lookup sees no job yet; the store's own lookup (after its insert fails) sees the winner
    monkeypatch.setattr(
        store, "by_idempotency_key", lambda key, locked=False: real_lookup(key, True) if locked else None
    )
    first = asyncio.run(submit({"path": "two/pairs.parquet"}, key="k"))
    loser = asyncio.run(submit({"path": "two/pairs.parquet", "min_confidence": "0.9"}, key="k"))
    monkeypatch.setattr(store, "by_idempotency_key", real_lookup)
    assert first.status_code == 201 and loser.status_code == 422, loser.text
    assert "was used for another payload" in loser.json()["detail"]
    jobs_root = root.parent / "jobs-jobs"
    assert sorted(p.name for p in jobs_root.iterdir()) == sorted([job["id"], first.json()["id"]])


def test_a_chunked_upload_is_cut_at_the_cap(tmp_path):
    """No Content-Length: the service stops reading at --max-upload-mb (1 MB here) and answers 413, long before
    the client's 40 MB are sent. Before, the whole body was spooled to disk first."""
    (tmp_path / "data").mkdir()
    svc = Service(tmp_path, "http://127.0.0.1:9", "--max-upload-mb", "1").start()
    total, chunk = 40 * 2**20, 64 * 1024
    sent, answer = 0, b""
    try:
        with socket.create_connection(("127.0.0.1", svc.port), timeout=30) as s:
            head = (
                "POST /v1/label-jobs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                f"Authorization: {AUTH['Authorization']}\r\nContent-Type: multipart/form-data; boundary=x\r\n\r\n"
            )
            s.sendall(head.encode())
            part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="p.parquet"\r\n\r\n'
            s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            try:
                while sent < total:
                    if select.select([s], [], [], 0)[0]:
                        break  # the server answered: stop sending
                    s.sendall(b"%x\r\n%s\r\n" % (chunk, b"0" * chunk))
                    sent += chunk
            except OSError:
                pass  # the server closed the connection while we were sending: also a refusal
            s.settimeout(10)
            try:
                answer = s.recv(4096)
            except OSError:
                pass
    finally:
        svc.stop()
    assert sent < total // 2, f"the server read {sent} bytes of a chunked body over its 1 MB limit"
    assert not answer or answer.startswith(b"HTTP/1.1 413"), answer[:200]
