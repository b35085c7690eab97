"""Reasoning judges: a thought, then the answer read at the answer token after it (labeler/judges/chat.py).

The real-vLLM tests serve a tiny random thinking model (densedpo.tiny, `thinking=True`: `<think>`/`</think>` tokens,
a template whose generation prompt opens the thought) with vLLM's `deepseek_r1` reasoning parser.
"""

from __future__ import annotations

import asyncio
import json
import math
import re

import httpx
import pandas as pd
import pytest

from labeler.config import LabelConfig
from labeler.engine import label_pairs
from labeler.journal import journal_path_for, read_journal
from labeler.judges import JudgeSpec, make_judge
from labeler.judges.chat import ThinkingChatJudge, answer_after_thought, prefilled, thought_of
from labeler.parse import REASONED, OrderResult, choice_probabilities
from tests.conftest import require_module

THINK = 12  # the thinking budget of these tests: a random model never closes its thought, so every thought is cut


# ---------------------------------------------------------------------------------------------- no server


def test_thought_of_reads_the_parser_field_or_the_content():
    assert thought_of({"reasoning": " looks at the hands ", "content": None}) == "looks at the hands"
    assert thought_of({"reasoning_content": "older servers", "content": "first"}) == "older servers"
    assert thought_of({"content": "<think>\nno parser here</think>\n\nsecond"}) == "no parser here"
    assert thought_of({"content": "opened by the template</think>first"}) == "opened by the template"
    assert thought_of({"content": None}) is None


def test_an_answer_after_the_thought_is_read_from_where_the_parser_files_it():
    reply = {"choices": [{"message": {"content": None, "reasoning": "first"}, "logprobs": None}]}
    assert answer_after_thought(reply)["choices"][0]["message"]["content"] == "first"
    plain = {"choices": [{"message": {"content": "tie"}}]}
    assert answer_after_thought(plain) is plain


class RecordingPool:
    """Records the bodies a judge posts and answers them from a script (the request bodies are what is tested)."""

    urls = ["http://127.0.0.1:9"]

    def __init__(self, replies):
        self.replies, self.posted = list(replies), []

    async def post(self, path, body, request_id=None):
        self.posted.append((request_id, body))
        return self.replies.pop(0)


def _answer_reply(token_logprobs: dict[str, float], text: str) -> dict:
    top = [{"token": t, "logprob": lp} for t, lp in token_logprobs.items()]
    return {
        "choices": [
            {"message": {"content": None, "reasoning": text}, "logprobs": {"content": [{"top_logprobs": top}]}}
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 2},
    }


