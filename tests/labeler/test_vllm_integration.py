"""Against a real vLLM server (tiny random Qwen2-VL, started once per session): formats, resume, embedded mode."""

from __future__ import annotations

import re
import socket

import httpx
import pandas as pd
import pytest

from labeler.engine import LabelConfig, label_pairs
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
    assert "order_inconsistent" in r.stdout and "coverage" in r.stdout  # the closing summary table
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
    assert (df["prompt_sha256"] == load_prompt().sha256).all()

    # Every row follows from its two journaled answers.
    _, results = read_journal(journal_path_for(out))
    assert len(results) == 18
    for row in df.itertuples():
        ab, ba = (results[f"{row.pair_id}:{row.segment_idx}:{o}"] for o in ("ab", "ba"))
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
    pairs_path, _ = synthetic
    other = vllm_server.replace("127.0.0.1", "localhost")
    cfg = LabelConfig(pairs=pairs_path, out=tmp_path / "l.parquet", server=[vllm_server, other], min_confidence=0.0)
    res = label_pairs(cfg, progress=False)
    assert res.summary["requests_sent"] == 18 and len(res.labels) == 9


def test_legacy_guided_choice_is_not_enough(vllm_server, tiny_vlm):
    """Why the probe exists: current vLLM ignores `guided_choice`, so the tiny model answers freely."""
    body = {"model": str(tiny_vlm), "messages": [{"role": "user", "content": "Say banana."}], "max_tokens": 8,
            "temperature": 0, "guided_choice": ["first", "second", "tie"]}  # fmt: skip
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
