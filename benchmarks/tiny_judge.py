"""The tiny trained judge's figures through vLLM: in distribution, and on an artifact family it never saw.

Trains (or takes from the cache) the tiny judge of app/tiny_judge.py, renders held-out pairs of an unseen seed,
labels them with `densedpo label --model <judge>` (real vLLM, both orders, the judge folder's own request
layout, default --min-confidence) and measures them with `densedpo eval-labels` against the synthetic truth.
With --leave-out KIND it trains a judge whose training pairs never show KIND and labels pairs that show only KIND
(the transfer figure the issue asks for).

  python benchmarks/tiny_judge.py                        # the default recipe, 100 pairs of seed 42
  python benchmarks/tiny_judge.py --leave-out deform     # trained without swirls, measured on swirls only
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.tiny_judge import JudgeRecipe, cached_tiny_judge  # noqa: E402
from densedpo.synthetic import ARTIFACTS, make_synthetic_pairs  # noqa: E402

FIGURES = ("segment_accuracy", "coverage", "position_consistency", "first_position_rate", "cohen_kappa", "ece")


def measure(judge: Path, pairs: int, seed: int, kinds: tuple[str, ...], root: Path) -> dict:
    """Label fresh pairs with the judge through vLLM and return eval-labels' figures of it."""
    pairs_path, truth = make_synthetic_pairs(root, num_pairs=pairs, seed=seed, artifact_kinds=kinds)
    out = root / "labels.parquet"
    cli = [sys.executable, "-m", "app.cli"]
    run = subprocess.run([*cli, "label", "--pairs", pairs_path, "--out", out, "--model", judge, "--quiet"], cwd=REPO)
    if run.returncode:
        raise SystemExit(f"label failed ({run.returncode})")
    report = root / "report.json"
    subprocess.run(
        [*cli, "eval-labels", "--labels", out, "--reference", truth, "--json", report, "--bootstrap", "500"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (figures,) = json.loads(report.read_text())["references"][0]["judges"].values()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--leave-out", choices=ARTIFACTS)
    args = ap.parse_args()
    recipe = JudgeRecipe()
    kinds = ARTIFACTS
    if args.leave_out:
        recipe = replace(recipe, artifacts=tuple(k for k in ARTIFACTS if k != args.leave_out))
        kinds = (args.leave_out,)
    t0 = time.perf_counter()
    judge = cached_tiny_judge(recipe)
    trained = json.loads((judge / "training.json").read_text())
    with tempfile.TemporaryDirectory(prefix="densedpo-judge-bench-") as tmp:
        figures = measure(judge, args.pairs, args.seed, kinds, Path(tmp))
    print(
        f"judge {judge.name}: trained on {', '.join(recipe.artifacts)} ({trained['data_seconds']} s data, "
        f"{trained['train_seconds']} s training, held-out 3-way {trained['heldout_accuracy']:.3f}); "
        f"measured on {args.pairs} pairs of seed {args.seed} showing {', '.join(kinds)} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    for name in FIGURES:
        v = figures[name]
        print(f"{name:22s} {v['value']:.3f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]")
    print(f"{'segments_both_decided':22s} {figures['segments_both_decided']}")


if __name__ == "__main__":
    main()
