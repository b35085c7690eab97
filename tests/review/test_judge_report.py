"""eval-labels figures on hand-made tables whose every figure can be worked out on paper."""

import math

import numpy as np
import pandas as pd
import pytest

from review.judge_report import (
    THRESHOLDS,
    agreed_answer,
    human_ceiling,
    judge_report,
    kappa,
    krippendorff_alpha,
    reference_consensus,
    segment_motion,
)


def table(prefs, statuses=None, pairs=None, conf=None, answers=None):
    n = len(prefs)
    df = pd.DataFrame(
        {
            "pair_id": pairs or ["p"] * n,
            "segment_idx": list(range(n)),
            "preference": prefs,
            "status": statuses or ["ok"] * n,
            "confidence": conf or [0.9] * n,
            "order_agreement": [s != "order_inconsistent" for s in (statuses or ["ok"] * n)],
            "p_a": np.nan,
            "p_b": np.nan,
            "p_tie": np.nan,
            "raw_response": None,
        }
    )
    if answers:
        df["answer_ab"], df["answer_ba"] = [a for a, _ in answers], [b for _, b in answers]
    return df


def value(report, name):
    return report[name]["value"]


def test_paper_accuracy_ties_wrong_coverage_and_clips():
    ref = table(["a", "b", "a", "tie", "b"], pairs=["p", "p", "p", "q", "q"])
    ours = table(["a", "a", "a", "a", "b"], ["ok", "ok", "ok", "ok", "order_inconsistent"], ["p", "p", "p", "q", "q"])
    r = judge_report(ours, ref, n_boot=200)
    # decided on both sides: segments 0, 1, 2 (3 is a reference tie, 4 is not ok here) -> 2 of 3 right
    assert r["segments_both_decided"] == 3 and value(r, "segment_accuracy") == pytest.approx(2 / 3, abs=1e-6)
    # reference decides 4 segments; the judge decided 3 of them, 2 the same way
    assert value(r, "coverage") == pytest.approx(3 / 4) and value(r, "segment_accuracy_ties_wrong") == 0.5
    # clips: p -> ours a (3 votes) vs ref a (2 a, 1 b): right; q -> ours a vs ref b: wrong
    assert value(r, "clip_accuracy") == 0.5
    # kappa over 5 segments, 3 classes: ours (a a a a tie) vs ref (a b a tie b)
    confusion = np.zeros((3, 3))
    for o, f in zip("aaaat", "abatb"):
        confusion["abt".index(o), "abt".index(f)] += 1
    p_o = np.trace(confusion) / 5
    p_e = (confusion.sum(1) * confusion.sum(0)).sum() / 25
    assert value(r, "cohen_kappa") == pytest.approx((p_o - p_e) / (1 - p_e), abs=1e-6)
    lo, hi = r["segment_accuracy"]["ci95"]
    assert 0 <= lo <= hi <= 1


def test_nothing_decided_gives_none_not_a_crash():
    r = judge_report(table(["tie"]), table(["a"]), n_boot=50)
    assert r["segments_both_decided"] == 0 and value(r, "segment_accuracy") is None
    assert value(r, "coverage") == 0.0


def test_ece_by_hand():
    # 4 segments decided on both sides: confidences 0.95, 0.95 (one right, one wrong) and 0.62, 0.68 (both right)
    ref = table(["a", "a", "b", "b"])
    ours = table(["a", "b", "b", "b"], conf=[0.95, 0.95, 0.62, 0.68])
    r = judge_report(ours, ref, n_boot=50)
    expected = (2 / 4) * abs(0.5 - 0.95) + (2 / 4) * abs(1.0 - 0.65)
    assert value(r, "ece") == pytest.approx(expected, abs=1e-6)
    bins = {round(b["bin"][0], 1): b for b in r["reliability"] if b["segments"]}
    assert bins[0.9]["segments"] == 2 and bins[0.9]["accuracy"] == 0.5 and bins[0.6]["mean_confidence"] == 0.65