def test_the_answer_comes_from_the_answer_token_not_from_words_in_the_thought():
    judge = make_judge(JudgeSpec(model="m", reasoning=True, think_tokens=7))
    judge.bind("m")
    body = judge.request("ab", "a cat", ["data:image/jpeg;base64,AA"], ["data:image/jpeg;base64,BB"])
    thought = "The first video is better. first first first. Answer: first"
    think_reply = {
        "choices": [{"message": {"content": None, "reasoning": thought}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 7},
    }
    logprobs = {"f": math.log(0.2), "s": math.log(0.7), "t": math.log(0.1)}
    pool = RecordingPool([think_reply, _answer_reply(logprobs, "second")])
    saved = []
    result = asyncio.run(judge.ask(pool, body, "p:0:ab", "ab", None, saved.append))

    (rid1, think), (rid2, answer) = pool.posted
    assert rid1 == "p:0:ab:think" and rid2 == "p:0:ab"
    assert think["max_tokens"] == 7 and "structured_outputs" not in think and "logprobs" not in think
    assert think["messages"] == body["messages"]
    assert answer["continue_final_message"] is True and answer["add_generation_prompt"] is False
    assert answer["messages"] == prefilled(body["messages"], thought)
    assert answer["messages"][-1]["content"] == f"<think>\n{thought}\n</think>\n\n"
    assert answer["structured_outputs"] == body["structured_outputs"]
    # The thought says "first" four times; the answer token says second at 0.7.
    assert (result.answer, result.p_b, result.p_a, result.p_tie) == (
        "b",
        pytest.approx(0.7),
        pytest.approx(0.2),
        pytest.approx(0.1),
    )
    assert result.reasoning == thought and result.reasoning_tokens == 7 and result.reasoning_cut is True
    assert (result.prompt_tokens, result.completion_tokens) == (200, 9)  # both requests
    assert [s.status for s in saved] == [REASONED]  # the thought is journaled before its answer is asked

    # Resumed with the thought journaled: only the answer is asked.
    pool = RecordingPool([_answer_reply(logprobs, "second")])
    again = asyncio.run(judge.ask(pool, body, "p:0:ab", "ab", saved[0], None))
    assert [rid for rid, _ in pool.posted] == ["p:0:ab"]
    assert (again.answer, again.reasoning) == ("b", thought)


@pytest.mark.parametrize(
    "spec, flag",
    [
        (JudgeSpec(model="m", kind="score", reasoning=True), "--reasoning"),
        (JudgeSpec(model="o3", api="openai", server=["http://h/v1"], reasoning=True), "--samples"),
        (
            JudgeSpec(model="m", api="openai", server=["http://h/v1"], samples=3, reasoning_parser="qwen3"),
            "--reasoning-parser",
        ),
        (JudgeSpec(model="m", reasoning=True, think_tokens=0), "--think-tokens"),
        (JudgeSpec(model="m", reasoning_effort="extreme"), "--reasoning-effort"),
    ],
)
def test_reasoning_settings_that_cannot_work_are_refused_naming_the_flag(spec, flag):
    from densedpo.errors import DenseDPOError

    with pytest.raises(DenseDPOError, match=re.escape(flag)):
        spec.check("label")


def test_a_parser_or_an_effort_makes_a_thinking_judge():
    for spec in (JudgeSpec(model="m", reasoning_parser="deepseek_r1"), JudgeSpec(model="m", reasoning_effort="low")):
        spec.check("label")
        assert isinstance(make_judge(spec), ThinkingChatJudge)
    plain = make_judge(JudgeSpec(model="m"))
    assert not isinstance(plain, ThinkingChatJudge)


def test_vllm_command_prints_the_judge_folders_reasoning_parser(tmp_path):
    from typer.testing import CliRunner

    from app.cli import app

    (tmp_path / "densedpo-judge.yaml").write_text("reasoning_parser: deepseek_r1\n")
    r = CliRunner().invoke(app, ["vllm-command", "--model", str(tmp_path)])  # in-process: the fast lane's budget
    assert r.exit_code == 0, r.output
    assert "--reasoning-parser deepseek_r1" in r.stdout
    r = CliRunner().invoke(app, ["vllm-command", "--model", str(tmp_path), "--reasoning-parser", "qwen3"])
    assert "--reasoning-parser qwen3" in r.stdout and "deepseek_r1" not in r.stdout


def test_label_starts_vllm_with_the_judges_reasoning_parser(monkeypatch, synthetic, tmp_path):
    """The server densedpo starts for a thinking judge gets its parser (managed_vllm captured, nothing started)."""
    import contextlib

    import labeler.servers as servers
    from labeler.engine import start_servers

    seen = []

    @contextlib.contextmanager
    def fake_managed_vllm(model, **kw):
        seen.append((model, list(kw["extra_args"])))
        yield f"http://127.0.0.1:{len(seen)}"

    monkeypatch.setattr(servers, "managed_vllm", fake_managed_vllm)
    specs = [JudgeSpec(model="thinker", reasoning_parser="deepseek_r1"), JudgeSpec(model="plain")]
    from labeler.plan import plan_pairs

    cfg = LabelConfig(pairs=synthetic[0], out=tmp_path / "l.parquet")
    with contextlib.ExitStack() as stack:
        urls = start_servers(specs, plan_pairs(cfg), cfg, stack, console=_Quiet())
    assert seen == [("thinker", ["--reasoning-parser", "deepseek_r1"]), ("plain", [])]
    assert urls == [["http://127.0.0.1:1"], ["http://127.0.0.1:2"]]


class _Quiet:
    def print(self, *a, **k):
        pass


# ---------------------------------------------------------------------------------------------- real vLLM


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory):
    from densedpo.tiny import make_tiny_vlm

    out = make_tiny_vlm(tmp_path_factory.mktemp("tiny-thinker"), seed=5, thinking=True)
    (out / "densedpo-judge.yaml").write_text("reasoning_parser: deepseek_r1\n")
    return out


