"""How many human labels pin down a judge's accuracy: uncertain-first (weighted back) vs random, on one pool.

Two pools, each with its reference labels standing in for people:
1. the tiny trained judge through real vLLM (`densedpo label`) on fresh synthetic pairs of an unseen seed, against
   their synthetic truth — a judge whose errors are mostly confident;
2. a simulated judge that is right with the probability it states (calibrated, mostly sure), 600 segments.
For each, `densedpo eval-labels --label-budget` simulates 400 labeling sessions per design (review/budget.py) and
reports the labels needed until the accuracy estimate's 95% range is at most --width wide.

  python benchmarks/label_budget.py                 # 200 pairs of seed 42, width 0.1
  python benchmarks/label_budget.py --pairs 100 --width 0.15
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.tiny_judge import JudgeRecipe, cached_tiny_judge  # noqa: E402
from densedpo.synthetic import make_synthetic_pairs  # noqa: E402
from densedpo.tables import LABELS, write_table  # noqa: E402

CLI = [sys.executable, "-m", "app.cli"]


def budget_of(labels: Path, reference: Path, budget: int, width: float, root: Path) -> dict:
    report = root / f"{labels.stem}-report.json"
    args = ["eval-labels", "--labels", labels, "--reference", reference, "--json", report, "--bootstrap", "200"]
    subprocess.run([*CLI, *args, "--label-budget", str(budget), "--budget-width", str(width)], cwd=REPO, check=True,
                   capture_output=True)  # fmt: skip
    (figures,) = json.loads(report.read_text())["references"][0]["judges"].values()
    return figures["label_budget"]


def simulated_pool(root: Path) -> tuple[Path, Path]:
    """The calibrated simulated judge of tests/review/test_uncertain.py (200 pairs × 3 segments, seed 1)."""
    from tests.review.test_uncertain import calibrated_pool

    labels, truth = calibrated_pool(200, seed=1)
    segment = {"frame_start": 0, "frame_end": 16, "t_start_s": 0.0, "t_end_s": 1.0}
    columns = [c for c in LABELS.names if c not in ("annotator", "judge")]
    paths = root / "simulated.parquet", root / "simulated-truth.parquet"
    write_table(labels.assign(**segment, judge_model="simulated").reindex(columns=columns), paths[0], LABELS)
    write_table(truth.assign(**segment, judge_model="truth").reindex(columns=columns), paths[1], LABELS)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--width", type=float, default=0.1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        judge = cached_tiny_judge(JudgeRecipe())
        pairs, truth = make_synthetic_pairs(root / "pool", num_pairs=args.pairs, seed=args.seed)
        labels = root / "tiny-judge.parquet"
        subprocess.run([*CLI, "label", "--pairs", pairs, "--out", labels, "--model", judge, "--quiet"], cwd=REPO,
                       check=True)  # fmt: skip
        rows = {"tiny judge (vLLM)": budget_of(labels, truth, args.budget, args.width, root)}
        rows["simulated calibrated judge"] = budget_of(*simulated_pool(root), args.budget, args.width, root)
    print(f"| pool | decided segments | accuracy | labels to a 95% range ≤ {args.width:g}: random | uncertain-first |")
    print("|---|---|---|---|---|")
    for name, b in rows.items():
        reach = {k: v or f"> {args.budget}" for k, v in b["labels_to_width"].items()}
        pool = f"{b['pool_segments']} | {b['pool_accuracy']:.3f}"
        print(f"| {name} | {pool} | {reach['random']} | {reach['uncertain']} |")
    for name, b in rows.items():
        print(f"\n{name}: labels | random width | uncertain width | uncertain bias | top n unweighted")
        for c in b["curve"]:
            print(
                f"  {c['labels']} | {c['random_width']} | {c['uncertain_width']} | {c['uncertain_bias']} | "
                f"{c['top_n_unweighted']}"
            )


if __name__ == "__main__":
    main()
