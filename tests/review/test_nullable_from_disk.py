"""Tables read from disk hold pandas' nullable dtypes (`boolean` for order_agreement): every figure of eval-labels
must be the same as on the rows written, for a scorer's and a jury's table (no per-order answers, agreement null).

The rows come from the labeler's own aggregation and writer (assemble_rows, write_table), go to disk, and reach
eval-labels through its CLI, as a user's would; the figures are worked out by hand from the same rows.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest

from densedpo.tables import LABELS, read_table, write_table
from labeler.config import LabelConfig
from labeler.judges import JudgeSpec, make_judge
from labeler.parse import OrderResult
from labeler.plan import PairPlan, request_id
from labeler.rows import assemble_rows
from labeler.segments import segment_bounds
from tests.conftest import run_cli

N_PAIRS, N_SEG = 12, 3


def scorer_tables(tmp_path):
    """Two scorers and their jury over 12 pairs x 3 segments; their scores drawn so that every confidence band of
    the coverage curve holds rows. Returns the labels path, the reference path and the rows as written."""
    from densedpo.video import VideoInfo

    rng = np.random.default_rng(7)
    info = VideoInfo(48, 16.0, 64, 64)
    plans = [
        PairPlan(i, f"p{i}", "a cat", tmp_path / "a.mp4", tmp_path / "b.mp4", info, segment_bounds(48, 16.0, 1.0))
        for i in range(N_PAIRS)
    ]
    judges = []
    for name in ("rm1", "rm2"):
        judge = make_judge(JudgeSpec(kind="score", model=f"/models/{name}", name=name, tie_margin=0.2, score_scale=0.5))
        judge.bind(f"/models/{name}")
        judges.append(judge)
    results = {}
    for p in plans:
        for s in p.segments:
            for judge in judges:
                for unit in ("a", "b"):
                    rid = request_id(p.pair_id, s.segment_idx, unit)
                    score = float(rng.normal(0, 1))
                    results[(judge.id, rid)] = OrderResult(rid, unit, "ok", score=score, judge=judge.id)
    cfg = LabelConfig(pairs=tmp_path / "pairs.parquet", out=tmp_path / "labels.parquet", min_confidence=0.5)
    rows = assemble_rows(plans, results, cfg, judges, rule="mean")
    write_table(rows, cfg.out, LABELS)
    truth = rows[rows["judge"] == "rm1"][["pair_id", "segment_idx", "frame_start", "frame_end", "t_start_s", "t_end_s"]]
    truth = truth.assign(
        preference=rng.choice(["a", "b", "tie"], size=len(truth), p=[0.45, 0.45, 0.1]),
        status="ok",
        judge_model="human",
        judge="human",
        annotator="me",
    ).reindex(columns=LABELS.names)
    write_table(truth, tmp_path / "human.parquet", LABELS)
    return cfg.out, tmp_path / "human.parquet", rows, truth


def hand_figures(rows: pd.DataFrame, truth: pd.DataFrame, threshold: float) -> tuple[float, float | None]:
    """(coverage, segment accuracy) at a --min-confidence, from plain Python over the written rows: the answer a
    row stands for is its preference when ok, else (low_confidence) the class whose probability is its confidence."""
    ref = {(r.pair_id, r.segment_idx): r.preference for r in truth.itertuples()}
    ref_decided = sum(v in ("a", "b") for v in ref.values())
    decided = agree = 0
    for r in rows.itertuples():
        if r.status == "ok":
            answer = r.preference
        else:
            probs = {"a": r.p_a, "b": r.p_b, "tie": r.p_tie}
            answer = min(probs, key=lambda k: abs(probs[k] - r.confidence))
        truth_pref = ref[(r.pair_id, r.segment_idx)]
        if answer in ("a", "b") and r.confidence >= threshold - 1e-12 and truth_pref in ("a", "b"):
            decided += 1
            agree += answer == truth_pref
    return decided / ref_decided, (agree / decided if decided else None)


def test_the_bool_column_is_nullable_boolean_on_disk(tmp_path):
    """The premise: read back, order_agreement is pandas' `boolean`, where NA != False is NA (the trap)."""
    path, _, rows, _ = scorer_tables(tmp_path)
    back = read_table(path, LABELS)
    assert str(back["order_agreement"].dtype) == "boolean" and back["order_agreement"].isna().all()
    assert back["order_agreement"].ne(False).isna().all()


@pytest.mark.parametrize("judge", ["rm1", "jury"])
def test_eval_labels_of_a_scorer_and_a_jury_table_read_from_disk(tmp_path, judge):
    from review.judge_report import ECE_BINS, THRESHOLDS

    labels, human, rows, truth = scorer_tables(tmp_path)
    mine = rows[rows["judge"] == judge].reset_index(drop=True)
    one = tmp_path / f"{judge}.parquet"
    write_table(mine, one, LABELS)  # one judge per table: eval-labels names it by its judge column
    report_path = tmp_path / "report.json"
    r = run_cli("eval-labels", "--labels", one, "--reference", human, "--json", report_path, "--bootstrap", "20")
    assert r.returncode == 0, r.stderr
    report = json.loads(report_path.read_text())["references"][0]["judges"][judge]
    curve = {c["threshold"]: c for c in report["coverage_curve"]}
    nonzero = 0
    for t in THRESHOLDS:
        coverage, accuracy = hand_figures(mine, truth, t)
        assert curve[t]["coverage"]["value"] == pytest.approx(coverage, abs=1e-6), t
        if accuracy is None:
            assert curve[t]["segment_accuracy"]["value"] is None
        else:
            assert curve[t]["segment_accuracy"]["value"] == pytest.approx(accuracy, abs=1e-6), t
        nonzero += coverage > 0
    assert nonzero >= 3  # the curve is not flat at 0 (today's bug: every point 0.0, accuracy none)
    # accuracy, kappa and ECE at the table's own filter, by hand
    ref = truth.set_index(["pair_id", "segment_idx"])["preference"]
    pref = mine.set_index(["pair_id", "segment_idx"])["preference"].where(
        mine.set_index(["pair_id", "segment_idx"])["status"].eq("ok"), "tie"
    )
    truth3 = ref.loc[pref.index]
    both = pref.isin(["a", "b"]) & truth3.isin(["a", "b"])
    assert report["segment_accuracy"]["value"] == pytest.approx((pref[both] == truth3[both]).mean(), abs=1e-6)
    classes = ["a", "b", "tie"]
    confusion = np.array([[((pref == i) & (truth3 == k)).sum() for k in classes] for i in classes], float)
    n = confusion.sum()
    p_o, p_e = np.trace(confusion) / n, (confusion.sum(1) * confusion.sum(0)).sum() / n**2
    assert report["cohen_kappa"]["value"] == pytest.approx((p_o - p_e) / (1 - p_e), abs=1e-6)
    conf = mine.set_index(["pair_id", "segment_idx"])["confidence"][both].clip(0, 1)
    correct = (pref[both] == truth3[both]).astype(float)
    bins = np.minimum((conf * ECE_BINS).astype(int), ECE_BINS - 1)
    ece = sum(abs(correct[bins == b].sum() - conf[bins == b].sum()) for b in range(ECE_BINS)) / both.sum()
    assert report["ece"]["value"] == pytest.approx(ece, abs=1e-6)
    assert not math.isnan(report["coverage"]["value"]) and report["coverage"]["value"] > 0
