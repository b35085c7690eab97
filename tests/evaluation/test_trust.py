"""evaluate must never report a silently wrong result: each case here passed without an error before its fix."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from densedpo.errors import DenseDPOError
from densedpo.tables import LABELS, write_table
from evaluation.evaluate import EvaluateConfig, _model_name, evaluate, self_preference
from evaluation.figures import preference_figures
from evaluation.pairing import pair_samples
from tests.evaluation.helpers import sample_folder
from tests.evaluation.test_figures import moving


def folders(tmp_path, base_prompts=None, policy_prompts=None, seed=3):
    prompts = {"p0": "a dog runs on the beach", "p1": "fireworks over a city"}
    base = sample_folder(tmp_path / "base", {(p, 0): moving(17) for p in prompts}, base_prompts or prompts, fps=16.0)
    policy = sample_folder(
        tmp_path / "policy", {(p, 0): moving(17, seed=seed) for p in prompts}, policy_prompts or prompts, fps=16.0
    )
    return base, policy


def test_new_videos_make_new_pair_ids(tmp_path):
    """A pair's id carries its videos' bytes: resampled videos are new questions for the judge's journal."""
    base, policy = folders(tmp_path)
    _, first = pair_samples(base, {"dense": policy}, tmp_path / "eval")
    _, again = pair_samples(base, {"dense": policy}, tmp_path / "eval")
    assert list(first["pair_id"]) == list(again["pair_id"])  # same bytes: same ids, the journal resumes
    prompts = {"p0": "a dog runs on the beach", "p1": "fireworks over a city"}
    sample_folder(tmp_path / "policy", {(p, 0): moving(17, seed=9) for p in prompts}, prompts, fps=16.0)
    _, resampled = pair_samples(base, {"dense": policy}, tmp_path / "eval")
    assert not set(first["pair_id"]) & set(resampled["pair_id"])
    assert all(pid.startswith(f"dense:{p}:0:") for pid, p in zip(resampled["pair_id"], resampled["prompt_id"]))


def test_other_prompt_texts_are_refused_with_both_texts(tmp_path):
    """Prompt ids are line numbers: a changed prompts file pairs a dog with fireworks unless texts are compared."""
    changed = {"p0": "a dog runs on the beach", "p1": "a cat sleeps"}
    base, policy = folders(tmp_path, policy_prompts=changed)
    with pytest.raises(
        DenseDPOError, match=r"prompt_id 'p1' \(k=0\): prompt 'a cat sleeps' vs 'fireworks over a city'"
    ):
        pair_samples(base, {"dense": policy}, tmp_path / "eval")


def test_sdedit_samples_of_other_clips_are_refused(tmp_path):
    base, policy = folders(tmp_path)
    for folder, sha in ((base, "aaa"), (policy, "bbb")):
        t = pd.read_parquet(folder / "samples.parquet").assign(source_sha256=sha, start_s=0.0, end_s=None, strength=0.7)
        t.to_parquet(folder / "samples.parquet")
    with pytest.raises(DenseDPOError, match=r"prompt_id 'p0' \(k=0\): source_sha256 'bbb' vs 'aaa'"):
        pair_samples(base, {"dense": policy}, tmp_path / "eval")


def test_a_samples_table_path_is_read_as_its_folder(tmp_path):
    base, policy = folders(tmp_path)
    report = evaluate(
        EvaluateConfig(
            base=base / "samples.parquet",
            policies={"x": policy / "samples.parquet"},
            out=tmp_path / "e",
            judge=False,
            bootstrap=10,
        ),
        None,
    ).report
    assert report["policies"]["x"]["samples"] == 2


def labels_of(pairs, statuses):
    rows = []
    for pid, status in zip(pairs["pair_id"], statuses):
        for k, (s, pref) in enumerate(status):
            rows.append(
                {
                    "pair_id": pid,
                    "segment_idx": k,
                    "frame_start": 16 * k,
                    "frame_end": 16 * k + 16,
                    "t_start_s": float(k),
                    "t_end_s": k + 1.0,
                    "preference": pref,
                    "status": s,
                }
            )
    return pd.DataFrame(rows)


