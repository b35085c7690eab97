"""Every judge kind through real vLLM: OpenAI-API chat (strict proxy, with and without logprobs), a reward-model
scorer on the pooling runner, a two-judge jury, and video input."""

from __future__ import annotations

import json
import math
import re

import httpx
import pandas as pd
import pytest

from labeler.client import PROBE_REQUEST_ID
from labeler.config import LabelConfig
from labeler.frames import prepare_pair
from labeler.journal import journal_path_for, read_journal
from labeler.judges.score import SCORE_TEXT, score_messages
from labeler.plan import plan_pairs, request_id
from labeler.segments import sample_frame_indices
from tests.conftest import run_cli
from tests.openai_proxy import OpenAIProxy

KEY = "sk-test-7f3a9c0d2e4b6a8f1c3e5d7b"  # a fake key; it must appear nowhere densedpo writes


def no_key_anywhere(out, *texts: str) -> None:
    files = [p for p in out.parent.iterdir() if p.is_file() and p.name.startswith(out.name)]
    for text in (*texts, *(p.read_bytes().decode("latin-1") for p in files)):
        assert KEY not in text and KEY[-8:] not in text


def test_openai_api_with_logprobs_through_a_strict_proxy(vllm_server, tiny_vlm, synthetic, tmp_path):
    pairs, _ = synthetic
    out = tmp_path / "o.parquet"
    with OpenAIProxy(vllm_server, KEY, logprobs=True, rate_limit=3) as proxy:
        r = run_cli(
            "label",
            "--pairs",
            pairs,
            "--out",
            out,
            "--api",
            "openai",
            "--server",
            proxy.url,
            "--model",
            tiny_vlm,
            "--api-key-env",
            "DENSEDPO_TEST_KEY",
            "--min-confidence",
            "0",
            "--max-rps",
            "100",
            "--price-in",
            "2",
            "--price-out",
            "8",
            "--quiet",
            env={"DENSEDPO_TEST_KEY": KEY},
        )
        assert r.returncode == 0, r.stderr
        assert proxy.refused == []  # no field outside the OpenAI API was sent (the run would have failed)
        assert proxy.limited == 3  # three 429s, each retried after Retry-After
        asked = {rid: n for rid, n in proxy.counts.items() if rid != PROBE_REQUEST_ID}
        assert len(asked) == 18 and set(asked.values()) == {1}  # 9 segments x 2 orders, each answered once
        # Both orders of a segment carry byte-identical frames (vLLM's multimodal caches can hit).
        for rid in asked:
            if rid.endswith(":ab"):
                assert sorted(proxy.images[rid]) == sorted(proxy.images[rid[:-2] + "ba"])
    df = pd.read_parquet(out)
    assert len(df) == 9 and df["status"].isin(["ok", "order_inconsistent"]).all()
    assert ((df[["p_a", "p_b", "p_tie"]].sum(axis=1) - 1).abs() < 1e-6).all()
    assert df["judge"].str.startswith(f"chat:{tiny_vlm.name}:segment_preference_v1@").all()
    _, results = read_journal(journal_path_for(out))
    for res in results.values():  # the answer's own probability came from the logprobs at its token
        assert res.status == "ok" and {"a": res.p_a, "b": res.p_b, "tie": res.p_tie}[res.answer] > 0
        assert res.prompt_tokens > 0 and res.completion_tokens > 0
    tokens = sum(x.prompt_tokens for x in results.values())
    assert f"{tokens:,}" in r.stdout  # the summary reports the endpoint's usage and a cost estimate
    assert "$" in r.stdout
    no_key_anywhere(out, r.stdout, r.stderr)
    # The dry run estimates what is left from the journal's usage: nothing.
    dry = run_cli(
        "label",
        "--pairs",
        pairs,
        "--out",
        out,
        "--api",
        "openai",
        "--server",
        "http://unused/v1",
        "--model",
        tiny_vlm,
        "--dry-run",
    )
    assert dry.returncode == 0 and "requests left" in dry.stdout and "prompt tokens left" in dry.stdout, dry.stderr


