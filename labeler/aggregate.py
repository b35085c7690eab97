"""Combine the two orders of a segment into one label, and segments into a clip label (pure functions)."""

from __future__ import annotations

import math
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
    failed = _failed([ab, ba], raw)
    if failed:
        return failed
    p_a = (ab.p_a + ba.p_a) / 2
    p_b = (ab.p_b + ba.p_b) / 2
    p_tie = (ab.p_tie + ba.p_tie) / 2
    if ab.answer != ba.answer:
        conf = max(p_a, p_b, p_tie)
        return _row("tie", p_a, p_b, p_tie, conf, False, "order_inconsistent", None, raw)
    confidence = {"a": p_a, "b": p_b, "tie": p_tie}[ab.answer]
    status = answer_status(confidence, min_confidence)
    return _row(ab.answer if status == "ok" else "tie", p_a, p_b, p_tie, confidence, True, status, None, raw)


def answer_status(confidence: float, min_confidence: float) -> str:
    """The one rule for every judge kind (chat, scorer, jury): an answer, tie included, whose confidence is below
    min_confidence is low_confidence (and counts as a tie); otherwise ok."""
    return "low_confidence" if confidence < min_confidence else "ok"


def _failed(results: list[OrderResult], raw: str) -> dict | None:
    """The row of a segment with a request or parse error among its answers (request errors first), else None."""
    for status in ("request_error", "parse_error"):
        bad = [r for r in results if r.status == status]
        if bad:
            error = "; ".join(f"{r.order}: {r.error}" for r in bad)
            return _row(None, None, None, None, None, None, status, error, raw)
    return None


def score_probabilities(difference: float, tie_margin: float, scale: float) -> tuple[float, float, float]:
    """(p_a, p_b, p_tie) from a scorer's score difference d = score_a - score_b (Rao-Kupper ties).

    p_a = sigmoid((d - m) / s), p_b = sigmoid((-d - m) / s), p_tie = 1 - p_a - p_b, with m the tie margin and s
    the score scale. So a wins exactly when d > m (p_a > 1/2), b when d < -m, and inside the margin p_tie takes
    what neither side claims; with m = 0 there are no ties and p_a = sigmoid(d / s) (Bradley-Terry).
    """

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))

    p_a = sigmoid((difference - tie_margin) / scale)
    p_b = sigmoid((-difference - tie_margin) / scale)
    return p_a, p_b, max(0.0, 1.0 - p_a - p_b)


def aggregate_scores(a: OrderResult, b: OrderResult, tie_margin: float, scale: float, min_confidence: float) -> dict:
    """One labels row's judgement fields from a scorer's scores of the segment's two videos.

    Preference a when score_a - score_b > tie_margin, b when below -tie_margin, else tie; probabilities and the
    confidence (the chosen answer's probability) from score_probabilities; below min_confidence the answer (a tie
    too) becomes low_confidence, as for chat judges (answer_status). No order is involved, so order_agreement is null.
    """
    raw = f"a: {a.score} | b: {b.score}"
    failed = _failed([a, b], raw)
    if failed:
        return failed
    d = a.score - b.score
    p_a, p_b, p_tie = score_probabilities(d, tie_margin, scale)
    preference = "a" if d > tie_margin else "b" if d < -tie_margin else "tie"
    confidence = {"a": p_a, "b": p_b, "tie": p_tie}[preference]
    status = answer_status(confidence, min_confidence)
    return _row(preference if status == "ok" else "tie", p_a, p_b, p_tie, confidence, None, status, None, raw)


CLASSES = ("a", "b", "tie")


def temper(probs: list[float], temperature: float) -> list[float]:
    """Temperature scaling of a (p_a, p_b, p_tie) distribution: p^(1/T), renormalised. T > 1 softens an
    overconfident judge, T < 1 sharpens; T = 1 leaves it as it is; a zero stays zero."""
    powered = [max(p, 0.0) ** (1.0 / temperature) for p in probs]
    total = sum(powered)
    return [p / total for p in powered] if total > 0 else list(probs)


def calibrate_row(row: dict, temperature: float, min_confidence: float) -> dict:
    """A judge's labels row with its probabilities tempered (eval-labels --fit-calibration fits T on people's
    labels) and the confidence filter applied again: the answer it gave keeps its class, its confidence becomes the
    tempered probability of that class, and below min_confidence it is low_confidence (a tie), above it ok.
    Failed rows, rows without probabilities and T = 1 are left as they are."""
    probs = [row.get("p_a"), row.get("p_b"), row.get("p_tie")]
    answered = row.get("status") in ("ok", "low_confidence", "order_inconsistent")
    if temperature == 1.0 or not answered or any(p is None or p != p for p in probs):
        return row
    tempered = temper(probs, temperature)
    out = {**row, "p_a": tempered[0], "p_b": tempered[1], "p_tie": tempered[2]}
    if row["status"] == "order_inconsistent":  # the orders disagreed: a tie whatever its confidence
        return {**out, "confidence": max(tempered)}
    if row["status"] == "ok":
        answer = row["preference"]
    else:  # low_confidence: the answer is the class whose probability was its confidence
        answer = CLASSES[min(range(3), key=lambda k: abs(probs[k] - row["confidence"]))]
    confidence = tempered[CLASSES.index(answer)]
    status = answer_status(confidence, min_confidence)
    return {**out, "confidence": confidence, "status": status, "preference": answer if status == "ok" else "tie"}


JURY_RULES = ("mean", "majority")


def combine_judges(
    rows: dict[str, dict], rule: str, min_confidence: float, weights: dict[str, float] | None = None
) -> dict:
    """A jury's row from its judges' rows of one segment ({judge id: row}).

    - mean (default): the preference is the argmax of the judges' mean (p_a, p_b, p_tie), weighted by `weights`
      (a judges file's `jury_weight`, which eval-labels --fit-calibration fits on people's labels; default equal);
    - majority: the preference most judges gave (their filtered preference; equal top counts give tie).
    The confidence is the judges' agreement: the share of judges whose own preference is the jury's. Judges
    whose row failed are left out; when all failed, the row fails as the first did. Below min_confidence the
    jury's answer becomes low_confidence (a tie), by the rule of every judge (answer_status).
    """
    if rule not in JURY_RULES:
        raise ValueError(f"rule must be one of {JURY_RULES}, got {rule!r}")
    raw = " | ".join(f"{j}: {r['preference']}" for j, r in rows.items())
    voting = {j: r for j, r in rows.items() if r["status"] not in ("request_error", "parse_error")}
    if not voting:
        first = next(iter(rows.values()))
        return _row(None, None, None, None, None, None, first["status"], first["error"], raw)
    w = {j: (weights or {}).get(j, 1.0) if rule == "mean" else 1.0 for j in voting}  # majority: one judge, one vote
    total = sum(w.values())
    mean = {k: sum(w[j] * r[k] for j, r in voting.items()) / total for k in ("p_a", "p_b", "p_tie")}
    prefs = [r["preference"] for r in voting.values()]
    if rule == "mean":
        preference = max(("a", "b", "tie"), key=lambda p: (mean[f"p_{p}"], p == "tie"))
    else:
        counts = Counter(prefs).most_common()
        preference = counts[0][0] if len(counts) == 1 or counts[0][1] > counts[1][1] else "tie"
    agreement = sum(w[j] for j, r in voting.items() if r["preference"] == preference) / total
    status = answer_status(agreement, min_confidence)
    return _row(
        preference if status == "ok" else "tie",
        mean["p_a"],
        mean["p_b"],
        mean["p_tie"],
        agreement,
        None,
        status,
        None,
        raw,
    )


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
