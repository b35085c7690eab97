import math

import pytest

from labeler.parse import OrderResult, choice_probabilities, parse_response
from tests.fake_openai import completion

CHOICES = ("first", "second", "tie")


def test_probabilities_sum_prefix_tokens_and_skip_masked():
    top = [
        {"token": "f", "logprob": math.log(0.2)},
        {"token": "fir", "logprob": math.log(0.2)},  # also a prefix of "first"
        {"token": "se", "logprob": math.log(0.3)},
        {"token": "t", "logprob": math.log(0.1)},
        {"token": "banana", "logprob": math.log(0.1)},  # not a prefix of any choice
        {"token": "s", "logprob": -9999.0},  # masked by the grammar
    ]
    assert choice_probabilities(top, CHOICES) == pytest.approx([0.4 / 0.8, 0.3 / 0.8, 0.1 / 0.8])
    assert choice_probabilities([{"token": "x", "logprob": -0.1}], CHOICES) is None


def test_ab_maps_positions_to_pair_and_ba_swaps():
    body = completion("first", {"f": math.log(0.7), "s": math.log(0.2), "t": math.log(0.1)})
    ab = parse_response(body, "p:0:ab", "ab", CHOICES)
    ba = parse_response(body, "p:0:ba", "ba", CHOICES)
    assert (ab.status, ab.answer, ab.p_a, ab.p_b) == ("ok", "a", pytest.approx(0.7), pytest.approx(0.2))
    assert (ba.status, ba.answer, ba.p_a, ba.p_b) == ("ok", "b", pytest.approx(0.2), pytest.approx(0.7))
    assert ab.p_tie == pytest.approx(0.1) and ab.raw_response == "first"


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({}, "no choices"),
        ({"choices": []}, "no choices"),
        ({"choices": [{"message": {"content": "I think the first one"}}]}, "not one of"),
        ({"choices": [{"message": {"content": "first"}}]}, "no logprobs"),
        (completion("tie", {"x": -0.1}), "prefix"),
    ],
)
def test_parse_errors_are_rows_with_raw_body(body, fragment):
    r = parse_response(body, "p:1:ab", "ab", CHOICES)
    assert r.status == "parse_error" and fragment in r.error
    assert r.raw_response is not None and r.answer is None


def test_order_result_json_roundtrip():
    r = OrderResult("p:0:ab", "ab", "ok", "a", 0.5, 0.3, 0.2, "first")
    assert OrderResult.from_json(r.to_json()) == r


def test_retry_after_header():
    from labeler.client import _retry_after_s

    assert _retry_after_s("2") == 2.0 and _retry_after_s("0.5") == 0.5
    assert _retry_after_s("3600") == 60.0 and _retry_after_s("-1") == 0.0
    assert _retry_after_s(None) is None and _retry_after_s("Wed, 21 Oct 2026 07:28:00 GMT") is None
