"""Ask people where it counts: which segments come first and why (review/uncertain.py), and how fast their labels
pin down a judge's accuracy, uncertain-first vs random (review/budget.py, eval-labels --label-budget)."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from app.cli import app
from densedpo.errors import DenseDPOError
from densedpo.tables import LABELS, read_table, write_table
from review.budget import budget_report
from review.uncertain import uncertain_queue, uncertain_segments


def _row(pair, seg, pref, conf, status="ok", ab="first", ba="second", agree=True, judge=None):
    return {
        "pair_id": pair,
        "segment_idx": seg,
        "preference": pref,
        "confidence": conf,
        "status": status,
        "answer_ab": ab,
        "answer_ba": ba,
        "order_agreement": agree,
        "judge": judge,
    }


def test_no_answer_and_disagreeing_orders_come_first_then_the_least_confident_each_with_its_reason():
    labels = pd.DataFrame(
        [
            _row("p0", 0, "a", 0.95),
            _row("p0", 1, "a", 0.62),
            _row("p1", 0, None, None, status="request_error", ab=None, ba=None, agree=None),
            _row("p1", 1, "tie", 0.7, status="order_inconsistent", ab="first", ba="first", agree=False),
            _row("p2", 0, "b", 0.55, ab="second", ba="first"),
            _row("p2", 1, "a", 0.99),
        ]
    )
    order = uncertain_segments(labels)
    assert list(zip(order["pair_id"], order["segment_idx"])) == [
        ("p1", 0),  # no answer (no confidence sorts first among the flagged)
        ("p1", 1),  # the orders disagree
        ("p2", 0),  # then by confidence: 0.55, 0.62, 0.95, 0.99
        ("p0", 1),
        ("p0", 0),
        ("p2", 1),
    ]
    why = dict(zip(zip(order["pair_id"], order["segment_idx"]), order["reason"]))
    assert why[("p1", 0)] == "the judge gave no answer (request_error); no confidence"
    assert why[("p1", 1)] == "the two orders disagree (a shown first: a; b shown first: b); judge's confidence 0.70"
    assert why[("p2", 0)] == "judge's confidence 0.55"
    queue, asked = uncertain_queue(labels, budget=3)  # three segments: pairs p1, p2
    assert queue == ["p1", "p2"] and set(asked) == {("p1", 0), ("p1", 1), ("p2", 0)}


def test_a_jury_split_is_flagged_even_when_the_jury_is_sure():
    rows = []
    for seg, votes in ((0, ("a", "a", "a")), (1, ("a", "b", "a"))):
        for judge, pref in zip(("x", "y", "z"), votes):
            rows.append(_row("p0", seg, pref, 0.9, judge=judge))
        rows.append(_row("p0", seg, "a", 0.99 if seg == 1 else 0.6, judge="jury", ab=None, ba=None, agree=None))
    order = uncertain_segments(pd.DataFrame(rows))
    assert list(order["segment_idx"]) == [1, 0]
    assert order["reason"].iloc[0] == "the jury split (x: a, y: b, z: a); judge's confidence 0.99"


def test_review_queues_the_pairs_of_the_budget_and_says_why_blind_says_only_that(synthetic, tmp_path):
    from review.page import ReviewConfig, ReviewSession

    pairs, truth = synthetic
    judge = read_table(truth, LABELS).drop(columns=["artifact"])
    ids = list(dict.fromkeys(judge["pair_id"]))
    judge["confidence"] = [
        0.6 if (p, s) == (ids[2], 1) else 0.97 for p, s in zip(judge["pair_id"], judge["segment_idx"])
    ]
    judge.loc[(judge["pair_id"] == ids[1]) & (judge["segment_idx"] == 2), "status"] = "parse_error"
    labels = write_table(judge, tmp_path / "labels.parquet", LABELS)
    for blind in (False, True):
        cfg = ReviewConfig(
            pairs=pairs, labels=labels, human=tmp_path / "h.parquet", order="uncertain", budget=2, blind=blind
        )
        session = ReviewSession(cfg)
        assert session.queue == [ids[1], ids[2]] and session.session()["asked_segments"] == 2
        reasons = {s["segment_idx"]: s.get("asked_because") for s in session.pair(0)["segments"]}
        if blind:  # not the judge's answers behind the choice
            assert reasons == {0: None, 1: None, 2: "chosen for review"}
        else:
            assert reasons == {0: None, 1: None, 2: "the judge gave no answer (parse_error); judge's confidence 0.97"}
    with pytest.raises(DenseDPOError, match="--budget 5 goes with --order uncertain"):
        ReviewSession(ReviewConfig(pairs=pairs, labels=labels, order="random", budget=5))
    with pytest.raises(DenseDPOError, match="--order uncertain needs --labels"):
        ReviewSession(ReviewConfig(pairs=pairs, order="uncertain"))


def test_a_label_studio_task_says_why_each_chosen_segment_is_asked(tmp_path):
    from review.label_studio import ExportConfig, build_task

    row = {"pair_id": "p0", "prompt": "a cat", "video_a": "a.mp4", "video_b": "b.mp4"}
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / name).write_bytes(b"")
    segs = [
        {"segment_idx": k, "frame_start": 16 * k, "frame_end": 16 * k + 16, "t_start_s": k, "t_end_s": k + 1.0}
        | {"status": "ok", "preference": "a", "confidence": 0.9}
        for k in range(2)
    ]
    asked = {("p0", 1): "judge's confidence 0.51"}
    for blind, note in ((False, " · asked: judge's confidence 0.51"), (True, " · asked: chosen for review")):
        cfg = ExportConfig(tmp_path / "pairs.parquet", "http://ls", "p", tmp_path, order="uncertain", blind=blind)
        data = build_task(cfg, row, segs, 2, asked=asked)["data"]
        assert data["seg_1"].endswith(note) and "asked" not in data["seg_0"]


# ---------------------------------------------------------------------------------------------- the budget


def calibrated_pool(n_pairs: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A judge that is right with the probability it states, mostly sure (as a good judge is): its labels and the
    truth, 3 segments per pair, every segment decided on both sides."""
    rng = np.random.default_rng(seed)
    n = 3 * n_pairs
    conf = 1 - rng.beta(0.5, 6, n) * 0.5
    truth = rng.choice(["a", "b"], n)
    right = rng.random(n) < conf
    judged = np.where(right, truth, np.where(truth == "a", "b", "a"))
    key = {"pair_id": [f"p{i // 3}" for i in range(n)], "segment_idx": [i % 3 for i in range(n)]}
    labels = pd.DataFrame({**key, "preference": judged, "confidence": conf, "status": "ok"})
    return labels, pd.DataFrame({**key, "preference": truth, "status": "ok"})