def test_coverage_curve_reapplies_the_filter_to_low_confidence_rows():
    ref = table(["a", "b", "a", "b"])
    # both orders agreed on every row; two were filtered at label time (min_confidence 0.8)
    ours = table(
        ["a", "tie", "tie", "b"],
        ["ok", "low_confidence", "low_confidence", "ok"],
        conf=[0.9, 0.7, 0.6, 0.85],
        answers=[("first", "second"), ("second", "first"), ("second", "first"), ("second", "first")],
    )
    assert list(agreed_answer(ours)) == ["a", "b", "b", "b"]
    r = judge_report(ours, ref, n_boot=50, target_accuracy=0.99)
    curve = {c["threshold"]: c for c in r["coverage_curve"]}
    assert [c["threshold"] for c in r["coverage_curve"]] == list(THRESHOLDS)
    # at 0.50 all four are decided: a right, b right, b wrong (truth a), b right -> 3/4
    assert curve[0.5]["coverage"]["value"] == 1.0 and curve[0.5]["segment_accuracy"]["value"] == 0.75
    # at 0.65 the 0.6 row (the wrong one) drops out: 3 decided, all right
    assert curve[0.65]["coverage"]["value"] == 0.75 and curve[0.65]["segment_accuracy"]["value"] == 1.0
    assert curve[0.9]["coverage"]["value"] == 0.25
    assert curve[0.95]["coverage"]["value"] == 0.0 and curve[0.95]["segment_accuracy"]["value"] is None
    assert r["min_confidence_for_target"] == 0.65


def test_position_bias_from_per_order_answers_and_from_v1_raw_responses():
    answers = [("first", "first"), ("first", "second"), ("tie", "tie"), ("first", "first")]
    ours = table(["tie", "a", "tie", "tie"], ["order_inconsistent", "ok", "ok", "order_inconsistent"], answers=answers)
    r = judge_report(ours, table(["a", "a", "b", "b"]), n_boot=50)
    assert value(r, "position_consistency") == 0.5  # rows 1 and 2 agree
    assert value(r, "first_position_rate") == pytest.approx(5 / 6)  # 6 non-tie answers, 5 'first'
    v1 = ours.drop(columns=["answer_ab", "answer_ba"])
    v1["raw_response"] = [f"ab: {a} | ba: {b}" for a, b in answers]
    r1 = judge_report(v1, table(["a", "a", "b", "b"]), n_boot=50)
    assert value(r1, "first_position_rate") == pytest.approx(5 / 6) and value(r1, "position_consistency") == 0.5


def test_bootstrap_interval_is_over_pairs():
    pairs = [f"p{i // 2}" for i in range(40)]
    ref = table(["a"] * 40, pairs=pairs)
    ours = table(["a"] * 30 + ["b"] * 10, pairs=pairs)
    r = judge_report(ours, ref, n_boot=500)
    lo, hi = r["segment_accuracy"]["ci95"]
    assert lo < 0.75 < hi and hi - lo > 0.1
    same = judge_report(ref, ref, n_boot=100)["segment_accuracy"]
    assert same["value"] == 1.0 and same["ci95"] == [1.0, 1.0]


def test_human_ceiling_and_consensus():
    rows = []
    for ann, prefs in (("ann1", "aabbt"), ("ann2", "aabtt"), ("ann3", "abbbt")):
        for i, p in enumerate(prefs):
            rows.append(
                {
                    "pair_id": "p",
                    "segment_idx": i,
                    "preference": {"t": "tie"}.get(p, p),
                    "status": "ok",
                    "annotator": ann,
                }
            )
    ref = pd.DataFrame(rows)
    consensus = reference_consensus(ref).sort_values("segment_idx")
    assert list(consensus["preference"]) == ["a", "a", "b", "b", "tie"]
    ceiling = human_ceiling(ref, n_boot=50)
    # per segment, agreeing annotator pairs of 3: 3, 1, 3, 1, 3 -> 11 of 15
    assert ceiling["pairwise_agreement"]["value"] == pytest.approx(11 / 15)
    assert ceiling["annotators"] == ["ann1", "ann2", "ann3"] and "cohen_kappa" not in ceiling
    two = human_ceiling(ref[ref["annotator"] != "ann3"], n_boot=50)
    assert two["cohen_kappa"]["value"] == pytest.approx(float(kappa(np.array([[2, 0, 0], [0, 1, 1], [0, 0, 1.0]]))))


