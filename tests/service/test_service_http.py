"""The service's HTTP layer without a VLM: submissions are checked off the event loop, and nothing of an
unauthenticated body is read. The VLM URL is a dead port (no job here asks it anything)."""

from __future__ import annotations

import threading
import time

import httpx
import pandas as pd
import pytest

from densedpo.synthetic import make_synthetic_pairs
from tests.service.test_service import AUTH, Service


@pytest.fixture
def service(tmp_path):
    (tmp_path / "data").mkdir()
    svc = Service(tmp_path, "http://127.0.0.1:9").start()
    yield svc
    svc.stop()


@pytest.mark.slow  # probes 4 x 3000 videos
def test_healthz_answers_while_a_slow_table_is_checked(service):
    """Checking a table probes every video: 4 submissions of 1500 pairs take seconds, during which /healthz and
    every other request must still be answered (the checks run in a pool of their own, /healthz on the loop)."""
    root = service.root / "data"
    pairs, _ = make_synthetic_pairs(root / "one", num_pairs=1, num_frames=17, height=32, width=32)
    row = pd.read_parquet(pairs).iloc[0]
    video_a, video_b = (str((pairs.parent / row[c]).relative_to(root)) for c in ("video_a", "video_b"))
    big = pd.DataFrame(
        {"pair_id": [f"p{i}" for i in range(1500)], "prompt": "x", "video_a": video_a, "video_b": video_b}
    )
    big.to_parquet(root / "big.parquet")
    answers = {}

    def submit(k):
        with httpx.Client(base_url=service.url, headers=AUTH, timeout=300) as c:
            answers[k] = c.post("/v1/label-jobs", data={"path": "big.parquet", "min_confidence": str(0.5 + k / 10)})

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    slowest, polls = 0.0, 0
    while any(t.is_alive() for t in threads):
        t0 = time.perf_counter()
        assert httpx.get(f"{service.url}/healthz", timeout=5).status_code == 200
        slowest, polls = max(slowest, time.perf_counter() - t0), polls + 1
        time.sleep(0.05)
    assert all(a.status_code == 201 for a in answers.values()), [a.text for a in answers.values()]
    assert polls >= 3, "the submission was too quick to show anything; make the table bigger"
    assert slowest < 1.0, f"/healthz took {slowest:.2f} s while a table was checked"


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(service):
    """Chunked (no Content-Length), no token: 401 comes back while the client still has most of its body to send,
    so no byte of it was parsed or spooled; the body generator records how far the server read."""
    sent = {"chunks": 0}

    def body():
        boundary = b'--x\r\nContent-Disposition: form-data; name="file"; filename="p.parquet"\r\n\r\n'
        yield boundary
        for _ in range(200):
            time.sleep(0.05)
            sent["chunks"] += 1
            yield b"0" * 65536

    headers = {"Content-Type": "multipart/form-data; boundary=x"}
    with httpx.Client(base_url=service.url, timeout=30) as c:
        try:
            r = c.post("/v1/label-jobs", content=body(), headers=headers)
            status = r.status_code
        except httpx.HTTPError:
            status = None  # the server closed the connection while we were still sending: also a refusal
    assert status in (401, None)
    assert sent["chunks"] < 200, "the server read the whole unauthenticated body"
    r = httpx.post(f"{service.url}/v1/label-jobs", data={"path": "x.parquet"})
    assert r.status_code == 401 and r.json() == {"detail": "missing or wrong bearer token"}
    assert r.headers["www-authenticate"] == "Bearer"


def test_token_file_is_created_private(tmp_path):
    import stat

    (tmp_path / "data").mkdir()
    svc = Service(tmp_path, "http://127.0.0.1:9")
    svc.args = [a for a in svc.args if a not in ("--token-file", str(tmp_path / "token"))]
    svc.start()
    try:
        token_file = tmp_path / "jobs.sqlite.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        r = httpx.get(f"{svc.url}/v1/label-jobs", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
    finally:
        svc.stop()


def test_openapi_prompt_is_an_enum_and_submissions_link_to_the_job_routes(service):
    from labeler.prompts import available_prompts

    doc = httpx.get(f"{service.url}/openapi.json").json()
    post = doc["paths"]["/v1/label-jobs"]["post"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert doc["components"]["schemas"][form]["properties"]["prompt"]["enum"] == available_prompts()
    links = post["responses"]["201"]["links"]
    operations = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    assert {link["operationId"] for link in links.values()} <= operations
    assert {"get_job", "get_job_labels", "cancel_job", "delete_job"} == {link["operationId"] for link in links.values()}
    assert all(link["parameters"] == {"job_id": "$response.body#/id"} for link in links.values())
