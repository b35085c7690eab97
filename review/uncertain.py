"""Ask people where it counts: the segments a judge is least sure of, each with why it was chosen.

`review --order uncertain` and `label-studio export --order uncertain` put first, up to `--budget` segments:
1. segments the judge gave no answer for (a failed request or an unreadable reply);
2. segments whose two orders disagree (video a shown first vs video b shown first);
3. segments a jury's members split on;
then every other segment by the judge's confidence, lowest first. Within a rank the lower confidence comes first,
then the table's order. These are the segments where a person's label changes a training label most often and
where a calibration fit learns most.

Measuring a judge on them is another matter: they are the hard stratum, so their accuracy is not the judge's
(`eval-labels --label-budget` says how to sample for that, review/budget.py).
"""

from __future__ import annotations

import pandas as pd

from densedpo.errors import DenseDPOError

KEY = ["pair_id", "segment_idx"]
FAILED = ("request_error", "parse_error")
ORDER_CHOICES = ("least-confident", "uncertain", "random", "table")  # review's and label-studio export's --order


def check_budget(order: str, budget: int | None) -> None:
    """--budget counts the segments people are asked about: it goes with --order uncertain only."""
    if budget is None:
        return
    if order != "uncertain":
        raise DenseDPOError(f"--budget {budget} goes with --order uncertain (got --order {order}); drop one of them.")
    if budget < 1:
        raise DenseDPOError(f"--budget must be at least 1 segment, got {budget}.")


def _positions(answer, first: str) -> str | None:
    """An order's position answer as the pair's video (a/b/tie); None where that order gave none."""
    second = "b" if first == "a" else "a"
    return {"first": first, "second": second, "tie": "tie"}.get(answer) if isinstance(answer, str) else None


def _reasons(row: dict, members: list[dict]) -> tuple[int, list[str]]:
    """(rank: 0 flagged, 1 by confidence only; the reasons in words) of one segment's row."""
    reasons = []
    if row.get("status") in FAILED:
        reasons.append(f"the judge gave no answer ({row['status']})")
    ab, ba = _positions(row.get("answer_ab"), "a"), _positions(row.get("answer_ba"), "b")
    agreement = row.get("order_agreement")
    disagreed = agreement is not None and agreement == agreement and not bool(agreement)
    if disagreed or row.get("status") == "order_inconsistent":
        said = f" (a shown first: {ab}; b shown first: {ba})" if ab and ba else ""
        reasons.append("the two orders disagree" + said)
    votes = {str(m.get("judge")): m.get("preference") for m in members if m.get("status") not in FAILED}
    if len(set(votes.values())) > 1:
        reasons.append("the jury split (" + ", ".join(f"{j}: {p}" for j, p in votes.items()) + ")")
    conf = row.get("confidence")
    known = conf is not None and conf == conf
    reasons.append(f"judge's confidence {float(conf):.2f}" if known else "no confidence")
    return (0 if len(reasons) > 1 or not known else 1), reasons


def uncertain_segments(labels: pd.DataFrame) -> pd.DataFrame:
    """Every segment of a labels table (one judge's, or a jury's with its members) with `rank`, `confidence` and
    `reason`, in the order people should see them (module docstring). Columns: pair_id, segment_idx, rank,
    confidence, reason."""
    from review.page import main_judge_rows

    main, others = main_judge_rows(labels)
    members: dict[tuple, list[dict]] = {}
    if others is not None:
        for r in others.to_dict("records"):
            members.setdefault((r["pair_id"], int(r["segment_idx"])), []).append(r)
    rows = []
    for position, r in enumerate(main.to_dict("records")):
        r = {k: (None if v is pd.NA else v) for k, v in r.items()}
        rank, reasons = _reasons(r, members.get((r["pair_id"], int(r["segment_idx"])), []))
        conf = r.get("confidence")
        conf = float(conf) if conf is not None and conf == conf else -1.0
        rows.append((r["pair_id"], int(r["segment_idx"]), rank, conf, "; ".join(reasons), position))
    out = pd.DataFrame(rows, columns=[*KEY, "rank", "confidence", "reason", "position"])
    return out.sort_values(["rank", "confidence", "position"], kind="stable").drop(columns="position")


def uncertain_queue(labels: pd.DataFrame, budget: int | None) -> tuple[list[str], dict[tuple[str, int], str]]:
    """(pair ids in the order their first chosen segment comes, {(pair, segment): why it was chosen}) for the
    first `budget` segments (all when None)."""
    chosen = uncertain_segments(labels).head(budget)
    queue = list(dict.fromkeys(chosen["pair_id"].astype(str)))
    why = {(str(p), int(s)): reason for p, s, reason in chosen[[*KEY, "reason"]].itertuples(index=False)}
    return queue, why
