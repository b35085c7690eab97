"""The HTTP client's retry rules, and what the engine sends, against the strict in-process fake server."""

from __future__ import annotations

import pandas as pd

from labeler.config import LabelConfig
from labeler.engine import label_pairs
from tests.conftest import run_cli
from tests.fake_openai import FakeServer, completion, position_answer


def cfg(pairs, out, url, **kw):
    kw = {"request_timeout_s": 10, "max_retries": 3, "retry_backoff_s": 0.0, "concurrency": 4, **kw}
    return LabelConfig(pairs=pairs, out=out, server=[url], **kw)


def test_retry_after_is_honoured_inside_post(synthetic, tmp_path):
    pairs_path, _ = synthetic

    def script(rid, n):
        if rid.endswith(":0:ab") and n == 0:
            return 429, {"error": "rate limited"}, {"Retry-After": "0.4"}
        return 200, position_answer(rid)

    with FakeServer(script) as fake:
        label_pairs(cfg(pairs_path, tmp_path / "l.parquet", fake.url), progress=False)
    for rid, times in fake.arrivals.items():
        if rid.endswith(":0:ab"):
            assert len(times) == 2 and times[1] - times[0] >= 0.35, (rid, times)  # backoff alone would be 0 s
    assert (pd.read_parquet(tmp_path / "l.parquet")["status"] == "ok").all()


def test_request_timeout_becomes_request_error_rows(synthetic, tmp_path):
    pairs_path, _ = synthetic

    with FakeServer(delay_s=lambda rid: 1.5 if rid.endswith(":1:ab") else 0.0) as fake:
        res = label_pairs(
            cfg(
                pairs_path, tmp_path / "l.parquet", fake.url, request_timeout_s=0.5, max_retries=1, max_failure_rate=1.0
            ),
            progress=False,
        )
    df = res.labels
    slow = df["segment_idx"] == 1
    assert (df[slow]["status"] == "request_error").all() and df[slow]["error"].str.contains("TimeoutError").all()
    assert (df[~slow]["status"] == "ok").all()
    assert {rid: n for rid, n in fake.counts.items() if rid.endswith(":1:ab")} == {
        f"{p}:1:ab": 2 for p in df["pair_id"].unique()
    }  # one try and one retry each


def test_non_retryable_4xx_is_asked_once(synthetic, tmp_path):
    pairs_path, _ = synthetic

    def script(rid, n):
        if rid.endswith(":1:ba"):
            return 400, {"error": {"message": "prompt too long"}}
        return 200, position_answer(rid)

    with FakeServer(script) as fake:
        res = label_pairs(cfg(pairs_path, tmp_path / "l.parquet", fake.url, max_failure_rate=1.0), progress=False)
    bad = [rid for rid in fake.chat_requests() if rid.endswith(":1:ba")]
    assert len(bad) == 3 and all(fake.counts[rid] == 1 for rid in bad)
    df = res.labels
    assert (df[df["segment_idx"] == 1]["status"] == "request_error").all()
    assert df[df["segment_idx"] == 1]["raw_response"].str.contains("prompt too long").all()


def test_second_order_swaps_the_frames_and_nothing_else(synthetic, tmp_path):
    pairs_path, _ = synthetic
    with FakeServer() as fake:
        label_pairs(cfg(pairs_path, tmp_path / "l.parquet", fake.url), progress=False)
    ab_ids = [rid for rid in fake.bodies if rid.endswith(":ab")]
    assert len(ab_ids) == 9
    for rid in ab_ids:
        ab, ba = fake.bodies[rid], fake.bodies[rid[:-2] + "ba"]
        parts_ab, parts_ba = ab["messages"][0]["content"], ba["messages"][0]["content"]
        imgs_ab = [p["image_url"]["url"] for p in parts_ab if p["type"] == "image_url"]
        imgs_ba = [p["image_url"]["url"] for p in parts_ba if p["type"] == "image_url"]
        n = len(imgs_ab) // 2
        assert n in (8, 9) and imgs_ab[:n] != imgs_ab[n:]  # 8 fps over 1 s (the last segment is 17 frames)
        assert imgs_ba == imgs_ab[n:] + imgs_ab[:n]  # the same bytes, the two videos swapped
        assert [p for p in parts_ab if p["type"] == "text"] == [p for p in parts_ba if p["type"] == "text"]
        assert {k: v for k, v in ab.items() if k != "messages"} == {k: v for k, v in ba.items() if k != "messages"}


def test_parse_errors_are_kept_until_retry_parse_errors(synthetic, tmp_path):
    pairs_path, _ = synthetic
    out = tmp_path / "l.parquet"

    def garbled(rid, n):
        return (200, completion("first", top={"zz": -0.1})) if rid.endswith(":2:ab") else (200, position_answer(rid))

    with FakeServer(garbled) as fake:
        r = run_cli("label", "--pairs", pairs_path, "--out", out, "--server", fake.url, "--quiet")
    assert r.returncode == 2 and "3 segment(s) with unparsable answers: rerun with --retry-parse-errors" in r.stderr
    assert "request errors" not in r.stderr, r.stderr
    assert (pd.read_parquet(out)["status"] == "parse_error").sum() == 3
    with FakeServer() as healthy:
        r = run_cli("label", "--pairs", pairs_path, "--out", out, "--server", healthy.url, "--quiet")
        assert r.returncode == 2 and healthy.chat_requests() == {}  # a plain rerun keeps journaled parse errors
        r = run_cli(
            "label", "--pairs", pairs_path, "--out", out, "--server", healthy.url, "--quiet", "--retry-parse-errors"
        )
    assert r.returncode == 0, r.stderr
    assert set(healthy.chat_requests()) == {rid for rid in fake.chat_requests() if rid.endswith(":2:ab")}
    assert (pd.read_parquet(out)["status"] == "ok").all()
    # superseded, not deleted: the journal keeps both answers of each retried request, the last one wins
    lines = (tmp_path / "l.parquet.journal.jsonl").read_text().splitlines()[1:]
    assert len(lines) == 18 + 3