def test_krippendorff_alpha_by_hand():
    # two coders, four units: (a,a) (a,b) (b,b) (b,b) -> coincidences o_aa 2, o_ab = o_ba 1, o_bb 4; n_a 3, n_b 5.
    # alpha = 1 - (n - 1) * sum_off(o) / sum_off(n_c n_k) = 1 - 7 * 2 / 30
    rows = [
        {"pair_id": "p", "segment_idx": u, "preference": v, "status": "ok", "annotator": ann}
        for u, pair in enumerate([("a", "a"), ("a", "b"), ("b", "b"), ("b", "b")])
        for ann, v in zip(("x", "y"), pair)
    ]
    ceiling = human_ceiling(pd.DataFrame(rows), n_boot=20)
    assert ceiling["krippendorff_alpha"]["value"] == pytest.approx(1 - 14 / 30, abs=1e-6)
    assert float(krippendorff_alpha(np.diag([4.0, 4.0, 2.0]))) == 1.0
    assert math.isnan(float(krippendorff_alpha(np.zeros((3, 3)))))


def test_motion_of_a_frozen_segment_is_lower(tmp_path):
    from densedpo.synthetic import make_synthetic_pairs
    from densedpo.tables import LABELS, read_table

    pairs, truth = make_synthetic_pairs(tmp_path, num_pairs=6, seed=3)
    t = read_table(truth, LABELS)
    motion = segment_motion(pairs, t)
    frozen = t[t["artifact"] == "freeze"].merge(motion, on=["pair_id", "segment_idx"])
    assert len(frozen) > 0
    # the artifact is in the video that is not preferred: it moves less
    for r in frozen.itertuples():
        still, moving = (r.motion_b, r.motion_a) if r.preference == "a" else (r.motion_a, r.motion_b)
        assert still < moving
    # a judge that always prefers the video that moves less scores 1, one that prefers the other 0
    m = t.merge(motion, on=["pair_id", "segment_idx"])
    slower = np.where(m["motion_a"] < m["motion_b"], "a", "b")
    still_lover = m.assign(preference=np.where(m["preference"].isin(["a", "b"]), slower, m["preference"]))[t.columns]
    mover = still_lover.assign(preference=still_lover["preference"].map({"a": "b", "b": "a", "tie": "tie"}))
    r_still = judge_report(still_lover, t, motion=motion, n_boot=50)["motion_bias"]
    r_mover = judge_report(mover, t, motion=motion, n_boot=50)["motion_bias"]
    assert r_still["judge_prefers_less_motion"]["value"] == 1.0 and r_mover["judge_prefers_less_motion"]["value"] == 0.0
    assert r_still["reference_prefers_less_motion"] == r_mover["reference_prefers_less_motion"]  # the truth's own


def scorer_table(rows):
    """A scorer's rows: (preference, status, confidence, p_a, p_b, p_tie); no per-order answers, no order agreement."""
    df = pd.DataFrame(rows, columns=["preference", "status", "confidence", "p_a", "p_b", "p_tie"])
    n = len(df)
    ids = [f"p{i}" for i in range(n)]
    empty = dict(order_agreement=None, raw_response=None, answer_ab=None, answer_ba=None)
    return df.assign(pair_id=ids, segment_idx=0, **empty)