def test_uncertain_first_weighted_back_needs_fewer_labels_and_stays_unbiased_where_confidence_predicts_errors():
    labels, truth = calibrated_pool(200, seed=1)
    b = budget_report(labels, truth, budget=300, width=0.1)
    reach = b["labels_to_width"]
    print(f"labels until a 95% range of 0.1: random {reach['random']}, uncertain-first {reach['uncertain']}")
    assert reach["uncertain"] < reach["random"]
    last = b["curve"][-1]
    assert last["labels"] == 300 and last["uncertain_width"] < last["random_width"]
    assert abs(last["uncertain_bias"]) < 0.01 and abs(last["random_bias"]) < 0.01  # the pool's accuracy, both
    # the least sure segments averaged unweighted measure the hard stratum, far below the judge's accuracy
    at_47 = next(c for c in b["curve"] if c["labels"] == 47)
    assert at_47["top_n_unweighted"] < b["pool_accuracy"] - 0.15


def test_eval_labels_reports_the_budget_curve(tmp_path):
    labels, truth = calibrated_pool(40, seed=2)
    segment = {"frame_start": 0, "frame_end": 16, "t_start_s": 0.0, "t_end_s": 1.0}
    columns = [c for c in LABELS.names if c not in ("annotator", "judge")]
    lpath, tpath = tmp_path / "j.parquet", tmp_path / "t.parquet"
    write_table(labels.assign(**segment, judge_model="x").reindex(columns=columns), lpath, LABELS)
    write_table(truth.assign(**segment, judge_model="t").reindex(columns=columns), tpath, LABELS)
    out = tmp_path / "report.json"
    args = ["eval-labels", "--labels", str(lpath), "--reference", str(tpath), "--bootstrap", "20"]
    r = CliRunner().invoke(app, [*args, "--label-budget", "60", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "labels until the accuracy's 95% range is at most 0.1 wide" in " ".join(r.output.split())
    (figures,) = json.loads(out.read_text())["references"][0]["judges"].values()
    b = figures["label_budget"]
    assert b["pool_segments"] == 120 and b["curve"][-1]["labels"] == 60
    assert b["pool_accuracy"] == pytest.approx(figures["segment_accuracy"]["value"], abs=1e-3)
    r = CliRunner().invoke(app, [*args, "--label-budget", "0"])
    assert isinstance(r.exception, DenseDPOError) and "--label-budget must be at least 1" in str(r.exception)