def test_failed_segments_are_not_ties(tmp_path):
    """Two prompts, 2 segments each: one a win, one tie, and two failed requests. Rates over the 2 answered."""
    pairs = pd.DataFrame({"pair_id": ["x", "y"], "prompt_id": ["p0", "p1"]})
    labels = labels_of(pairs, [[("ok", "a"), ("request_error", None)], [("ok", "tie"), ("parse_error", None)]])
    figs = preference_figures(labels, pairs, n_boot=20)
    assert figs["segment_win_rate"]["value"] == 0.5 and figs["segment_tie_rate"]["value"] == 0.5
    assert figs["segments"] == 2 and figs["failed_segments"] == {"count": 2, "rate": 0.5}


def test_self_preference_finds_a_relative_labels_path_from_any_folder(tmp_path, monkeypatch):
    """The run file's relative `labels:` is relative to the run file; model ids compare by their last part."""
    segment = {"pair_id": "x", "segment_idx": 0, "frame_start": 0, "frame_end": 16, "t_start_s": 0.0, "t_end_s": 1.0}
    answer = {"preference": "a", "status": "ok", "judge_model": "/models/Qwen2.5-VL-7B-Instruct"}
    table = pd.DataFrame([{**segment, **answer}]).reindex(columns=[c for c in LABELS.names if c != "annotator"])
    (tmp_path / "run" / "final").mkdir(parents=True)
    write_table(table, tmp_path / "run" / "train_labels.parquet", LABELS)
    (tmp_path / "run" / "train.run.yaml").write_text("labels: train_labels.parquet\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    pairs = pd.DataFrame({"policy": ["dense"], "policy_lora": [str(tmp_path / "run" / "final")]})
    evaluating = pd.DataFrame({"judge": [None], "judge_model": ["Qwen/Qwen2.5-VL-7B-Instruct"]})
    (warning,) = self_preference(pairs, evaluating)
    assert "Qwen2.5-VL-7B-Instruct" in warning
    assert _model_name("/models/X/") == _model_name("Qwen/X") == _model_name("X") == "X"


def test_train_run_files_hold_absolute_paths(tmp_path, monkeypatch):
    import yaml

    from densedpo.config import write_run_file
    from dpo.train import TrainConfig

    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(pairs=Path("pairs.parquet"), labels=Path("labels.parquet"), model="m", out=Path("run"))
    body = yaml.safe_load(write_run_file(tmp_path / "run" / "train.run.yaml", "train", cfg).read_text())
    assert body["labels"] == str(tmp_path / "labels.parquet")


def test_figures_are_the_same_from_a_table_read_from_disk(tmp_path):
    """Nullable dtypes from disk (boolean order_agreement, None in string columns) change no figure."""
    from densedpo.tables import read_table

    pairs = pd.DataFrame({"pair_id": ["x", "y", "z"], "prompt_id": ["p0", "p1", "p2"]})
    statuses = [
        [("ok", "a"), ("low_confidence", "tie"), ("ok", "b")],
        [("order_inconsistent", "tie"), ("ok", "a"), ("request_error", None)],
        [("ok", "a"), ("parse_error", None), ("ok", "tie")],
    ]
    rows = labels_of(pairs, statuses).assign(order_agreement=None, confidence=0.8, judge="j", judge_model="m")
    rows = rows.reindex(columns=[c for c in LABELS.names if c != "annotator"])
    rows.loc[rows["status"].eq("order_inconsistent"), "order_agreement"] = False
    path = write_table(rows, tmp_path / "labels.parquet", LABELS)
    back = read_table(path, LABELS)
    assert str(back["order_agreement"].dtype) == "boolean"
    assert preference_figures(back, pairs, n_boot=50) == preference_figures(rows, pairs, n_boot=50)