def test_openai_api_without_logprobs_uses_samples(vllm_server, tiny_vlm, synthetic, tmp_path):
    pairs, _ = synthetic
    out = tmp_path / "s.parquet"
    base = [
        "label",
        "--pairs",
        pairs,
        "--out",
        out,
        "--api",
        "openai",
        "--model",
        tiny_vlm,
        "--api-key-env",
        "DENSEDPO_TEST_KEY",
        "--quiet",
    ]
    env = {"DENSEDPO_TEST_KEY": KEY}
    with OpenAIProxy(vllm_server, KEY, logprobs=False) as proxy:
        refused = run_cli(*base, "--server", proxy.url, env=env)
        assert refused.returncode == 2 and "--samples" in refused.stderr and "Traceback" not in refused.stderr
        assert not out.exists()
        proxy.refused.clear()  # that refusal was the point; the run below must send nothing refused
        flags = ("--samples", "3", "--min-confidence", "0", "--reasoning-effort", "low")  # as for o3
        r = run_cli(*base, "--server", proxy.url, *flags, env=env)
        assert r.returncode == 0, r.stderr
        assert proxy.refused == []  # reasoning_effort is sent, and no field a reasoning model refuses
    df = pd.read_parquet(out)
    assert len(df) == 9 and df["status"].isin(["ok", "order_inconsistent"]).all()
    assert df["judge"].str.endswith(":samples3:effort-low").all()  # the table says where the confidence came from
    _, results = read_journal(journal_path_for(out))
    for res in results.values():  # vote shares of 3 samples
        assert all(round(3 * p) == pytest.approx(3 * p) for p in (res.p_a, res.p_b, res.p_tie))
        assert res.raw_response.count("|") == 2
        assert res.reasoning == "" and res.reasoning_tokens == 0  # the thought's text is not returned; its length is
    assert re.search(r"│\s*18 \(0\)\s*│\s*0\s*│", r.stdout), r.stdout  # thoughts (cut), reasoning tokens
    assert "samples: 3" in out.with_name(out.name + ".run.yaml").read_text()
    assert "votes of 3 samples" in r.stdout
    no_key_anywhere(out, r.stdout, r.stderr, refused.stdout, refused.stderr)