@pytest.fixture(scope="module")
def thinking_server(thinking_model, tmp_path_factory):
    """vLLM serving the thinking model with the reasoning parser, as `label --model FOLDER` starts it."""
    require_module("vllm", "vllm", "bash scripts/setup.sh")
    from labeler.servers import managed_vllm, reasoning_args

    log = tmp_path_factory.mktemp("vllm-thinking") / "vllm.log"
    extra = reasoning_args("deepseek_r1")
    with managed_vllm(str(thinking_model), log_path=log, max_images=40, max_model_len=2048, extra_args=extra) as url:
        yield url


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(v) for v in re.findall(rf"^{name}\{{[^}}]*\}} ([0-9.e+]+)$", text, re.M))


def _answer_token_probabilities(url: str, judge_body: dict, thought: str) -> list[float]:
    """The choices' probabilities at the answer token, asked by hand: the conversation, the assistant turn written
    up to the answer, the constrained choices, logprobs of the first generated token."""
    messages = [*judge_body["messages"], {"role": "assistant", "content": f"<think>\n{thought}\n</think>\n\n"}]
    choices = judge_body["structured_outputs"]["choice"]
    body = {
        "model": judge_body["model"],
        "messages": messages,
        "continue_final_message": True,
        "add_generation_prompt": False,
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": 20,
        "structured_outputs": {"choice": choices},
    }
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).json()
    return choice_probabilities(reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"], tuple(choices))


def _judge_bodies(cfg: LabelConfig, judge_id: str, model: str) -> dict[str, dict]:
    """The judge's request body (before the thought) of every unit, rebuilt with the labeler's own code."""
    from labeler.frames import prepare_pair
    from labeler.plan import plan_pairs, request_id
    from labeler.segments import sample_frame_indices

    spec = cfg.judge_specs()[0][0]
    judge = make_judge(spec)
    judge.bind(model)
    bodies = {}
    for plan in plan_pairs(cfg):
        urls = prepare_pair(plan, plan.segments, cfg)
        for seg in plan.segments:
            idx = sample_frame_indices(seg, plan.info.fps, cfg.sample_fps)
            frames_a, frames_b = [urls["a"][k] for k in idx], [urls["b"][k] for k in idx]
            for unit in ("ab", "ba"):
                bodies[request_id(plan.pair_id, seg.segment_idx, unit)] = judge.request(
                    unit, plan.prompt, frames_a, frames_b
                )
    assert judge.id == judge_id
    return bodies


@pytest.mark.vllm
def test_a_reasoning_judge_thinks_then_answers_and_resumes_from_a_journaled_thought(
    thinking_server, thinking_model, synthetic, tmp_path
):
    pairs, _ = synthetic
    out = tmp_path / "labels.parquet"
    cfg = LabelConfig(
        pairs=pairs, out=out, server=[thinking_server], min_confidence=0.0, concurrency=4,
        reasoning=True, think_tokens=THINK,
    )  # fmt: skip
    before = _metric(thinking_server, "vllm:request_success_total")
    hits0, queries0 = (_metric(thinking_server, f"vllm:prefix_cache_{k}_total") for k in ("hits", "queries"))
    result = label_pairs(cfg, progress=False)
    assert _metric(thinking_server, "vllm:request_success_total") - before == 2 * 18 + 1  # thought + answer, + probe
    hits = _metric(thinking_server, "vllm:prefix_cache_hits_total") - hits0
    queries = _metric(thinking_server, "vllm:prefix_cache_queries_total") - queries0
    print(f"prefix cache over the run: {hits:.0f} of {queries:.0f} prompt tokens cached ({hits / queries:.0%})")
    assert hits > 0  # the answer's prompt repeats the thought's, images included

    df = pd.read_parquet(out)
    judge_id = df["judge"].iloc[0]
    assert judge_id.endswith(":think") and len(df) == 9
    assert df["reasoning_ab"].notna().all() and df["reasoning_ba"].notna().all()
    s = result.summary["judges"][judge_id]
    assert (s["thoughts"], s["thoughts_cut"], s["reasoning_tokens"]) == (18, 18, 18 * THINK)
    assert s["confidence_from"] == "logprobs at the answer after the thought"

    header, results = read_journal(journal_path_for(out))
    lines = [json.loads(x) for x in journal_path_for(out).read_text().splitlines()[1:]]
    assert [x["status"] for x in lines].count(REASONED) == 18  # every thought journaled before its answer
    for x in lines:
        if x["status"] != REASONED:
            assert x["reasoning"] == next(
                y["reasoning"] for y in lines if y["status"] == REASONED and y["request_id"] == x["request_id"]
            )

    # A crash after the thoughts: keep them, drop every answer, and put the answer words into each thought.
    words = "The second video is better: second, second. Not first, not a tie. second"
    thoughts = [
        OrderResult(**{**x, "reasoning": f"{words} {x['request_id']}"}).to_json()
        for x in lines
        if x["status"] == REASONED
    ]
    journal_path_for(out).write_text("\n".join([json.dumps({"fingerprint": header}), *thoughts]) + "\n")
    out.unlink()
    before = _metric(thinking_server, "vllm:request_success_total")
    label_pairs(cfg, progress=False)
    assert _metric(thinking_server, "vllm:request_success_total") - before == 18 + 1  # answers only, + probe

    # Each answer's probabilities are the answer token's after that (edited) thought, asked by hand.
    bodies = _judge_bodies(cfg, judge_id, str(thinking_model))
    _, results = read_journal(journal_path_for(out))
    for (_, rid), r in results.items():
        assert r.status == "ok" and r.reasoning == f"{words} {rid}"
        first, second, tie = _answer_token_probabilities(thinking_server, bodies[rid], r.reasoning)
        shown_first, shown_second = ("a", "b") if r.order == "ab" else ("b", "a")
        got = {"a": r.p_a, "b": r.p_b}
        assert (got[shown_first], got[shown_second], r.p_tie) == pytest.approx((first, second, tie), abs=1e-5)
    df = pd.read_parquet(out)
    assert df["reasoning_ab"].str.startswith(words).all()


def test_a_dry_run_counts_a_journaled_thought_as_still_to_ask(synthetic, tmp_path):
    """A thought without its answer is not an answer: the plan counts its unit as left (and its tokens, half a
    unit's, do not enter the estimate)."""
    from labeler.engine import fingerprint
    from labeler.journal import Journal
    from labeler.plan import dry_run_plan, plan_pairs, request_id

    cfg = LabelConfig(pairs=synthetic[0], out=tmp_path / "l.parquet", model="m", reasoning=True)
    judge = make_judge(cfg.judge_specs()[0][0])
    judge.bind("m")
    first = plan_pairs(cfg)[0]
    rid = [request_id(first.pair_id, 0, u) for u in ("ab", "ba")]
    with Journal(tmp_path / "l.parquet.journal.jsonl", fingerprint(cfg, [judge])) as journal:
        journal.append(OrderResult(rid[0], "ab", REASONED, judge=judge.id, reasoning="hm", prompt_tokens=9))
        journal.append(OrderResult(rid[1], "ba", "ok", "a", 0.8, 0.1, 0.1, judge=judge.id, prompt_tokens=100))
    plan = dry_run_plan(cfg)
    assert (plan["requests"], plan["already_journaled"], plan["requests left"]) == (18, 1, 17)
    assert plan["prompt tokens left (est.)"] == 17 * 100
