"""The trust loop end to end with a judge that sees the frames: label (real vLLM, both orders) -> eval-labels.

The tiny trained judge answers from the frames, so its two orders must agree. A bug that sent the same frames
in both orders (or swapped them in only one) turns agreement into disagreement: this is the suite's test that
catches it. Thresholds sit well under what the judge reaches (docs/benchmarks.md) and well over chance.
"""

from __future__ import annotations

import json

import pytest

from densedpo.synthetic import make_synthetic_pairs
from densedpo.tables import LABELS, read_table
from tests.conftest import require_module, run_cli

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def labeled(trained_judge, tmp_path_factory):
    require_module("vllm", "vllm", "bash scripts/setup.sh")
    root = tmp_path_factory.mktemp("trust")
    pairs, truth = make_synthetic_pairs(root, num_pairs=16, seed=42)  # a seed the judge never trained on
    recipe = json.loads((trained_judge / "training.json").read_text())["recipe"]
    out = root / "labels.parquet"
    r = run_cli(
        "label",
        "--pairs",
        pairs,
        "--out",
        out,
        "--model",
        trained_judge,
        "--sample-fps",
        recipe["sample_fps"],
        "--min-confidence",
        "0",
        "--quiet",
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return root, pairs, truth, out


def test_a_judge_that_sees_the_frames_agrees_across_orders(labeled):
    root, pairs, truth, out = labeled
    labels = read_table(out, LABELS)
    assert labels["answer_ab"].notna().all() and labels["answer_ba"].notna().all()
    report_path = root / "report.json"
    r = run_cli(
        "eval-labels",
        "--labels",
        out,
        "--reference",
        truth,
        "--pairs",
        pairs,
        "--json",
        report_path,
        "--plots",
        root / "plots",
        "--bootstrap",
        "200",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(report_path.read_text())
    (judge,) = report["references"][0]["judges"].values()
    for name in (
        "segment_accuracy",
        "segment_accuracy_ties_wrong",
        "coverage",
        "cohen_kappa",
        "clip_accuracy",
        "ece",
        "position_consistency",
        "first_position_rate",
    ):
        assert set(judge[name]) == {"value", "ci95"}, name
    assert len(judge["coverage_curve"]) == 10 and set(judge["motion_bias"]) == {
        "judge_prefers_less_motion",
        "reference_prefers_less_motion",
    }
    # the judge sees the frames. Where it answers first/second, its two orders often name opposite positions (a bug
    # sending the same frames in both orders makes that share exactly 0: the judge is greedy, the requests equal),
    # and what it decides agrees with the truth. Measured across trainings of this judge: 8 of 13 and 7 of 20 such
    # rows consistent (docs/benchmarks.md); the bound sits under both and far above a frame bug's 0.
    pointed = labels[labels["answer_ab"].ne("tie") | labels["answer_ba"].ne("tie")]
    flips = pointed["answer_ba"].eq(pointed["answer_ab"].map({"first": "second", "second": "first"}))
    assert len(pointed) >= 6 and flips.mean() >= 0.25, pointed[["answer_ab", "answer_ba"]]
    assert judge["position_consistency"]["value"] >= 0.5, judge["position_consistency"]
    assert judge["segments_both_decided"] >= 3 and judge["segment_accuracy"]["value"] >= 0.6, judge["segment_accuracy"]
    assert sorted(p.name for p in (root / "plots").iterdir())[0].endswith(".png")
    # the answers stored per order are the positions the judge chose: consistent rows name opposite positions
    consistent = labels[labels["order_agreement"].eq(True) & labels["answer_ab"].ne("tie")]
    flip = {"first": "second", "second": "first"}
    assert (consistent["answer_ba"] == consistent["answer_ab"].map(flip)).all()