def test_coverage_curve_of_a_scorer_table_by_hand():
    """Scorers and juries have no per-order answers: the curve comes from their preference and probabilities."""
    ours = scorer_table(
        [
            ("a", "ok", 0.9, 0.9, 0.05, 0.05),  # a at 0.9: right
            ("b", "ok", 0.7, 0.2, 0.7, 0.1),  # b at 0.7: wrong (truth a)
            ("tie", "low_confidence", 0.55, 0.55, 0.3, 0.15),  # a at 0.55, filtered at label time: right
            ("tie", "ok", 0.8, 0.1, 0.1, 0.8),  # tie: never decided
        ]
    )
    ref = table(["a", "a", "a", "a"], pairs=["p0", "p1", "p2", "p3"]).assign(segment_idx=0)
    assert list(agreed_answer(ours)) == ["a", "b", "a", "tie"]
    r = judge_report(ours, ref, n_boot=20, target_accuracy=0.99)
    curve = {c["threshold"]: c for c in r["coverage_curve"]}
    # 0.50: rows 0, 1, 2 decided (3 of 4), 2 of 3 right; 0.60: rows 0, 1 (1 of 2 right); 0.75: row 0 alone
    assert curve[0.5]["coverage"]["value"] == 0.75 and curve[0.5]["segment_accuracy"]["value"] == pytest.approx(2 / 3)
    assert curve[0.6]["coverage"]["value"] == 0.5 and curve[0.6]["segment_accuracy"]["value"] == 0.5
    assert curve[0.75]["coverage"]["value"] == 0.25 and curve[0.75]["segment_accuracy"]["value"] == 1.0
    assert curve[0.95]["coverage"]["value"] == 0.0
    assert r["min_confidence_for_target"] == 0.75


def jury_reference(tmp_path):
    from densedpo.tables import LABELS, write_table

    rows = []
    for judge, prefs in (("x", "aab"), ("y", "abb"), ("jury", "abb")):
        for k, pref in enumerate(prefs):
            segment = {"frame_start": 16 * k, "frame_end": 16 * k + 16, "t_start_s": float(k), "t_end_s": k + 1.0}
            answer = {"preference": pref, "status": "ok", "confidence": 0.9, "p_a": None, "p_b": None, "p_tie": None}
            empty = {"order_agreement": None, "error": None, "raw_response": None, "prompt_name": None}
            ids = {"judge": judge, "judge_model": judge, "prompt_sha256": None}
            rows.append({"pair_id": "p", "segment_idx": k, **segment, **answer, **empty, **ids})
    path = tmp_path / "ref.parquet"
    write_table(pd.DataFrame(rows), path, LABELS)
    return path, rows


def test_a_jury_reference_counts_one_judge(tmp_path):
    """A reference holding several judges is not a table of annotators: its jury, or --reference-judge, or an error."""
    from densedpo.errors import DenseDPOError
    from densedpo.tables import LABELS, write_table
    from review.judge_report import evaluate_judges

    ref_path, rows = jury_reference(tmp_path)
    ours = pd.DataFrame([{**r, "judge": "mine", "judge_model": "mine"} for r in rows if r["judge"] == "x"])
    write_table(ours, tmp_path / "ours.parquet", LABELS)  # a a b
    report = evaluate_judges([tmp_path / "ours.parquet"], [ref_path], n_boot=20)
    figures = report["references"][0]["judges"]["mine"]
    assert report["references"][0]["reference_segments"] == 3  # not 9: one label per segment
    assert figures["segment_accuracy"]["value"] == pytest.approx(2 / 3)  # a a b vs the jury's a b b
    by_x = evaluate_judges([tmp_path / "ours.parquet"], [ref_path], n_boot=20, reference_judge="x")
    assert by_x["references"][0]["judges"]["mine"]["segment_accuracy"]["value"] == 1.0
    no_jury = pd.DataFrame([r for r in rows if r["judge"] != "jury"])
    write_table(no_jury, tmp_path / "two.parquet", LABELS)
    with pytest.raises(DenseDPOError, match=r"several judges \(x, y\); pick one with --reference-judge=NAME"):
        evaluate_judges([tmp_path / "ours.parquet"], [tmp_path / "two.parquet"], n_boot=20)


