"""evaluate's figures without a judge server: intervals over prompts, motion by VBench's rule, pairing rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from densedpo.errors import DenseDPOError
from evaluation.evaluate import EvaluateConfig, evaluate, frozen_copy
from evaluation.figures import preference_figures, samples_for_precision, tie_based_samples
from tests.evaluation.helpers import sample_folder


def simulated(rng, prompts: int, seeds: int, segments: int, p_win: float, p_loss: float, spread: float):
    """Labels of policy-vs-base pairs whose per-prompt win/loss rates vary around p_win/p_loss (prompt effects)."""
    label_rows, pair_rows = [], []
    for p in range(prompts):
        shift = rng.uniform(-spread, spread)
        pw, pl = np.clip(p_win + shift, 0, 1), np.clip(p_loss - shift, 0, 1)
        for k in range(seeds):
            pid = f"dense:p{p}:{k}"
            pair_rows.append({"pair_id": pid, "prompt_id": f"p{p}"})
            for s in range(segments):
                u = rng.random()
                pref = "a" if u < pw else "b" if u < pw + pl else "tie"
                label_rows.append({"pair_id": pid, "segment_idx": s, "preference": pref, "status": "ok"})
    return pd.DataFrame(label_rows), pd.DataFrame(pair_rows)


def test_the_interval_over_prompts_covers_the_true_net_win():
    """200 simulated runs (40 prompts x 2 seeds x 5 segments, prompt effects): the 95% interval of the segment net
    win covers the true one (0.3 - 0.1 = 0.2, the prompt shifts average out) in at least 90% of them."""
    covered = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        labels, pairs = simulated(rng, 40, 2, 5, 0.3, 0.1, spread=0.1)
        lo, hi = preference_figures(labels, pairs, n_boot=200, seed=seed)["segment_net_win"]["ci"]
        covered += lo <= 0.2 <= hi
    assert covered >= 180, covered


def test_figures_by_hand():
    prefs = ["a", "a", "tie", "b", "tie", "tie"]
    statuses = ["ok", "ok", "ok", "ok", "low_confidence", "ok"]
    ids = ["x:p0:0"] * 3 + ["x:p1:0"] * 3
    labels = pd.DataFrame({"pair_id": ids, "segment_idx": [0, 1, 2] * 2, "preference": prefs, "status": statuses})
    pairs = pd.DataFrame({"pair_id": ["x:p0:0", "x:p1:0"], "prompt_id": ["p0", "p1"]})
    f = preference_figures(labels, pairs, n_boot=50)
    approx = lambda x: pytest.approx(x, abs=1e-6)  # noqa: E731  (figures are rounded to 6 decimals)
    assert f["segment_win_rate"]["value"] == approx(2 / 6) and f["segment_loss_rate"]["value"] == approx(1 / 6)
    assert f["segment_tie_rate"]["value"] == 0.5 and f["segment_net_win"]["value"] == approx(1 / 6)
    assert [x["value"] for x in f["net_win_by_segment"]] == [0.0, 0.5, 0.0]
    assert f["clip_net_win"]["value"] == 0.0  # p0: a wins 2-0; p1: b wins 1-0
    assert samples_for_precision({"value": 0.1, "ci": [0.0, 0.2]}, 100) == 400  # half width 0.1 -> 4x
    assert samples_for_precision({"value": 0.0, "ci": [0.0, 0.0]}, 100) is None
    assert tie_based_samples(0.75, 5) == int(np.ceil((1.96 * 0.5 / 0.05) ** 2 / 5))


def moving(frames: int = 33, size: int = 64, seed: int = 0) -> np.ndarray:
    from tests.densedpo.test_motion import moving_square

    return moving_square(frames, size, size / 32, seed)


def test_a_frozen_policy_moves_less_than_a_moving_base(tmp_path):
    """Motion only (no judge): every policy sample a frozen copy of its base sample -> dynamic-degree difference
    below 0 with its interval below 0, every sample moves less."""
    prompts = {f"p{i}": f"prompt {i}" for i in range(8)}
    base_videos = {(p, 0): moving(seed=i) for i, p in enumerate(prompts)}
    base = sample_folder(tmp_path / "base", base_videos, prompts, fps=16.0)
    frozen = sample_folder(tmp_path / "frozen", {k: frozen_copy(v, 0.5) for k, v in base_videos.items()}, prompts, 16.0)
    cfg = EvaluateConfig(base=base, policies={"frozen": frozen}, out=tmp_path / "eval", judge=False, bootstrap=200)
    r = evaluate(cfg, None)
    p = r.report["policies"]["frozen"]
    assert p["dynamic_degree_base"]["value"] == 1.0 and p["dynamic_degree_policy"]["value"] == 0.0
    assert p["dynamic_degree_diff"]["value"] == -1.0 and p["dynamic_degree_diff"]["ci"][1] < 0
    assert p["motion_diff"]["value"] < 0 and p["motion_diff"]["ci"][1] < 0 and p["moves_less_share"]["value"] == 1.0
    assert r.report["motion_method"] == "farneback"
    by_segment = p["motion_diff_by_segment"]  # 33 frames at 16 fps: 2 segments, each moves less
    assert len(by_segment) == 2 and all(x["value"] < 0 and x["ci"][1] < 0 for x in by_segment)
    assert (tmp_path / "eval" / "plots" / "motion_scatter.png").exists()
    assert (tmp_path / "eval" / "report.md").exists() and (tmp_path / "eval" / "plots" / "dynamic_degree.png").exists()
    # the same folder as its own policy: no difference at all
    same = evaluate(EvaluateConfig(base=base, policies={"same": base}, out=tmp_path / "eval2", judge=False), None)
    s = same.report["policies"]["same"]
    assert s["dynamic_degree_diff"] == {"value": 0.0, "ci": [0.0, 0.0]} and s["motion_diff"]["value"] == 0.0


def test_pairing_refuses_other_settings_and_seeds(tmp_path):
    prompts = {"p0": "a"}
    base = sample_folder(tmp_path / "base", {("p0", 0): moving()}, prompts, fps=16.0)
    other_fps = sample_folder(tmp_path / "fps", {("p0", 0): moving()}, prompts, fps=8.0)
    with pytest.raises(DenseDPOError, match=r"sampled with fps 8\.0 but --base .* with 16\.0"):
        evaluate(EvaluateConfig(base=base, policies={"x": other_fps}, out=tmp_path / "e", judge=False), None)
    table = pd.read_parquet(base / "samples.parquet").assign(seed=1)
    other_seed = tmp_path / "seed"
    other_seed.mkdir()
    (other_seed / "p0-0.mp4").write_bytes((base / "p0-0.mp4").read_bytes())
    table.to_parquet(other_seed / "samples.parquet")
    with pytest.raises(DenseDPOError, match=r"sample \(prompt_id='p0', k=0\) has seed 1 .* same --seed"):
        evaluate(EvaluateConfig(base=base, policies={"x": other_seed}, out=tmp_path / "e2", judge=False), None)
    with pytest.raises(DenseDPOError, match="at least one --policy"):
        evaluate(EvaluateConfig(base=base, out=tmp_path / "e3", judge=False), None)


def test_frozen_copies_have_the_length_fps_and_frame():
    frames = moving(frames=17)
    for at, k in ((0.0, 0), (0.25, 4), (0.5, 8), (0.75, 12)):
        copy = frozen_copy(frames, at)
        assert copy.shape == frames.shape and (copy == frames[k]).all()


def test_a_policy_trained_on_the_evaluating_judge_is_flagged(tmp_path):
    """The LoRA's train run file names its labels table; that table's judge is the judge that evaluates: warn."""
    from densedpo.tables import LABELS, write_table
    from evaluation.evaluate import self_preference

    segment = {"pair_id": "x", "segment_idx": 0, "frame_start": 0, "frame_end": 16, "t_start_s": 0.0, "t_end_s": 1.0}
    answer = {"preference": "a", "status": "ok", "judge": "chat:qwen", "judge_model": "Qwen/Qwen2.5-VL-7B-Instruct"}
    table = pd.DataFrame([{**segment, **answer}]).reindex(columns=[c for c in LABELS.names if c != "annotator"])
    write_table(table, tmp_path / "train_labels.parquet", LABELS)
    (tmp_path / "run" / "final").mkdir(parents=True)
    (tmp_path / "run" / "train.run.yaml").write_text(f"labels: {tmp_path / 'train_labels.parquet'}\n")
    pairs = pd.DataFrame({"policy": ["dense", "other"], "policy_lora": [str(tmp_path / "run" / "final"), None]})
    same = pd.DataFrame({"judge": ["chat:qwen"], "judge_model": ["Qwen/Qwen2.5-VL-7B-Instruct"]})
    warnings = self_preference(pairs, same)
    assert len(warnings) == 1 and "policy dense was trained on labels of" in warnings[0] and "chat:qwen" in warnings[0]
    held_out = pd.DataFrame({"judge": ["chat:o3"], "judge_model": ["o3"]})
    assert self_preference(pairs, held_out) == []
