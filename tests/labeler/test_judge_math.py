"""The judges' pure functions, with hand-worked values: scorer probabilities, juries, JSON-answer logprobs, votes,
the tie-margin fit."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from labeler.aggregate import aggregate_scores, combine_judges, score_probabilities
from labeler.parse import OrderResult, json_answer, json_choice_probabilities, vote_shares
from review.judge_report import fit_tie_margin

CHOICES = ("first", "second", "tie")


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_score_probabilities_rao_kupper():
    assert score_probabilities(0.0, 0.0, 1.0) == pytest.approx((0.5, 0.5, 0.0))
    p_a, p_b, p_tie = score_probabilities(2.0, 0.5, 1.0)
    assert (p_a, p_b) == pytest.approx((sig(1.5), sig(-2.5))) and p_tie == pytest.approx(1 - sig(1.5) - sig(-2.5))
    assert score_probabilities(0.0, 1.0, 2.0) == pytest.approx((sig(-0.5), sig(-0.5), 1 - 2 * sig(-0.5)))
    assert score_probabilities(-800.0, 0.0, 1.0)[0] == 0.0  # no overflow far out


def score(unit, value):
    return OrderResult(f"p:0:{unit}", unit, "ok", score=value)


def test_aggregate_scores_margin_and_confidence():
    row = aggregate_scores(score("a", 3.0), score("b", 1.0), tie_margin=0.5, scale=1.0, min_confidence=0.5)
    assert row["preference"] == "a" and row["status"] == "ok" and row["confidence"] == pytest.approx(sig(1.5))
    row = aggregate_scores(score("a", 1.2), score("b", 1.0), tie_margin=0.5, scale=1.0, min_confidence=0.2)
    assert row["preference"] == "tie" and row["status"] == "ok" and row["order_agreement"] is None
    row = aggregate_scores(score("a", 1.0), score("b", 1.7), tie_margin=0.5, scale=1.0, min_confidence=0.6)
    assert row["status"] == "low_confidence" and row["preference"] == "tie"  # p_b = sig(0.2) = 0.55 < 0.6
    bad = OrderResult("p:0:b", "b", "request_error", error="HTTP 500")
    assert aggregate_scores(score("a", 1.0), bad, 0.0, 1.0, 0.5)["status"] == "request_error"


def judged(pref, p_a, p_b, p_tie, status="ok"):
    return {"preference": pref, "p_a": p_a, "p_b": p_b, "p_tie": p_tie, "status": status, "error": None}


def test_jury_mean_and_majority():
    rows = {"x": judged("a", 0.7, 0.2, 0.1), "y": judged("tie", 0.3, 0.2, 0.5), "z": judged("a", 0.6, 0.3, 0.1)}
    mean = combine_judges(rows, "mean", 0.5)
    assert mean["preference"] == "a" and mean["p_a"] == pytest.approx(1.6 / 3)
    assert mean["confidence"] == pytest.approx(2 / 3) and mean["status"] == "ok"
    assert combine_judges(rows, "majority", 0.5)["preference"] == "a"
    assert combine_judges(rows, "mean", 0.9)["status"] == "low_confidence"  # 2 of 3 agree, below 0.9
    split = {"x": judged("a", 0.9, 0.05, 0.05), "y": judged("b", 0.1, 0.8, 0.1)}
    assert combine_judges(split, "majority", 0.5)["preference"] == "tie"  # 1 vs 1
    assert combine_judges(split, "mean", 0.5)["preference"] == "a"  # mean p_a 0.5 > p_b 0.425
    failed = {"x": judged(None, None, None, None, "request_error"), "y": judged("b", 0.1, 0.8, 0.1)}
    only = combine_judges(failed, "mean", 0.5)
    assert only["preference"] == "b" and only["confidence"] == 1.0  # a failed judge does not vote


def test_json_answer_probabilities_at_the_value_token():
    content = '{"answer":"second"}'
    tokens = [{"token": t, "top_logprobs": []} for t in ['{"', "answer", '":"']]
    tokens.append(
        {
            "token": "sec",
            "top_logprobs": [
                {"token": "sec", "logprob": math.log(0.6)},
                {"token": "fir", "logprob": math.log(0.3)},
                {"token": "t", "logprob": math.log(0.1)},
                {"token": "x", "logprob": math.log(0.5)},  # no choice: skipped
                {"token": "f", "logprob": -9999.0},
            ],
        }
    )  # masked by the grammar
    tokens += [{"token": t, "top_logprobs": []} for t in ['ond"', "}", "<|im_end|>"]]
    assert json_choice_probabilities(tokens, content, CHOICES) == pytest.approx([0.3, 0.6, 0.1])
    # A token that starts before the value: alternatives must share its prefix.
    merged = [
        {"token": '{"answer', "top_logprobs": []},
        {
            "token": '":"s',
            "top_logprobs": [
                {"token": '":"s', "logprob": math.log(0.5)},
                {"token": '":"tie"', "logprob": math.log(0.5)},
                {"token": '"x', "logprob": 0.0},
            ],
        },
        {"token": 'econd"}', "top_logprobs": []},
    ]
    assert json_choice_probabilities(merged, content, CHOICES) == pytest.approx([0.0, 0.5, 0.5])
    assert json_choice_probabilities(tokens[:2], content, CHOICES) is None  # tokens do not spell the content
    assert json_answer('{"answer": "tie"}', CHOICES) == ("tie", None)
    assert json_answer("tie", CHOICES)[0] is None and json_answer('{"answer": "maybe"}', CHOICES)[0] is None


def test_vote_shares():
    assert vote_shares(["first", "first", "tie"], CHOICES) == pytest.approx([2 / 3, 0, 1 / 3])


def test_fit_tie_margin_on_a_reference():
    labels = pd.DataFrame(
        {
            "pair_id": ["p"] * 6,
            "segment_idx": range(6),
            "score_a": [3.0, 1.125, 0.0, 1.0, 1.25, 0.25],
            "score_b": [1.0, 1.0, 2.5, 1.0625, 1.0, 0.0],
        }
    )
    ref = pd.DataFrame(
        {"pair_id": ["p"] * 6, "segment_idx": range(6), "preference": ["a", "tie", "b", "tie", "tie", "a"]}
    )
    fit = fit_tie_margin(labels, ref)
    # d = 2, 0.125, -2.5, -0.0625, 0.25, 0.25. At 0: a a b b a a (3 of 6 right). At 0.1875 (between 0.125 and
    # 0.25): a tie b tie a a (5 of 6: the two d = 0.25 segments disagree in the reference); 1.125 also gets 5, and
    # the smaller margin wins.
    assert fit["agreement"] == pytest.approx(5 / 6) and fit["agreement_at_zero"] == pytest.approx(3 / 6)
    assert fit["value"] == pytest.approx(0.1875) and fit["segments"] == 6
    assert fit_tie_margin(labels.drop(columns=["score_a"]), ref) is None


def test_one_status_rule_for_ties_of_every_judge_kind():
    """A tie below --min-confidence is low_confidence for a chat judge, a scorer and a jury alike."""
    from labeler.aggregate import aggregate_segment

    def chat(unit, p):
        return OrderResult(f"p:0:{unit}", unit, "ok", answer="tie", p_a=p[0], p_b=p[1], p_tie=p[2])

    assert (
        aggregate_segment(chat("ab", (0.3, 0.3, 0.4)), chat("ba", (0.3, 0.3, 0.4)), 0.5)["status"] == "low_confidence"
    )
    # scorer: d = 0.2 inside the margin 0.5 -> tie with p_tie = 1 - sig(-0.3) - sig(-0.7) = 0.2424
    row = aggregate_scores(score("a", 1.2), score("b", 1.0), tie_margin=0.5, scale=1.0, min_confidence=0.5)
    assert row["preference"] == "tie" and row["status"] == "low_confidence"
    assert row["confidence"] == pytest.approx(1 - sig(-0.3) - sig(-0.7))
    # jury: two judges say tie, one says a -> tie with agreement 2/3, below 0.9
    rows = {"x": judged("tie", 0.2, 0.2, 0.6), "y": judged("tie", 0.3, 0.2, 0.5), "z": judged("a", 0.6, 0.3, 0.1)}
    jury = combine_judges(rows, "majority", 0.9)
    assert jury["preference"] == "tie" and jury["status"] == "low_confidence"
    assert combine_judges(rows, "majority", 0.5)["status"] == "ok"


def test_equal_top_votes_are_a_tie_not_the_first_position():
    """--samples 2 split between first and second: the tool must not pick `first` (a position bias of its own)."""
    from labeler.judges import JudgeSpec, make_judge
    from labeler.judges.chat import top_choice

    assert top_choice([0.5, 0.5, 0.0]) == 2 and top_choice([0.5, 0.0, 0.5]) == 2 and top_choice([0.0, 0.5, 0.5]) == 2
    assert top_choice([0.6, 0.4, 0.0]) == 0 and top_choice([0.0, 1.0, 0.0]) == 1
    judge = make_judge(JudgeSpec(api="openai", model="o3", samples=2))
    judge.bind("o3")
    body = {
        "choices": [{"message": {"content": '{"answer": "first"}'}}, {"message": {"content": '{"answer": "second"}'}}]
    }
    result = judge.read(body, "p:0:ab", "ab")
    assert result.status == "ok" and result.answer == "tie"
    assert (result.p_a, result.p_b) == (0.5, 0.5)


def test_fingerprint_covers_every_request_field():
    """A journal made with other top_logprobs or max_tokens (or samples) is not reused."""
    from labeler.judges import JudgeSpec, make_judge

    def fp(**kw):
        judge = make_judge(JudgeSpec(**{"model": "m", **kw}))
        judge.bind("m")
        return judge.fingerprint()

    assert fp() == fp()
    assert fp(top_logprobs=5) != fp()
    assert fp(api="openai", max_tokens=32) != fp(api="openai", max_tokens=64)
    assert fp(api="openai", samples=3) != fp(api="openai", samples=5)
    vllm = make_judge(JudgeSpec(model="m"))
    vllm.bind("m")
    before = vllm.fingerprint()
    vllm.max_tokens = 7  # set by the constraint probe at start
    assert vllm.fingerprint() != before and vllm.fingerprint()["request"]["max_tokens"] == 7
