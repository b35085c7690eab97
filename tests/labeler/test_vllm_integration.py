"""Against a real vLLM server (tiny random Qwen2-VL, started once per session): formats, resume, embedded mode."""

from __future__ import annotations

import re
import socket

import httpx
import pandas as pd
import pytest

from densedpo.tables import trainable_pairs
from labeler.config import LabelConfig
from labeler.engine import label_pairs
from labeler.journal import journal_path_for, read_journal
from labeler.prompts import load_prompt
from tests.conftest import run_cli

pytestmark = pytest.mark.vllm


def vllm_requests(url: str) -> float:
    """Finished requests as vLLM counts them on its /metrics (all finish reasons)."""
    text = httpx.get(f"{url}/metrics").text
    return sum(float(v) for v in re.findall(r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))


def test_label_cli_against_real_vllm(vllm_server, synthetic, tiny_vlm, tmp_path):
    pairs_path, truth_path = synthetic
    out = tmp_path / "labels.parquet"
    before = vllm_requests(vllm_server)
    r = run_cli("label", "--pairs", pairs_path, "--out", out, "--server", vllm_server, "--min-confidence", "0")
    assert r.returncode == 0, r.stderr
    counts = pd.read_parquet(out)["status"].value_counts()
    for status, n in counts.items():  # the closing summary table shows the table's own counts
        assert re.search(rf"{status}\s*│\s*{n}\s*│", r.stdout), (status, n, r.stdout)
    assert "coverage" in r.stdout and "│ logprobs" in r.stdout  # the judges table says where confidence comes from
    trainable = trainable_pairs(pd.read_parquet(out))  # the summary says how many pairs train would keep
    assert re.search(rf"pairs train keeps \(> 20% decided\)\s*│\s*{trainable}\b", r.stdout), r.stdout
    assert ("warning: only" in r.stderr) == (trainable < 3 / 4), r.stderr
    assert vllm_requests(vllm_server) - before == 18 + 1  # 9 segments x 2 orders, plus the constraint probe

    df = pd.read_parquet(out)
    truth = pd.read_parquet(truth_path)
    assert len(df) == 9
    assert df[["pair_id", "segment_idx", "frame_start", "frame_end"]].equals(
        truth[["pair_id", "segment_idx", "frame_start", "frame_end"]]
    )
    assert df["status"].isin(["ok", "low_confidence", "order_inconsistent"]).all()  # the server constrained all
    probs = df[["p_a", "p_b", "p_tie"]].sum(axis=1)
    assert ((probs - 1).abs() < 1e-6).all()
    assert (df["judge_model"] == str(tiny_vlm)).all()
    assert (df["judge"] == f"chat:{tiny_vlm.name}:segment_preference_v1@{load_prompt().sha256[:8]}").all()
    assert (df["prompt_sha256"] == load_prompt().sha256).all()

    # Every row follows from its two journaled answers.
    _, results = read_journal(journal_path_for(out))
    assert len(results) == 18
    for row in df.itertuples():
        ab, ba = (results[(row.judge, f"{row.pair_id}:{row.segment_idx}:{o}")] for o in ("ab", "ba"))
        assert ab.raw_response in ("first", "second", "tie") and ba.raw_response in ("first", "second", "tie")
        assert row.order_agreement == (ab.answer == ba.answer)
        assert row.p_a == pytest.approx((ab.p_a + ba.p_a) / 2)
        assert (row.status == "ok") == (ab.answer == ba.answer)
        if row.status == "ok":
            assert row.preference == ab.answer

    # The run file re-runs the job, and a re-run asks the server nothing but the probe.
    run_file = out.with_name(out.name + ".run.yaml")
    assert "min_confidence: 0.0" in run_file.read_text()
    before = vllm_requests(vllm_server)
    r = run_cli("label", "--config", run_file, "--quiet")
    assert r.returncode == 0, r.stderr
    assert vllm_requests(vllm_server) - before == 1
    assert pd.read_parquet(out).drop(columns=["raw_response"]).equals(df.drop(columns=["raw_response"]))