def test_fit_tie_margin_reports_a_held_out_figure():
    from review.judge_report import fit_tie_margin, margin_agreement

    rng = np.random.default_rng(0)
    n = 60
    d = rng.normal(0, 1, n)
    truth = np.where(d > 0.5, "a", np.where(d < -0.5, "b", "tie"))
    noisy = truth.copy()
    flip = rng.random(n) < 0.2
    noisy[flip] = rng.choice(["a", "b", "tie"], flip.sum())
    labels = pd.DataFrame({"pair_id": [f"p{i}" for i in range(n)], "segment_idx": 0, "score_a": d, "score_b": 0.0})
    ref = labels[["pair_id", "segment_idx"]].assign(preference=noisy)
    fit = fit_tie_margin(labels, ref)
    assert fit["agreement"] == pytest.approx(margin_agreement(d, noisy, fit["value"]))
    # the fitted figure is optimistic (chosen on the same data); the held-out one is at most it, and not trivial
    assert 0.5 < fit["heldout_agreement"] <= fit["agreement"]


def test_plots_keep_long_titles_inside_and_say_when_nothing_is_decided():
    """A long judge id wraps instead of running off the figure; a judge that decided nothing gets "no decided
    segments" and no "ECE nan"; intervals print at one precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from densedpo.stats import with_interval
    from review.judge_report import coverage_figure, reliability_figure

    name = "chat:tiny-judge-5c5f68bbbc3e:segment_preference_tiny_judge_v1@9b582f1e:samples5:video"
    for report in (judge_report(table(["tie"]), table(["a"]), n_boot=20), judge_report(table(["a"]), table(["a"]))):
        for fig in (reliability_figure(report, name), coverage_figure(report, name)):
            fig.canvas.draw()
            box, title = fig.bbox, fig.axes[0].title.get_window_extent()
            assert box.x0 <= title.x0 and title.x1 <= box.x1 and title.y1 <= box.y1, (title, box)
            assert "nan" not in fig.axes[0].get_title()
            plt.close(fig)
    undecided = reliability_figure(judge_report(table(["tie"]), table(["a"]), n_boot=20), name)
    assert [t.get_text() for t in undecided.axes[0].texts] == ["no decided segments"]
    assert undecided.axes[0].get_title().endswith("ECE –")
    assert with_interval(0.5, 0.3333, 0.66667) == "0.500 [0.333, 0.667]"
    assert with_interval(-0.1, -0.25, 0.05, signed=True) == "-0.100 [-0.250, +0.050]"
    assert with_interval(None) == with_interval(float("nan")) == "–"


def test_the_lowest_threshold_whose_interval_reaches_the_target():
    """--target-accuracy by the interval's lower bound: never below the point threshold, with its coverage."""
    rng = np.random.default_rng(0)
    n = 300
    conf = rng.choice([0.55, 0.75, 0.95], size=n)
    right = rng.random(n) < np.where(conf > 0.9, 1.0, np.where(conf > 0.7, 0.85, 0.5))
    truth = ["a"] * n
    prefs = ["a" if r else "b" for r in right]
    ours = table(prefs, pairs=[f"p{i}" for i in range(n)], conf=list(conf)).assign(segment_idx=0)
    ref = table(truth, pairs=[f"p{i}" for i in range(n)]).assign(segment_idx=0)
    r = judge_report(ours, ref, n_boot=200, target_accuracy=0.9)
    sure = r["min_confidence_for_target_lower_bound"]
    curve = {c["threshold"]: c for c in r["coverage_curve"]}
    assert sure is not None and sure["threshold"] >= r["min_confidence_for_target"]
    assert curve[sure["threshold"]]["segment_accuracy"]["ci95"][0] >= 0.9
    assert sure["coverage"] == curve[sure["threshold"]]["coverage"]["value"]
    lower = [t for t in THRESHOLDS if t < sure["threshold"]]
    assert all((curve[t]["segment_accuracy"]["ci95"][0] or 0) < 0.9 for t in lower)
