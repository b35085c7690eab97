"""`densedpo evaluate` end to end through the real vLLM server: identity, a difference the judge can see, the
motion-bias probe, and the eval pairs table in `review` and `eval-labels`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from densedpo.synthetic import make_synthetic_pairs
from densedpo.video import read_frames
from tests.conftest import run_cli
from tests.evaluation.helpers import sample_folder

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def random_lora(model, out):
    """A LoRA whose delta is not zero (A and B drawn at random), saved in train's diffusers format."""
    import torch
    from diffusers import AutoModel
    from peft import LoraConfig

    from dpo.train import LORA_TARGETS, _save_lora

    torch.manual_seed(0)
    transformer = AutoModel.from_pretrained(str(model), subfolder="transformer")
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=64, init_lora_weights=False, target_modules=LORA_TARGETS))
    out.mkdir(parents=True)
    _save_lora(transformer, str(model), out)
    return out


def test_a_zero_lora_is_a_tie_everywhere_and_resampling_asks_again(vllm_server, tmp_path):
    """sample base and a zero LoRA with the tiny random Wan, evaluate with a real judge: every segment a tie (the
    two videos are byte-identical, so both orders send the same request), net win 0 with interval [0, 0], no motion
    difference. Then resample the policy folder from another LoRA and run the same command: the judge is asked
    again for every segment (before, pair ids ignored the videos and the journal's old answers were reused)."""
    import shutil

    from densedpo.tiny import make_tiny_wan
    from tests.generation.test_sample import SMALL, run, zero_lora
    from tests.labeler.test_vllm_integration import vllm_requests

    wan = make_tiny_wan(tmp_path / "wan")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball rolls\nwaves hit a rock\na cat jumps\n")
    small = {**SMALL, "num_frames": 17, "fps": 16.0, "height": 64, "width": 64}
    run(prompts, wan, tmp_path / "base", **small)
    run(prompts, wan, tmp_path / "zero", lora=zero_lora(wan, tmp_path / "lora"), **small)
    policy = f"zero={tmp_path / 'zero'}"
    judge = tmp_path / "judge.yaml"  # the judge from a label YAML, as a label run file holds it
    judge.write_text(f"server: [{vllm_server}]\nmin_confidence: 0.5\nconcurrency: 8\n")
    args = ["--base", tmp_path / "base", "--policy", policy, "--out", tmp_path / "eval", "--config", judge]
    before = vllm_requests(vllm_server)
    r = run_cli("evaluate", *args, "--bootstrap", "200")
    assert r.returncode == 0, r.stderr[-3000:]
    asked_first = vllm_requests(vllm_server) - before
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    (figs,) = report["policies"]["zero"]["judges"].values()
    assert figs["segment_tie_rate"]["value"] == 1.0 and figs["segments"] == 3  # 17 frames at 16 fps: one segment
    assert figs["segment_net_win"] == {"value": 0.0, "ci": [0.0, 0.0]}
    assert report["policies"]["zero"]["motion_diff"]["value"] == 0.0
    assert "did training help" in r.stdout
    first = pd.read_parquet(tmp_path / "eval" / "labels.parquet")
    assert asked_first >= 6  # 3 samples x 1 segment x 2 orders (and the judge's start-up probe)
    shutil.rmtree(tmp_path / "zero")
    run(prompts, wan, tmp_path / "zero", lora=random_lora(wan, tmp_path / "other"), **small)
    before = vllm_requests(vllm_server)
    r = run_cli("evaluate", *args, "--bootstrap", "200")
    assert r.returncode == 0, r.stderr[-3000:]
    assert vllm_requests(vllm_server) - before == asked_first  # asked again, every segment
    second = pd.read_parquet(tmp_path / "eval" / "labels.parquet")
    assert not set(first["pair_id"]) & set(second["pair_id"])
    assert set(second["pair_id"]) == set(pd.read_parquet(tmp_path / "eval" / "pairs.parquet")["pair_id"])


def test_the_trained_judge_sees_a_clean_policy_beat_an_artifact_base(trained_judge, tmp_path):
    """Rendered samples: the base shows injected artifacts, the policy the same render without them. The trained
    tiny judge (embedded vLLM) must find the policy better: net win above 0 with its interval above 0. The same
    run probes its motion bias with frozen copies and checks the eval table works in review and eval-labels."""
    with_artifacts, _ = make_synthetic_pairs(tmp_path / "art", num_pairs=24, seed=77)
    clean, _ = make_synthetic_pairs(tmp_path / "clean", num_pairs=24, seed=77, artifacts=False)
    art, cln = pd.read_parquet(with_artifacts), pd.read_parquet(clean)
    prompts = {f"p{i:02d}": row.prompt for i, row in enumerate(art.itertuples())}
    base = {(p, 0): read_frames(with_artifacts.parent / r.video_b) for p, r in zip(prompts, art.itertuples())}
    policy = {(p, 0): read_frames(clean.parent / r.video_b) for p, r in zip(prompts, cln.itertuples())}
    sample_folder(tmp_path / "base", base, prompts, fps=16.0)
    sample_folder(tmp_path / "policy", policy, prompts, fps=16.0)
    args = ["--base", tmp_path / "base", "--policy", f"clean={tmp_path / 'policy'}", "--out", tmp_path / "eval"]
    args += ["--model", trained_judge, "--min-confidence", "0", "--motion-bias-probe", "2", "--bootstrap", "500"]
    r = run_cli("evaluate", *args, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "using --prompt" in r.stderr  # the judge folder's own request layout
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    (figs,) = report["policies"]["clean"]["judges"].values()
    assert figs["segment_net_win"]["value"] > 0 and figs["segment_net_win"]["ci"][0] > 0, figs["segment_net_win"]
    assert figs["segment_loss_rate"]["value"] <= 0.05
    probe = report["probe"]
    assert probe["videos"] == 2 and set(next(iter(probe["judges"].values()))) == {"static_win_rate", "probe_tie_rate"}
    frozen = pd.read_parquet(tmp_path / "eval" / "probe" / "pairs.parquet")
    assert len(frozen) == 8 and set(frozen["frozen_at"]) == {0.0, 0.25, 0.5, 0.75}
    # the eval pairs table is a pairs table like any other
    from review.judge_report import evaluate_judges
    from review.page import ReviewConfig, ReviewSession

    pairs = tmp_path / "eval" / "pairs.parquet"
    labels = tmp_path / "eval" / "labels.parquet"
    session = ReviewSession(ReviewConfig(pairs=pairs, labels=labels, human=tmp_path / "human.parquet", blind=True))
    assert len(session.queue) == 24 and session.pair(0)["left"] in ("a", "b")
    assert evaluate_judges([labels], [labels], n_boot=20)["references"][0]["judges"]