def test_openai_api_key_must_be_in_the_environment(synthetic, tmp_path):
    pairs, _ = synthetic
    r = run_cli(
        "label",
        "--pairs",
        pairs,
        "--out",
        tmp_path / "x.parquet",
        "--api",
        "openai",
        "--server",
        "http://127.0.0.1:9/v1",
        "--model",
        "o3",
        "--api-key-env",
        "DENSEDPO_UNSET_KEY",
    )
    assert r.returncode == 2 and "--api-key-env" in r.stderr and "DENSEDPO_UNSET_KEY" in r.stderr


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_scorer_on_the_vllm_pooling_runner(pooling_server, tiny_reward_model, synthetic, tmp_path):
    pairs, _ = synthetic
    out = tmp_path / "scores.parquet"
    before = metric(pooling_server, "vllm:request_success_total")
    r = run_cli(
        "label",
        "--pairs",
        pairs,
        "--out",
        out,
        "--judge",
        "score",
        "--server",
        pooling_server,
        "--min-confidence",
        "0",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    # One request per video segment (plus the probe): 9 segments x 2 videos.
    assert metric(pooling_server, "vllm:request_success_total") - before == 18 + 1
    _, results = read_journal(journal_path_for(out))
    assert sorted({rid.rsplit(":", 1)[1] for _, rid in results}) == ["a", "b"] and len(results) == 18
    df = pd.read_parquet(out)
    assert len(df) == 9 and (df["judge"] == f"score:{tiny_reward_model.name}").all()
    assert df["answer_ab"].isna().all() and df["order_agreement"].isna().all()
    d = df["score_a"] - df["score_b"]
    assert (df["preference"] == d.map(lambda x: "a" if x > 0 else "b" if x < 0 else "tie")).all()
    assert (df["p_a"] - 1 / (1 + (-d).map(math.exp))).abs().max() < 1e-9  # Bradley-Terry at margin 0

    # The journaled score is what the model gives those frames: ask /classify directly for one video segment.
    cfg = LabelConfig(pairs=pairs, server=[pooling_server])
    plan = plan_pairs(cfg)[1]
    seg = plan.segments[2]
    urls = prepare_pair(plan, [seg], cfg)
    frames = [urls["b"][k] for k in sample_frame_indices(seg, plan.info.fps, cfg.sample_fps)]
    body = {
        "model": str(tiny_reward_model),
        "messages": score_messages(SCORE_TEXT, plan.prompt, frames),
        "use_activation": False,
    }
    direct = httpx.post(f"{pooling_server}/classify", json=body, timeout=60).json()["data"][0]["probs"][0]
    row = df[(df["pair_id"] == plan.pair_id) & (df["segment_idx"] == seg.segment_idx)].iloc[0]
    assert row["score_b"] == pytest.approx(direct, rel=1e-5)

    # A wider tie margin re-aggregates from the journal: no request, ties inside the margin.
    margin = float(d.abs().median())
    before = metric(pooling_server, "vllm:request_success_total")
    r = run_cli(
        "label",
        "--pairs",
        pairs,
        "--out",
        out,
        "--judge",
        "score",
        "--server",
        pooling_server,
        "--min-confidence",
        "0",
        "--tie-margin",
        margin,
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert metric(pooling_server, "vllm:request_success_total") - before == 0  # all journaled: no server asked
    again = pd.read_parquet(out)
    assert (again["preference"] == "tie").sum() == (d.abs() <= margin).sum() >= 4


def test_two_judge_jury(vllm_server, pooling_server, tiny_vlm, synthetic, tmp_path):
    pairs, truth = synthetic
    judges = tmp_path / "judges.yaml"
    judges.write_text(
        f"combine: mean\njudges:\n  - {{kind: chat, server: {vllm_server}}}\n"
        f"  - {{kind: score, server: {pooling_server}, name: rm}}\n"
    )
    out = tmp_path / "jury.parquet"
    r = run_cli("label", "--pairs", pairs, "--out", out, "--judges", judges, "--min-confidence", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(out)
    chat_id = f"chat:{tiny_vlm.name}:segment_preference_v1@"
    assert len(df) == 27 and df.groupby("judge").size().to_dict().keys() >= {"rm", "jury"}
    chat = df[df["judge"].str.startswith(chat_id)].set_index(["pair_id", "segment_idx"])
    rm = df[df["judge"] == "rm"].set_index(["pair_id", "segment_idx"])
    jury = df[df["judge"] == "jury"].set_index(["pair_id", "segment_idx"])
    assert len(chat) == len(rm) == len(jury) == 9
    for col in ("p_a", "p_b", "p_tie"):  # the jury's probabilities are the mean of its judges'
        assert ((jury[col] - (chat[col] + rm[col]) / 2).abs() < 1e-9).all()
    mean = jury[["p_a", "p_b", "p_tie"]].rename(columns=lambda c: c[2:])
    assert (jury["preference"] == mean.idxmax(axis=1)).all()
    agree = ((chat["preference"] == jury["preference"]).astype(int) + (rm["preference"] == jury["preference"])) / 2
    assert (jury["confidence"] == agree).all()  # confidence = the judges' agreement
    # eval-labels reports each judge and the jury side by side.
    ev = run_cli("eval-labels", "--labels", out, "--reference", truth, "--json", tmp_path / "r.json")
    assert ev.returncode == 0, ev.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["references"][0]["judges"]) == set(df["judge"])


def test_frames_as_video_halves_visual_tokens(vllm_server, tiny_vlm, synthetic, tmp_path):
    pairs, _ = synthetic
    tokens = {}
    for frames_as in ("images", "video"):
        out = tmp_path / f"{frames_as}.parquet"
        r = run_cli(
            "label",
            "--pairs",
            pairs,
            "--out",
            out,
            "--server",
            vllm_server,
            "--frames-as",
            frames_as,
            "--min-confidence",
            "0",
            "--quiet",
        )
        assert r.returncode == 0, r.stderr
        _, results = read_journal(journal_path_for(out))
        assert len(results) == 18 and all(x.status == "ok" for x in results.values())
        tokens[frames_as] = {rid: x.prompt_tokens for (_, rid), x in results.items()}
        judge = pd.read_parquet(out)["judge"].iloc[0]
        assert judge.endswith(":video") == (frames_as == "video")
    # 8 frames of 64x64 per video: as images 8 x 4 tokens, as one video item ceil(8/2) x 4 (Qwen2-VL merges frame
    # pairs), so each request saves at least 2 x 16 visual tokens (and the per-image start/end markers).
    assert set(tokens["images"]) == set(tokens["video"])
    for rid, n in tokens["images"].items():
        assert n - tokens["video"][rid] >= 2 * (8 * 4 - 4 * 4)


def test_jury_file_errors_name_the_entry(synthetic, tmp_path):
    pairs, _ = synthetic
    bad = tmp_path / "judges.yaml"
    bad.write_text("judges:\n  - {kind: chat, server: http://x}\n  - {kind: score, servr: http://y}\n")
    r = run_cli("label", "--pairs", pairs, "--judges", bad, "--dry-run")
    assert r.returncode == 2 and "judges[1]" in r.stderr and "servr" in r.stderr
    bad.write_text("judges:\n  - {kind: chat, api: openai, server: http://x/v1, model: m, frames_as: video}\n")
    r = run_cli("label", "--pairs", pairs, "--judges", bad, "--dry-run")
    assert r.returncode == 2 and "judges[0]" in r.stderr and "--frames-as video" in r.stderr
    for entry, flag in (
        ("{kind: chat, server: 8000}", "--server"),
        ("{kind: score, server: http://x, score_weights: '1,1'}", "--score-weights"),
    ):
        bad.write_text(f"judges:\n  - {entry}\n")
        r = run_cli("label", "--pairs", pairs, "--judges", bad, "--dry-run")
        assert r.returncode == 2 and flag in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_request_ids_are_per_unit():
    assert request_id("p", 3, "a") == "p:3:a" and request_id("p", 3, "ab") == "p:3:ab"


def test_a_video_item_holds_whole_temporal_patches():
    """An odd count of frames is cut to even in a video item: transformers and vLLM would pad it differently (the
    tiny judge's answers differed between them on exactly those segments); images keep every frame."""
    from labeler.judges.chat import build_messages
    from labeler.prompts import load_prompt

    frames = [f"data:image/jpeg;base64,F{i}" for i in range(5)]

    def shown(frames_as: str) -> list[list[str]]:
        content = build_messages(load_prompt(), "a caption", frames, frames[:4], frames_as)[0]["content"]
        items = [p[p["type"]]["url"] for p in content if p["type"] != "text"]
        return [u.split(",")[1:] for u in items] if frames_as == "video" else items

    assert shown("video") == [["F0", "F1", "F2", "F3"]] * 2
    assert len(shown("images")) == 9
    one = build_messages(load_prompt(), "c", frames[:1], frames[:1], "video")[0]["content"]
    assert [p["video_url"]["url"] for p in one if p["type"] == "video_url"] == ["data:video/jpeg;base64,F0"] * 2
