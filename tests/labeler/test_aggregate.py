import pytest

from labeler.aggregate import aggregate_segment, clip_preference
from labeler.parse import OrderResult


def order(o, answer, p_a, p_b, p_tie, status="ok", error=None):
    return OrderResult(f"p:0:{o}", o, status, answer, p_a, p_b, p_tie, raw_response=answer, error=error)


ERR = dict(answer=None, p_a=None, p_b=None, p_tie=None)


@pytest.mark.parametrize(
    "ab, ba, min_conf, status, pref, conf",
    [
        (("a", 0.9, 0.05, 0.05), ("a", 0.7, 0.2, 0.1), 0.5, "ok", "a", 0.8),
        (("b", 0.1, 0.8, 0.1), ("b", 0.2, 0.6, 0.2), 0.5, "ok", "b", 0.7),
        (("tie", 0.1, 0.1, 0.8), ("tie", 0.2, 0.2, 0.6), 0.5, "ok", "tie", 0.7),
        (("a", 0.6, 0.3, 0.1), ("a", 0.4, 0.35, 0.25), 0.55, "low_confidence", "tie", 0.5),
        (("a", 0.6, 0.3, 0.1), ("a", 0.4, 0.35, 0.25), 0.5, "ok", "a", 0.5),  # the threshold itself passes
        (("a", 0.9, 0.05, 0.05), ("b", 0.3, 0.6, 0.1), 0.0, "order_inconsistent", "tie", 0.6),
    ],
)
def test_aggregate_table(ab, ba, min_conf, status, pref, conf):
    row = aggregate_segment(order("ab", *ab), order("ba", *ba), min_conf)
    assert row["status"] == status
    assert row["preference"] == pref
    assert row["confidence"] == pytest.approx(conf)
    assert row["p_a"] + row["p_b"] + row["p_tie"] == pytest.approx(1.0)
    assert row["p_a"] == pytest.approx((ab[1] + ba[1]) / 2)
    assert row["order_agreement"] is (status != "order_inconsistent")


def test_errors_keep_raw_and_message_and_request_error_wins():
    ok = order("ab", "a", 0.9, 0.05, 0.05)
    parse = OrderResult("p:0:ba", "ba", "parse_error", raw_response='{"bad": 1}', error="no choices")
    req = OrderResult("p:0:ab", "ab", "request_error", raw_response="boom", error="HTTP 500")
    row = aggregate_segment(ok, parse, 0.5)
    assert (row["status"], row["preference"], row["p_a"]) == ("parse_error", None, None)
    assert "ba: no choices" in row["error"] and '{"bad": 1}' in row["raw_response"]
    row = aggregate_segment(req, parse, 0.5)
    assert row["status"] == "request_error" and "HTTP 500" in row["error"]


@pytest.mark.parametrize(
    "prefs, statuses, expected",
    [
        (["a", "a", "b"], None, "a"),
        (["b", "tie", "tie", "tie"], None, "b"),
        (["a", "b"], None, "tie"),
        (["a", "b", "b"], ["ok", "order_inconsistent", "ok"], "tie"),  # non-ok segments do not vote
        ([None, "tie"], ["request_error", "ok"], "tie"),
    ],
)
def test_clip_preference(prefs, statuses, expected):
    assert clip_preference(prefs, statuses) == expected
