"""`densedpo serve` as a real uvicorn process on loopback, labeling with the session's real vLLM server."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from densedpo.synthetic import make_synthetic_pairs
from labeler.servers import free_port
from tests.conftest import REPO, missing, run_cli
from tests.fake_openai import Hold, serve_in_thread_app, stop_thread_server
from tests.labeler.test_vllm_integration import vllm_requests

pytestmark = pytest.mark.vllm
TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Service:
    def __init__(self, root: Path, vllm: str, *extra: str):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (root / "token").write_text(TOKEN)
        self.args = [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--server",
            vllm,
            "--data-root",
            str(root / "data"),
            "--db",
            str(root / "jobs.sqlite"),
            "--token-file",
            str(root / "token"),
            "--port",
            str(self.port),
            *extra,
        ]
        self.proc = None

    def start(self) -> Service:
        self.log = open(self.root / "serve.log", "ab")
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError((self.root / "serve.log").read_text()[-2000:])

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        self.log.close()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=AUTH, timeout=60)


def wait_for(client, job_id, states=("completed", "failed", "cancelled"), timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/label-jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} stuck in {job['state']}")


class Gate:
    """Every route passed through to the real vLLM, unchanged (vLLM checks every request), with a `Hold` on the
    segment requests (a cancel test failed on CI when the whole job ran between two polls)."""

    def __init__(self, upstream: str):
        self.upstream, self.hold = upstream, Hold()

    async def forward(self, request: Request) -> Response:
        body = await request.body()
        await self.hold.wait_turn(request.headers.get("x-request-id", ""))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with httpx.AsyncClient(timeout=120) as client:
            r = await client.request(
                request.method,
                f"{self.upstream}{request.url.path}",
                params=request.query_params,
                content=body,
                headers=headers,
            )
        return Response(r.content, r.status_code, media_type=r.headers.get("content-type"))

    def __enter__(self) -> Gate:
        route = Route("/{path:path}", self.forward, methods=["GET", "POST"])
        self._server, self._thread, self.url = serve_in_thread_app(Starlette(routes=[route]))
        return self

    def __exit__(self, *exc) -> None:
        self.hold.release()
        stop_thread_server(self._server, self._thread)


@pytest.fixture(scope="module")
def gate(vllm_server):
    with Gate(vllm_server) as g:
        yield g


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("svc")
    make_synthetic_pairs(root / "data" / "small", num_pairs=3, height=32, width=32)
    make_synthetic_pairs(root / "data" / "big", num_pairs=12, height=32, width=32, seed=1)
    return root


@pytest.fixture(scope="module")
def service(root, gate):
    svc = Service(root, gate.url, "--max-running-jobs", "1", "--max-upload-mb", "0.05").start()
    yield svc
    svc.stop()


def test_job_lifecycle(service):
    with service.client() as c:
        r = c.post("/v1/label-jobs", data={"path": "small/pairs.parquet", "min_confidence": "0"})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["state"] in ("queued", "running") and job["settings"] == {"min_confidence": 0.0}
        done = wait_for(c, job["id"])
        assert done["state"] == "completed", done
        assert done["segments_done"] == done["segments_total"] == 9
        assert sum(done["status_counts"].values()) == 9 and done["started_at"] <= done["finished_at"]
        r = c.get(f"/v1/label-jobs/{job['id']}/labels")
        assert r.status_code == 200 and r.headers["X-Densedpo-Partial"] == "false"
        df = pd.read_parquet(io.BytesIO(r.content))
        assert len(df) == 9 and not df.duplicated(["pair_id", "segment_idx"]).any()
        assert job["id"] in [j["id"] for j in c.get("/v1/label-jobs").json()]
        metrics = c.get("/metrics").text
        assert 'densedpo_jobs{state="completed"}' in metrics
        assert "densedpo_vlm_request_seconds_count" in metrics and "densedpo_segments_labeled_total" in metrics
    assert httpx.get(f"{service.url}/docs").status_code == 200  # OpenAPI docs are served
    assert "/v1/label-jobs" in httpx.get(f"{service.url}/openapi.json").json()["paths"]


def test_auth(service):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        for method, path in (
            ("GET", "/v1/label-jobs"),
            ("POST", "/v1/label-jobs"),
            ("GET", "/metrics"),
            ("GET", "/v1/label-jobs/x"),
            ("DELETE", "/v1/label-jobs/x"),
            ("POST", "/v1/label-jobs/x/cancel"),
            ("GET", "/v1/label-jobs/x/labels"),
        ):
            r = httpx.request(method, f"{service.url}{path}", headers=headers)
            assert r.status_code == 401, (method, path, headers, r.status_code)
    assert httpx.get(f"{service.url}/healthz").status_code == 200


def test_paths_are_confined_to_data_root(service, root, tmp_path):
    outside = tmp_path / "outside.parquet"
    pd.read_parquet(root / "data/small/pairs.parquet").to_parquet(outside)
    (root / "data" / "link.parquet").unlink(missing_ok=True)
    (root / "data" / "link.parquet").symlink_to(outside)
    with service.client() as c:
        for path in ("../token", "small/../../token", str(outside), "link.parquet"):
            r = c.post("/v1/label-jobs", data={"path": path})
            assert r.status_code == 400 and "outside --data-root" in r.json()["detail"], (path, r.text)
        # an uploaded table may not point at videos outside either
        df = pd.DataFrame([{"pair_id": "p", "prompt": "x", "video_a": "../../etc/a.mp4", "video_b": "small/x.mp4"}])
        buf = io.BytesIO()
        df.to_parquet(buf)
        r = c.post("/v1/label-jobs", files={"file": ("p.parquet", buf.getvalue())})
        assert r.status_code == 400 and "column video_a" in r.json()["detail"]


def test_bad_uploads(service, root):
    with service.client() as c:
        r = c.post("/v1/label-jobs", files={"file": ("p.parquet", b"x" * 60_000)})
        assert r.status_code == 413
        r = c.post("/v1/label-jobs", files={"file": ("p.parquet", b"not parquet")})
        assert r.status_code == 422 and "not a parquet table" in r.json()["detail"]
        buf = io.BytesIO()
        pd.DataFrame([{"pair_id": "p", "prompt": "x", "video_a": "small/a.mp4"}]).to_parquet(buf)
        r = c.post("/v1/label-jobs", files={"file": ("p.parquet", buf.getvalue())})
        assert r.status_code == 422 and "lacks required column(s) video_b" in r.json()["detail"]
        small = pd.read_parquet(root / "data/small/pairs.parquet")
        small["video_a"] = "small/" + small["video_a"]
        small["video_b"] = "small/" + small["video_b"]
        small.loc[1, "video_b"] = "small/missing.mp4"
        buf = io.BytesIO()
        small.to_parquet(buf)
        r = c.post("/v1/label-jobs", files={"file": ("p.parquet", buf.getvalue())})
        assert r.status_code == 422 and "row 1" in r.json()["detail"] and "video not found" in r.json()["detail"]
        r = c.post("/v1/label-jobs", data={"path": "small/pairs.parquet", "sample_fps": "fast"})
        assert r.status_code == 422 and "sample_fps" in r.json()["detail"]


def test_an_upload_says_which_folder_its_video_paths_are_relative_to(service, root):
    """A table as `generate` writes it (video paths relative to its own folder) uploaded without `base`: 422 naming
    the field; with base=small it is accepted and labeled; a base outside --data-root is refused (400)."""
    table = (root / "data/small/pairs.parquet").read_bytes()
    with service.client() as c:
        r = c.post("/v1/label-jobs", files={"file": ("p.parquet", table)})
        detail = r.json()["detail"]
        assert r.status_code == 422 and "video not found" in detail and "relative to --data-root itself" in detail
        assert "`base` form field" in detail, detail
        r = c.post("/v1/label-jobs", files={"file": ("p.parquet", table)}, data={"base": "../"})
        assert r.status_code == 400 and "outside --data-root" in r.json()["detail"]
        r = c.post(
            "/v1/label-jobs", files={"file": ("p.parquet", table)}, data={"base": "small", "min_confidence": "0"}
        )
        assert r.status_code == 201, r.text
        assert wait_for(c, r.json()["id"])["segments_done"] == 9


def test_idempotency_and_upload(service, root):
    small = pd.read_parquet(root / "data/small/pairs.parquet")
    small["video_a"] = "small/" + small["video_a"]
    small["video_b"] = "small/" + small["video_b"]
    buf = io.BytesIO()
    small.to_parquet(buf)
    with service.client() as c:
        first = c.post(
            "/v1/label-jobs", files={"file": ("p.parquet", buf.getvalue())}, headers={"Idempotency-Key": "k1"}
        )
        again = c.post(
            "/v1/label-jobs", files={"file": ("p.parquet", buf.getvalue())}, headers={"Idempotency-Key": "k1"}
        )
        assert first.status_code == 201 and again.status_code == 200
        assert first.json()["id"] == again.json()["id"]
        assert wait_for(c, first.json()["id"])["state"] == "completed"


def test_two_jobs_queue_and_cancel_keeps_finished_work(service, gate):
    """max_running_jobs=1: the second job waits for the first; a cancelled job stops and keeps its rows."""
    gate.hold.hold_after(20)  # of the big job's 72 requests, 20 are answered, the rest wait for the cancel
    try:
        with service.client() as c:
            big = c.post("/v1/label-jobs", data={"path": "big/pairs.parquet"}).json()
            small = c.post("/v1/label-jobs", data={"path": "small/pairs.parquet"}).json()
            assert c.get(f"/v1/label-jobs/{small['id']}").json()["state"] == "queued"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                gate.hold.held and c.get(f"/v1/label-jobs/{big['id']}").json()["segments_done"] >= 3
            ):
                time.sleep(0.02)
            assert gate.hold.held and c.get(f"/v1/label-jobs/{big['id']}").json()["state"] == "running"
            t0 = time.monotonic()
            c.post(f"/v1/label-jobs/{big['id']}/cancel")
    finally:
        gate.hold.release()
    with service.client() as c:
        cancelled = wait_for(c, big["id"])
        assert cancelled["state"] == "cancelled" and time.monotonic() - t0 < 10
        r = c.get(f"/v1/label-jobs/{big['id']}/labels")
        assert r.status_code == 200 and r.headers["X-Densedpo-Partial"] == "true"
        rows = pd.read_parquet(io.BytesIO(r.content))
        assert 3 <= len(rows) < 36 and not rows.duplicated(["pair_id", "segment_idx"]).any()
        while not c.get(f"/v1/label-jobs/{big['id']}").json()["status_counts"] and time.monotonic() < deadline:
            time.sleep(0.05)  # the worker records the finished rows' figures as it stops
        job = c.get(f"/v1/label-jobs/{big['id']}").json()
        rows = pd.read_parquet(io.BytesIO(c.get(f"/v1/label-jobs/{big['id']}/labels").content))
        assert job["segments_done"] == len(rows) == sum(job["status_counts"].values())  # not 36/36, not {}
        assert {k: v for k, v in job["status_counts"].items() if v} == rows["status"].value_counts().to_dict()
        done = wait_for(c, small["id"])
        assert done["state"] == "completed" and done["started_at"] >= cancelled["finished_at"] - 0.5


def test_sigkill_mid_job_then_restart(root, vllm_server, tmp_path):
    """kill -9 the service mid-job; restarted, it finishes the job: one row per segment, nothing asked twice."""
    own = tmp_path / "svc"
    own.mkdir()
    os.symlink(root / "data", own / "data")
    svc = Service(own, vllm_server, "--concurrency", "1").start()
    before = vllm_requests(vllm_server)
    with svc.client() as c:
        job = c.post("/v1/label-jobs", data={"path": "big/pairs.parquet"}).json()
        deadline = time.monotonic() + 60
        while c.get(f"/v1/label-jobs/{job['id']}").json()["segments_done"] < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
    svc.stop(signal.SIGKILL)
    journal = next(own.glob("jobs-jobs/*/labels.parquet.journal.jsonl"))
    answered_at_kill = len(journal.read_text().splitlines()) - 1
    assert 16 <= answered_at_kill < 72
    svc.start()
    with svc.client() as c:
        done = wait_for(c, job["id"])
        assert done["state"] == "completed", done
        df = pd.read_parquet(io.BytesIO(c.get(f"/v1/label-jobs/{job['id']}/labels").content))
    svc.stop()
    assert len(df) == 36 and not df.duplicated(["pair_id", "segment_idx"]).any()
    ids = [line.split('"request_id":"')[1].split('"')[0] for line in journal.read_text().splitlines()[1:]]
    assert len(ids) == len(set(ids)) == 72
    # 72 requests + one constraint probe per run, + at most the one request in flight at the kill
    assert 74 <= vllm_requests(vllm_server) - before <= 75


def test_cli_against_the_service(service, root, tmp_path):
    out = tmp_path / "labels.parquet"
    r = run_cli(
        "jobs",
        "submit",
        "--service",
        service.url,
        "--token-file",
        service.root / "token",
        "--path",
        "small/pairs.parquet",
        "--wait",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    assert len(pd.read_parquet(out)) == 9
    r = run_cli(
        "jobs", "submit", "--service", service.url, "--path", "small/pairs.parquet", env={"DENSEDPO_TOKEN": "nope"}
    )
    assert r.returncode == 2 and "401" in r.stderr and "Traceback" not in r.stderr


def test_a_job_whose_pairs_turn_bad_fails_alone(service, root):
    import shutil

    shutil.copytree(root / "data" / "small", root / "data" / "doomed", dirs_exist_ok=True)
    with service.client() as c:
        blocker = c.post("/v1/label-jobs", data={"path": "big/pairs.parquet"}).json()
        doomed = c.post("/v1/label-jobs", data={"path": "doomed/pairs.parquet"}).json()
        assert doomed["state"] == "queued"
        for video in (root / "data" / "doomed" / "videos").glob("*_b.mp4"):
            video.unlink()  # the table turns bad after it was accepted
        c.post(f"/v1/label-jobs/{blocker['id']}/cancel")
        failed = wait_for(c, doomed["id"])
        assert failed["state"] == "failed"
        assert "video not found" in failed["error"] and "column video_b" in failed["error"]
        ok = c.post("/v1/label-jobs", data={"path": "small/pairs.parquet"}).json()
        assert wait_for(c, ok["id"])["state"] == "completed"


def test_cli_says_when_the_service_is_unreachable(tmp_path):
    (tmp_path / "token").write_text(TOKEN)
    r = run_cli("jobs", "list", "--service", f"http://127.0.0.1:{free_port()}", "--token-file", tmp_path / "token")
    assert r.returncode == 2 and "cannot reach the service" in r.stderr and "Traceback" not in r.stderr, r.stderr
    (tmp_path / "bad").write_text("tökén")
    r = run_cli("jobs", "list", "--service", "http://127.0.0.1:9", "--token-file", tmp_path / "bad")
    assert r.returncode == 2 and "one line of ASCII" in r.stderr


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("segment_seconds", "0", "segment_seconds: Input should be greater than 0"),
        ("segment_seconds", "-1", "segment_seconds: Input should be greater than 0"),
        ("segment_seconds", "nan", "segment_seconds"),
        ("segment_seconds", "inf", "segment_seconds"),
        ("segment_seconds", "3", "asks 50 images per request"),  # 2 x 25 frames (49 at 8 of 16 fps) > 40
        ("min_confidence", "7", "min_confidence: Input should be less than or equal to 1"),
        ("min_confidence", "nan", "min_confidence"),
        ("sample_fps", "0", "sample_fps: Input should be greater than 0"),
        ("prompt", "/etc/passwd", "prompt: String should match pattern"),
        ("prompt", "../prompts/segment_preference_v1", "prompt: String should match pattern"),
        ("prompt", "nope", "prompt 'nope' is not a prompt of this service; use one of segment_preference_v1"),
    ],
)
def test_every_setting_is_validated_at_submission(service, field, value, fragment):
    with service.client() as c:
        r = c.post("/v1/label-jobs", data={"path": "small/pairs.parquet", field: value})
    assert r.status_code == 422 and fragment in r.json()["detail"], r.text
    assert "\n" not in r.json()["detail"]


def test_idempotency_key_reused_for_another_payload_and_no_orphans(service, root):
    jobs_root = root / "jobs-jobs"
    with service.client() as c:
        first = c.post("/v1/label-jobs", data={"path": "small/pairs.parquet"}, headers={"Idempotency-Key": "k2"})
        assert first.status_code == 201
        before = sorted(p.name for p in jobs_root.iterdir())
        jobs_before = sorted(j["id"] for j in c.get("/v1/label-jobs").json())
        again = c.post("/v1/label-jobs", data={"path": "small/pairs.parquet"}, headers={"Idempotency-Key": "k2"})
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        other = c.post(
            "/v1/label-jobs",
            data={"path": "small/pairs.parquet", "min_confidence": "0.9"},
            headers={"Idempotency-Key": "k2"},
        )
        assert other.status_code == 422 and "was used for another payload" in other.json()["detail"]
        # retries stored nothing: no new job, no new folder (the first job's own folder appears when it starts,
        # which may fall between the two listings)
        after = sorted(p.name for p in jobs_root.iterdir())
        assert set(after) - set(before) <= {first.json()["id"]}, (before, after)
        assert sorted(j["id"] for j in c.get("/v1/label-jobs").json()) == jobs_before
        wait_for(c, first.json()["id"])


def test_cancel_is_one_transition_even_when_the_job_was_just_claimed(tmp_path):
    """The race of the old cancel: the scheduler claims the job between the state read and the transition."""
    from service.config import ServiceConfig
    from service.jobs import JobStore
    from service.metrics import Metrics
    from service.scheduler import Scheduler

    store = JobStore(tmp_path / "jobs.sqlite")
    scheduler = Scheduler(ServiceConfig(db=tmp_path / "jobs.sqlite"), store, ["-"], Metrics(store))
    job, _ = store.create("p.parquet", tmp_path, {}, None)
    assert store.claim_next()["id"] == job["id"]  # claimed: now 'running'
    assert scheduler.cancel(job["id"])["state"] == "cancelled"
    assert job["id"] in scheduler.cancelled  # its worker stops before the next request
    assert not store.transition(job["id"], ("running",), "completed")  # a late finish cannot undo the cancel
    done, _ = store.create("q.parquet", tmp_path, {}, None)
    store.transition(done["id"], ("queued",), "completed")
    assert scheduler.cancel(done["id"])["state"] == "completed" and done["id"] not in scheduler.cancelled


def test_delete_a_finished_job_and_refuse_a_running_one(service, root):
    with service.client() as c:
        big = c.post("/v1/label-jobs", data={"path": "big/pairs.parquet"}).json()
        wait_for(c, big["id"], states=("running",))
        r = c.delete(f"/v1/label-jobs/{big['id']}")
        assert r.status_code == 409 and "cancel it first" in r.json()["detail"]
        c.post(f"/v1/label-jobs/{big['id']}/cancel")
        wait_for(c, big["id"])
        deadline = time.monotonic() + 30
        while (r := c.delete(f"/v1/label-jobs/{big['id']}")).status_code == 409 and time.monotonic() < deadline:
            time.sleep(0.1)  # the worker is still stopping
        assert r.status_code == 204
        assert c.get(f"/v1/label-jobs/{big['id']}").status_code == 404
        assert c.get(f"/v1/label-jobs/{big['id']}/labels").status_code == 404
        assert not (root / "jobs-jobs" / big["id"]).exists()


def test_metrics_count_a_job(service):
    def sample(text: str, name: str) -> float:
        import re

        m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    with service.client() as c:
        before = c.get("/metrics").text
        job = c.post("/v1/label-jobs", data={"path": "small/pairs.parquet", "min_confidence": "0"}).json()
        wait_for(c, job["id"])
        after = c.get("/metrics").text

    def grew(name: str) -> float:
        return sample(after, name) - sample(before, name)

    assert grew("densedpo_segments_labeled_total") == 9
    assert grew("densedpo_vlm_request_seconds_count") == 18  # 9 segments x 2 orders; the probe is not counted
    assert sample(after, 'densedpo_jobs{state="completed"}') >= 1
    assert sample(after, 'densedpo_jobs{state="running"}') == 0


def test_openapi_document_holds_under_schemathesis(service, root, tmp_path):
    """Every documented input fuzzed against the real service, all checks: no 500, answers match the document."""
    import shutil

    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        missing("schemathesis", "schemathesis is not installed (pip install -e '.[dev]')")
    with service.client() as c:
        job = c.post("/v1/label-jobs", data={"path": "small/pairs.parquet"}).json()
        wait_for(c, job["id"])
    r = subprocess.run(
        [
            st,
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            f"{service.url}/openapi.json",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            "all",
            "--max-examples",
            "40",
            "--seed",
            "7",
            "--generation-deterministic",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "DENSEDPO_TEST_JOB_ID": job["id"]},
    )
    assert r.returncode == 0, r.stdout[-4000:]
    assert "generated" in r.stdout and "Tested: 8" in r.stdout, r.stdout[-2000:]  # every operation was exercised


def test_a_failed_job_whose_videos_are_gone_answers_409(service, root):
    import shutil

    shutil.copytree(root / "data" / "small", root / "data" / "gone", dirs_exist_ok=True)
    with service.client() as c:
        blocker = c.post("/v1/label-jobs", data={"path": "big/pairs.parquet"}).json()
        job = c.post("/v1/label-jobs", data={"path": "gone/pairs.parquet"}).json()
        shutil.rmtree(root / "data" / "gone" / "videos")
        c.post(f"/v1/label-jobs/{blocker['id']}/cancel")
        assert wait_for(c, job["id"])["state"] == "failed"
        r = c.get(f"/v1/label-jobs/{job['id']}/labels")
        assert r.status_code == 409 and "video not found" in r.json()["detail"], r.text
        assert c.get("/v1/label-jobs/0123/labels").status_code == 404


def test_token_sources_and_sigterm_requeues(root, vllm_server, tmp_path):
    """DENSEDPO_TOKEN, else a token written beside --db; SIGTERM mid-job leaves it to resume at the next start."""
    own = tmp_path / "svc"
    own.mkdir()
    os.symlink(root / "data", own / "data")
    svc = Service(own, vllm_server, "--concurrency", "1")
    svc.args = [a for a in svc.args if a not in ("--token-file", str(own / "token"))]
    env_token = "from-the-environment"
    os.environ["DENSEDPO_TOKEN"] = env_token
    try:
        svc.start()
    finally:
        del os.environ["DENSEDPO_TOKEN"]
    assert httpx.get(f"{svc.url}/v1/label-jobs", headers={"Authorization": f"Bearer {env_token}"}).status_code == 200
    with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {env_token}"}, timeout=60) as c:
        job = c.post("/v1/label-jobs", data={"path": "big/pairs.parquet"}).json()
        wait_for(c, job["id"], states=("running",))
    svc.stop(signal.SIGTERM)  # graceful: the running job stays 'running' in the database and is requeued
    svc.start()  # no DENSEDPO_TOKEN, no --token-file: a new token beside the database
    token = (own / "jobs.sqlite.token").read_text().strip()
    assert len(token) >= 32 and httpx.get(f"{svc.url}/v1/label-jobs", headers=AUTH).status_code == 401
    with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        assert wait_for(c, job["id"])["state"] == "completed"
    svc.stop()


def test_a_second_service_on_one_db_exits_at_once(service, root):
    r = run_cli(
        "serve",
        "--server",
        "http://127.0.0.1:9",
        "--db",
        root / "jobs.sqlite",
        "--data-root",
        root / "data",
        "--token-file",
        root / "token",
        "--port",
        str(free_port()),
        timeout=30,
    )
    assert r.returncode == 2, r.stderr  # refused, not queued: a waiting run would hit run_cli's timeout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--db {root / 'jobs.sqlite'} is in use by another densedpo run (pid" in lines[0]
    assert f"pid {service.proc.pid} on" in lines[0]
    with service.client() as c:
        assert c.get("/v1/label-jobs").status_code == 200  # the first one is unharmed
