"""Faults a real vLLM cannot produce on demand, against an in-process fake OpenAI server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from densedpo.errors import DenseDPOError
from densedpo.synthetic import make_synthetic_pairs
from labeler.client import PROBE_REQUEST_ID
from labeler.config import LabelConfig
from labeler.engine import label_pairs
from labeler.journal import journal_path_for, read_journal
from tests.conftest import REPO, run_cli
from tests.fake_openai import FakeServer, completion, position_answer


def cfg(pairs, out, url, **kw):
    kw = {"request_timeout_s": 10, "max_retries": 3, "retry_backoff_s": 0.05, "concurrency": 4, **kw}
    return LabelConfig(pairs=pairs, out=out, server=[url] if isinstance(url, str) else url, **kw)


def all_ids(pairs_path):
    labels = pd.read_parquet(pairs_path.parent / "truth_labels.parquet")
    return {f"{r.pair_id}:{r.segment_idx}:{o}" for r in labels.itertuples() for o in ("ab", "ba")}


def test_consistent_judge_gives_ok_rows(synthetic, tmp_path):
    pairs_path, _ = synthetic
    with FakeServer() as fake:
        res = label_pairs(cfg(pairs_path, tmp_path / "l.parquet", fake.url), progress=False)
    df = pd.read_parquet(tmp_path / "l.parquet")
    assert len(df) == 9 and (df["status"] == "ok").all() and (df["preference"] == "a").all()
    assert df["confidence"].min() > 0.9 and df["order_agreement"].all()
    assert res.summary["coverage"] == 1.0 and res.summary["status_counts"]["ok"] == 9
    assert res.summary["trainable_pairs"] == 3
    assert fake.chat_requests() == {rid: 1 for rid in all_ids(pairs_path)}
    # Scored against the synthetic truth, an always-"a" judge is right exactly on the truth's "a" segments.
    truth = pd.read_parquet(pairs_path.parent / "truth_labels.parquet")
    decided = truth[truth["preference"] != "tie"]
    r = run_cli(
        "eval-labels",
        "--labels",
        tmp_path / "l.parquet",
        "--reference",
        pairs_path.parent / "truth_labels.parquet",
        "--json",
        tmp_path / "report.json",
    )
    assert r.returncode == 0, r.stderr
    expected = (decided["preference"] == "a").mean()
    (judge,) = json.loads((tmp_path / "report.json").read_text())["references"][0]["judges"].values()
    assert judge["segment_accuracy"]["value"] == pytest.approx(expected, abs=1e-6)
    assert f"{expected:.3f}" in r.stdout
    # the fake judge answers first with a shown first and second with b shown first: perfectly consistent
    assert judge["position_consistency"]["value"] == 1.0 and judge["first_position_rate"]["value"] == 0.5


def test_429_and_503_bursts_are_retried(synthetic, tmp_path):
    pairs_path, _ = synthetic

    def script(rid, n):
        if rid != PROBE_REQUEST_ID and n < 2:
            return (429, {"error": "slow down"}) if n == 0 else (503, "overloaded")
        return 200, position_answer(rid)

    with FakeServer(script) as fake:
        label_pairs(cfg(pairs_path, tmp_path / "l.parquet", fake.url, **{}), progress=False)
    df = pd.read_parquet(tmp_path / "l.parquet")
    assert (df["status"] == "ok").all()
    assert set(fake.chat_requests().values()) == {3}


def test_persistent_500_ends_as_request_error_rows_and_exit_2(synthetic, tmp_path):
    pairs_path, _ = synthetic

    def script(rid, n):
        if rid != PROBE_REQUEST_ID and rid.split(":")[1] == "1":
            return 500, "internal error: engine dead"
        return 200, position_answer(rid)

    config = tmp_path / "label.yaml"
    config.write_text("max_retries: 1\nretry_backoff_s: 0.05\nconcurrency: 4\n")
    with FakeServer(script) as fake:
        out = tmp_path / "l.parquet"
        r = run_cli("label", "--pairs", pairs_path, "--out", out, "--server", fake.url, "--quiet", "--config", config)
    assert r.returncode == 2 and "of segments failed" in r.stderr and "Traceback" not in r.stderr, r.stderr
    df = pd.read_parquet(out)  # the table is written, with the failures as rows
    failed = df[df["status"] == "request_error"]
    assert set(failed["segment_idx"]) == {1} and len(failed) == 3  # segment 1 of every pair
    assert failed["error"].str.contains("HTTP 500").all()
    assert failed["raw_response"].str.contains("engine dead").all()
    assert failed["preference"].isna().all()
    # Request errors are not journaled: a rerun against a healthy server asks exactly the failed ones.
    with FakeServer() as healthy:
        r = run_cli(
            "label", "--pairs", pairs_path, "--out", out, "--server", healthy.url, "--quiet", "--config", config
        )
    assert r.returncode == 0, r.stderr
    assert set(healthy.chat_requests()) == {f"{p}:1:{o}" for p in failed["pair_id"] for o in ("ab", "ba")}
    assert (pd.read_parquet(out)["status"] == "ok").all()


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("this is not json", "response is not JSON"),
        ({"choices": [{"message": {"content": "first"}}]}, "no logprobs"),
        ({"object": "error"}, "no choices"),
    ],
)
def test_malformed_bodies_are_rows(synthetic, tmp_path, body, fragment):
    pairs_path, _ = synthetic

    def script(rid, n):
        return (200, position_answer(rid)) if rid == PROBE_REQUEST_ID or not rid.endswith(":2:ba") else (200, body)

    with FakeServer(script) as fake:
        res = label_pairs(cfg(pairs_path, tmp_path / "l.parquet", fake.url, max_failure_rate=1.0), progress=False)
    df = res.labels
    bad = df[df["segment_idx"] == 2]
    assert bad["status"].isin(["parse_error", "request_error"]).all()
    assert (df[df["segment_idx"] != 2]["status"] == "ok").all()
    assert bad["error"].str.contains(fragment).all()


def test_unconstrained_server_is_refused(synthetic, tmp_path):
    pairs_path, _ = synthetic
    with FakeServer(lambda rid, n: (200, completion("banana"))) as fake:
        with pytest.raises(DenseDPOError, match="does not constrain answers"):
            label_pairs(cfg(pairs_path, tmp_path / "l.parquet", fake.url), progress=False)
    assert not (tmp_path / "l.parquet").exists()


def test_server_dies_mid_run_then_resume_elsewhere(tmp_path):
    pairs_path, _ = make_synthetic_pairs(tmp_path / "data", num_pairs=6, height=32, width=32)
    out = tmp_path / "l.parquet"
    fake = FakeServer(delay_s=0.05).start()
    served = 0

    def dying(rid, n):
        nonlocal served
        served += 1
        if served == 8:  # stop listening and drop open connections: later requests get connection errors
            fake._server.should_exit = fake._server.force_exit = True
        return 200, position_answer(rid)

    fake.script = dying
    with pytest.raises(DenseDPOError, match="stopped answering .* rerun the same command to resume"):
        label_pairs(cfg(pairs_path, out, fake.url, max_retries=1), progress=False)
    fake.stop()
    _, journaled = read_journal(journal_path_for(out))
    assert 4 <= len(journaled) <= 16 and not out.exists()
    with FakeServer() as second:
        label_pairs(cfg(pairs_path, out, second.url), progress=False)
    asked_before = {rid for _, rid in journaled}
    assert set(second.chat_requests()) == all_ids(pairs_path) - asked_before  # nothing answered is asked again
    df = pd.read_parquet(out)
    assert len(df) == 18 and not df.duplicated(["pair_id", "segment_idx"]).any()


def test_load_is_shared_across_servers(synthetic, tmp_path):
    pairs_path, _ = synthetic
    with FakeServer(delay_s=0.02) as s1, FakeServer(delay_s=0.02) as s2:
        label_pairs(cfg(pairs_path, tmp_path / "l.parquet", [s1.url, s2.url]), progress=False)
    n1, n2 = sum(s1.chat_requests().values()), sum(s2.chat_requests().values())
    assert n1 + n2 == 18 and min(n1, n2) >= 5
    assert not set(s1.chat_requests()) & set(s2.chat_requests())


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path):
    """kill -9 during labeling; the same command finishes: no loss, no duplicates, nothing answered asked again."""
    pairs_path, _ = make_synthetic_pairs(tmp_path / "data", num_pairs=6, num_frames=49, height=32, width=32)
    out = tmp_path / "labels.parquet"
    journal = journal_path_for(out)
    with FakeServer(delay_s=0.05) as fake:
        args = [
            sys.executable,
            "-m",
            "app.cli",
            "label",
            "--pairs",
            str(pairs_path),
            "--out",
            str(out),
            "--server",
            fake.url,
            "--concurrency",
            "2",
            "--quiet",
        ]
        fake.hold.hold_after(14)  # 14 of the 36 requests are answered; the kill comes while the next two wait
        proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            fake.hold.held and journal.exists() and len(journal.read_text().splitlines()) > 12
        ):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        fake.hold.release()
        before = {rid for _, rid in read_journal(journal)[1]}
        first_run = dict(fake.chat_requests())
        fake.counts.clear()
        assert 10 <= len(before) < 36 and not out.exists()
        r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        second_run = fake.chat_requests()
    ids = all_ids(pairs_path)
    assert not set(second_run) & set(before)  # no answered request asked again
    assert set(second_run) == ids - set(before)  # and every other one asked
    assert max(second_run.values()) == 1
    assert len(set(first_run) - set(before)) <= 2  # at most the requests in flight at the kill are repeated
    df = pd.read_parquet(out)
    assert len(df) == 18 and not df.duplicated(["pair_id", "segment_idx"]).any() and (df["status"] == "ok").all()
    lines = [json.loads(x) for x in journal.read_text().splitlines()[1:]]
    assert len(lines) == 36 and len({x["request_id"] for x in lines}) == 36


@pytest.mark.slow
def test_sigterm_is_one_line_and_the_rerun_says_it_resumes_and_a_finished_journal_needs_no_server(tmp_path):
    """SIGTERM mid-run: exit 130 with the one "interrupted" line (no traceback); the rerun says how many answers
    were journaled; a third run, nothing left to ask, sends no request and, given --model, starts no vLLM."""
    pairs_path, _ = make_synthetic_pairs(tmp_path / "data", num_pairs=6, num_frames=49, height=32, width=32)
    out = tmp_path / "labels.parquet"
    journal = journal_path_for(out)
    with FakeServer(delay_s=0.05) as fake:
        fake.hold.hold_after(14)  # the SIGTERM comes while two requests wait: the run cannot have finished
        args = [sys.executable, "-m", "app.cli", "label", "--pairs", str(pairs_path), "--out", str(out), "--quiet"]
        proc = subprocess.Popen(
            [*args, "--server", fake.url, "--concurrency", "2"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            fake.hold.held and journal.exists() and len(journal.read_text().splitlines()) > 12
        ):
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        fake.hold.release()
        text = (stdout + stderr).decode()
        assert proc.returncode == 130, text
        assert "Traceback" not in text and text.strip().splitlines() == [
            "interrupted: finished work is saved; rerun the same command to resume."
        ], text
        answered = len(read_journal(journal)[1])
        r = subprocess.run([*args, "--server", fake.url], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert f"resuming: {answered} of 36 answers journaled" in " ".join((r.stdout + r.stderr).split())
        fake.counts.clear()
        r = subprocess.run([*args, "--server", fake.url], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert sum(fake.counts.values()) == 0  # no probe, no /v1/models: nothing left to ask
    r = subprocess.run([*args, "--model", "fake-vlm"], cwd=REPO, capture_output=True, text=True, timeout=120)
    text = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 0 and "starting vLLM" not in text and "nothing left to ask (no server)" in text, text
    assert len(pd.read_parquet(out)) == 18


def test_a_jury_judge_that_fails_every_request_fails_the_run(synthetic, tmp_path):
    """Failed judges do not vote, so the jury's rows stand on the other judge alone: the failure rate must be
    checked per judge, and the summary must show each judge's failures."""
    pairs_path, _ = synthetic

    def broken(rid, n):
        return (200, position_answer(rid)) if rid == PROBE_REQUEST_ID else (500, "internal error: engine dead")

    with FakeServer() as good, FakeServer(broken) as bad:
        jury = tmp_path / "jury.yaml"
        jury.write_text(
            f"judges:\n  - {{kind: chat, server: {good.url}, name: good}}\n"
            f"  - {{kind: chat, server: {bad.url}, name: bad}}\n"
        )
        out = tmp_path / "l.parquet"
        config = tmp_path / "label.yaml"
        config.write_text("max_retries: 1\nretry_backoff_s: 0.05\nconcurrency: 4\n")
        r = run_cli("label", "--pairs", pairs_path, "--out", out, "--judges", jury, "--config", config)
    assert r.returncode == 2, r.stderr
    assert "100.0% of judge bad's segments failed" in r.stderr and "Traceback" not in r.stderr
    df = pd.read_parquet(out)
    assert (df.loc[df["judge"] == "jury", "status"] == "ok").all()  # the jury's rows alone look healthy
    assert (df.loc[df["judge"] == "bad", "status"] == "request_error").all()
    assert "9 (100%)" in r.stderr.replace("\n", " ") or "9 (100%)" in r.stdout  # the judges table shows it


def test_a_torn_journal_line_is_cut_and_its_answer_asked_again(synthetic, tmp_path):
    """A crash mid-write leaves half a line: the resumed run must not append onto it (that answer would be lost
    too); it cuts the torn tail, asks that request again, and every line of the journal parses afterwards."""
    pairs_path, _ = synthetic
    out = tmp_path / "l.parquet"
    with FakeServer() as fake:
        label_pairs(cfg(pairs_path, out, fake.url), progress=False)
    journal = journal_path_for(out)
    lines = journal.read_text().splitlines(keepends=True)
    last = json.loads(lines[-1])
    journal.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # torn: no newline
    out.unlink()
    with FakeServer() as again:
        label_pairs(cfg(pairs_path, out, again.url), progress=False)
        assert again.chat_requests() == {last["request_id"]: 1}
    for line in journal.read_text().splitlines():
        json.loads(line)
    _, results = read_journal(journal)
    assert len(results) == 18 and len(pd.read_parquet(out)) == 9
