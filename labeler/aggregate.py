"""Combine the two orders of a segment into one label, and segments into a clip label (pure functions)."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from labeler.parse import OrderResult


def decided(labels: pd.DataFrame) -> pd.Series:
    """Rows that carry a preference: status ok and a or b (training, summaries and eval-labels agree on this)."""
    return labels["status"].eq("ok") & labels["preference"].isin(["a", "b"])


def aggregate_segment(ab: OrderResult, ba: OrderResult, min_confidence: float) -> dict:
    """One labels-table row's judgement fields from the (a, b) and (b, a) answers of a segment.

    Rules (paper §3.3 and App. A.6, position-bias filtering):
    - any request_error -> request_error; else any parse_error -> parse_error; preference null, raw kept;
    - the two orders disagree -> order_inconsistent, preference tie;
    - they agree but the confidence (probability of the agreed answer averaged over both orders) is below
      `min_confidence` -> low_confidence, preference tie;
    - otherwise ok with the agreed preference (which may itself be tie).
    p_a, p_b and p_tie are the averages of both orders.
    """
    raw = f"ab: {ab.raw_response} | ba: {ba.raw_response}"
    for status in ("request_error", "parse_error"):
        bad = [r for r in (ab, ba) if r.status == status]
        if bad:
            error = "; ".join(f"{r.order}: {r.error}" for r in bad)
            return _row(None, None, None, None, None, None, status, error, raw)
    p_a = (ab.p_a + ba.p_a) / 2
    p_b = (ab.p_b + ba.p_b) / 2
    p_tie = (ab.p_tie + ba.p_tie) / 2
    if ab.answer != ba.answer:
        conf = max(p_a, p_b, p_tie)
        return _row("tie", p_a, p_b, p_tie, conf, False, "order_inconsistent", None, raw)
    confidence = {"a": p_a, "b": p_b, "tie": p_tie}[ab.answer]
    if confidence < min_confidence:
        return _row("tie", p_a, p_b, p_tie, confidence, True, "low_confidence", None, raw)
    return _row(ab.answer, p_a, p_b, p_tie, confidence, True, "ok", None, raw)


def _row(preference, p_a, p_b, p_tie, confidence, agreement, status, error, raw) -> dict:
    return {
        "preference": preference,
        "p_a": p_a,
        "p_b": p_b,
        "p_tie": p_tie,
        "confidence": confidence,
        "order_agreement": agreement,
        "status": status,
        "error": error,
        "raw_response": raw,
    }


def clip_preference(segment_preferences: list[str | None], statuses: list[str] | None = None) -> str:
    """Clip-level label by majority vote over segment labels (non-ok segments count as ties).

    A tie between the a and b counts, or no a/b votes at all, gives tie.
    """
    statuses = statuses or ["ok"] * len(segment_preferences)
    votes = Counter(p for p, s in zip(segment_preferences, statuses) if s == "ok" and p in ("a", "b"))
    if votes["a"] > votes["b"]:
        return "a"
    if votes["b"] > votes["a"]:
        return "b"
    return "tie"
