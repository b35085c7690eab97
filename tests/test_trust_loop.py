"""The trust loop end to end with a judge that sees the frames: label (real vLLM, both orders) -> eval-labels.

The tiny trained judge answers from the frames, so its two orders must agree and its decisions match the truth.
A bug that sent the same frames in both orders (or swapped them in only one), or frames of another segment,
breaks both: this is the suite's test that catches it. The bounds are the judge's must-hold figures (issue 19):
segment accuracy ≥ 0.85, coverage ≥ 0.6, position consistency ≥ 0.85 on pairs of an unseen seed.
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
    pairs, truth = make_synthetic_pairs(root, num_pairs=100, seed=42)  # a seed the judge never trained on
    out = root / "labels.parquet"
    r = run_cli("label", "--pairs", pairs, "--out", out, "--model", trained_judge, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    # no flags: the judge folder's own request layout (prompt, frames per second, video items), and `label` says so
    recipe = json.loads((trained_judge / "training.json").read_text())["recipe"]
    said = " ".join((r.stdout + r.stderr).split())
    assert f"--prompt {recipe['prompt']}" in said and f"--frames-as {recipe['frames_as']}" in said, said
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
    # the judge sees the frames: it decides most segments the truth decides, rightly, and the same in both orders
    # (a bug sending the same frames in both orders makes every pointed answer inconsistent: the judge is greedy)
    assert judge["segments_both_decided"] >= 100, judge["segments_both_decided"]
    assert judge["segment_accuracy"]["value"] >= 0.85, judge["segment_accuracy"]
    assert judge["coverage"]["value"] >= 0.6, judge["coverage"]
    assert judge["position_consistency"]["value"] >= 0.85, judge["position_consistency"]
    assert sorted(p.name for p in (root / "plots").iterdir())[0].endswith(".png")
    # the answers stored per order are the positions the judge chose: consistent rows name opposite positions
    consistent = labels[labels["order_agreement"].eq(True) & labels["answer_ab"].ne("tie")]
    flip = {"first": "second", "second": "first"}
    assert (consistent["answer_ba"] == consistent["answer_ab"].map(flip)).all()