def test_partial_journal_asks_only_the_rest(vllm_server, synthetic, tmp_path):
    pairs_path, _ = synthetic
    out = tmp_path / "labels.parquet"
    cfg = LabelConfig(pairs=pairs_path, out=out, server=[vllm_server], min_confidence=0.0, concurrency=8)
    label_pairs(cfg, progress=False)
    journal = journal_path_for(out)
    lines = journal.read_text().splitlines()
    kept = lines[:1] + lines[1:8]  # header + 7 answers survive "the crash"; the last line is cut mid-write
    journal.write_text("\n".join(kept) + "\n" + lines[8][: len(lines[8]) // 2])
    out.unlink()
    before = vllm_requests(vllm_server)
    res = label_pairs(cfg, progress=False)
    assert vllm_requests(vllm_server) - before == 18 - 7 + 1
    assert res.summary["requests_sent"] == 11
    assert len(pd.read_parquet(out)) == 9


def test_two_server_urls_share_load(vllm_server, synthetic, tmp_path):
    """Two URLs, each must serve: the second is another port in front of the same real server (a byte relay)."""
    pairs_path, _ = synthetic
    with TcpRelay(vllm_server) as relay:
        cfg = LabelConfig(
            pairs=pairs_path,
            out=tmp_path / "l.parquet",
            server=[vllm_server, relay.url],
            min_confidence=0.0,
            concurrency=4,
        )
        before = vllm_requests(vllm_server)
        res = label_pairs(cfg, progress=False)
        total = vllm_requests(vllm_server) - before
    assert res.summary["requests_sent"] == 18 and len(res.labels) == 9
    assert total == 18 + 1  # plus the probe
    via_relay = relay.requests
    assert 4 <= via_relay <= 15, via_relay  # both URLs served a share (the relay's count includes /v1/models)


class TcpRelay:
    """Forwards a loopback port to a server byte for byte, counting HTTP requests that pass through it."""

    def __init__(self, target_url: str):
        from labeler.servers import free_port

        host, port = target_url.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0

    def __enter__(self):
        import threading

        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._sock.close()

    def _serve(self):
        import threading

        while True:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, count):
        try:
            while data := src.recv(65536):
                if count:
                    self.requests += sum(data.startswith(m) for m in (b"POST ", b"GET "))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_legacy_guided_choice_is_not_enough(vllm_server, tiny_vlm):
    """Why the probe exists: current vLLM ignores `guided_choice`, so the tiny model answers freely."""
    body = {
        "model": str(tiny_vlm),
        "messages": [{"role": "user", "content": "Say banana."}],
        "max_tokens": 8,
        "temperature": 0,
        "guided_choice": ["first", "second", "tie"],
    }
    free = httpx.post(f"{vllm_server}/v1/chat/completions", json=body, timeout=60).json()
    assert free["choices"][0]["message"]["content"] not in ("first", "second", "tie")
    body["structured_outputs"] = {"choice": ["first", "second", "tie"]}
    del body["guided_choice"]
    constrained = httpx.post(f"{vllm_server}/v1/chat/completions", json=body, timeout=60).json()
    assert constrained["choices"][0]["message"]["content"] in ("first", "second", "tie")


@pytest.mark.slow
def test_embedded_vllm_starts_and_stops(tiny_vlm, synthetic, tmp_path):
    pairs_path, _ = synthetic
    out = tmp_path / "labels.parquet"
    r = run_cli("label", "--pairs", pairs_path, "--out", out, "--model", tiny_vlm, "--quiet", timeout=600)
    assert r.returncode == 0, r.stderr
    assert len(pd.read_parquet(out)) == 9
    log = out.with_name(out.name + ".vllm.log").read_text()
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)", log).group(1))
    with socket.socket() as s:  # the server is gone once the command returns
        assert s.connect_ex(("127.0.0.1", port)) != 0


def _title(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return ""


@pytest.mark.slow
@pytest.mark.parametrize(
    "when, signum, victim",
    [
        ("starting", 9, "owner"),
        ("labeling", 9, "owner"),
        ("labeling", 15, "owner"),
        ("labeling", 9, "both"),
    ],
)
def test_killing_label_leaves_no_vllm_process(tiny_vlm, tmp_path, when, signum, victim):
    """kill -9 of `label --model` (the owner), of the supervisor between it and vLLM, or of both at once, while
    vLLM starts or while it labels, or SIGTERM of the owner while it labels: the API server, the engine core and
    its workers (renamed VLLM::EngineCore / VLLM::Worker) all go. Found by an environment marker they all inherit.
    SIGTERM ends with exit 130 and the one "interrupted" line, no traceback."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid

    from densedpo.synthetic import make_synthetic_pairs
    from tests.conftest import REPO
    from tests.densedpo.test_supervise import marked, supervisor_of, wait_gone

    pairs_path, _ = make_synthetic_pairs(tmp_path / "pairs", num_pairs=12, num_frames=49, height=64, width=64)
    out = tmp_path / "labels.parquet"
    mark = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "app.cli", "label", "--pairs", pairs_path, "--out", out, "--model", tiny_vlm]
    env = {**os.environ, "DENSEDPO_TEST_MARK": mark}
    args = [str(a) for a in cmd] + ["--quiet", "--concurrency", "1"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log, journal = out.with_name(out.name + ".vllm.log"), out.with_name(out.name + ".journal.jsonl")
    deadline = time.monotonic() + 300
    if when == "starting":
        while time.monotonic() < deadline and (not log.exists() or log.stat().st_size < 2000):
            time.sleep(0.2)  # vLLM is loading: past its own start, not yet healthy
        assert "Application startup complete" not in log.read_text()
    else:
        while time.monotonic() < deadline and (not journal.exists() or journal.read_text().count("\n") < 3):
            time.sleep(0.2)  # answers are coming in: the engine core and its worker are up
        assert proc.poll() is None, "labeling ended before the kill"
        assert any(_title(p).startswith("VLLM::EngineCor") for p in marked(mark))  # comm holds 15 characters
    if victim in ("supervisor", "both"):
        os.kill(supervisor_of(mark), signal.SIGKILL)
    if victim in ("owner", "both"):
        proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)  # the owner alone sees its server gone and stops
    if signum == signal.SIGTERM:
        assert proc.returncode == 130 and "Traceback" not in stderr, stderr
        assert (
            stderr.strip().splitlines()[-1] == "interrupted: finished work is saved; rerun the same command to resume."
        )
    left = wait_gone(mark, timeout_s=60)
    assert left == [], f"outlived the labeler: {[(p, _title(p)) for p in left]}"


def test_vllm_command_prints_a_server_that_starts_and_labels(tiny_vlm, synthetic, tmp_path):
    """`densedpo vllm-command` prints one shell line (environment + command) that starts, on this machine, the
    server `label --model` would; label then works against it."""
    from densedpo.supervise import supervised
    from labeler.servers import _wait_healthy, free_port

    pairs_path, _ = synthetic
    port = free_port()
    r = run_cli("vllm-command", "--model", tiny_vlm, "--port", port, "--pairs", pairs_path)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert "\n" not in line and line.startswith("env VLLM_NO_USAGE_STATS=1 ") and f"--port {port}" in line
    assert '{"image": 18, "video": 0}' in line  # the last segment of these pairs shows 9 frames per video
    with supervised(["bash", "-c", line], log_path=tmp_path / "vllm.log") as proc:
        _wait_healthy(proc, f"http://127.0.0.1:{port}", tmp_path / "vllm.log", 600)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"][0]["id"] == str(tiny_vlm)
        out = tmp_path / "labels.parquet"
        r = run_cli("label", "--pairs", pairs_path, "--out", out, "--server", f"http://127.0.0.1:{port}")
        assert r.returncode == 0, r.stderr
        assert len(pd.read_parquet(out)) == 9


def test_vllm_that_cannot_load_the_model_names_the_cause_and_the_log(tmp_path):
    """A real vLLM start on a folder with no model in it: one error naming the model folder and the log."""
    from densedpo.errors import DenseDPOError
    from labeler.servers import managed_vllm

    (tmp_path / "empty-model").mkdir()
    log = tmp_path / "vllm.log"
    with pytest.raises(DenseDPOError) as e:
        with managed_vllm(str(tmp_path / "empty-model"), log_path=log, max_images=2, startup_timeout_s=300):
            pass
    assert "the model could not be loaded" in str(e.value) and f"Full log: {log}" in str(e.value), str(e.value)
