"""The trainer on a tiny random Wan 2.1 transformer: guards, exact resume, 2 processes, learning."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from densedpo.errors import DenseDPOError
from dpo.train import TrainConfig, train
from tests.conftest import REPO, run_cli
from tests.dpo.synthetic_latents import make_latent_pairs

FAST = dict(
    warmup_steps=2, lora_rank=4, lr=1e-3, eval_every=1000, save_every=1000, log_every=1, batch_size=2, val_fraction=0.0
)


@pytest.fixture(scope="module")
def tiny_wan_model(tmp_path_factory) -> Path:
    from densedpo.tiny import make_tiny_wan

    return make_tiny_wan(tmp_path_factory.mktemp("wan"))


@pytest.fixture(scope="module")
def latent_data(tmp_path_factory):
    return make_latent_pairs(tmp_path_factory.mktemp("latents"), num_pairs=8)


def cfg(data, model, out, **kw) -> TrainConfig:
    pairs, labels = data
    return TrainConfig(pairs=pairs, labels=labels, model=str(model), out=out, **{**FAST, **kw})


def trainable(path: Path) -> dict:
    return load_file(str(path / "trainable.safetensors"))


@pytest.mark.slow  # runs the stage's CLI in fresh interpreters (torch imports) or trains
def test_every_trainable_parameter_moves(latent_data, tiny_wan_model, tmp_path):
    start = train(cfg(latent_data, tiny_wan_model, tmp_path / "s0", max_steps=1, lr=1e-12), progress=False)
    moved = train(cfg(latent_data, tiny_wan_model, tmp_path / "s2", max_steps=2), progress=False)
    before, after = trainable(start.out / "final"), trainable(moved.out / "final")
    assert before and set(before) == set(after)
    assert all("lora" in n for n in after)  # LoRA: only adapters train
    still = [n for n in before if torch.equal(before[n], after[n])]
    assert not still, still[:5]
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in moved.history)


def test_four_steps_equal_two_plus_resume_plus_two(latent_data, tiny_wan_model, tmp_path):
    straight = train(cfg(latent_data, tiny_wan_model, tmp_path / "a", max_steps=4), progress=False)
    train(cfg(latent_data, tiny_wan_model, tmp_path / "b", max_steps=2, save_every=2), progress=False)
    resumed = train(
        cfg(latent_data, tiny_wan_model, tmp_path / "b", max_steps=4, resume=tmp_path / "b/checkpoint-2"),
        progress=False,
    )
    a, b = trainable(straight.out / "final"), trainable(resumed.out / "final")
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=0)
    assert [h["loss"] for h in straight.history[2:]] == pytest.approx([h["loss"] for h in resumed.history])


def test_lora_loads_into_the_pipeline(latent_data, tiny_wan_model, tmp_path):
    from diffusers import DiffusionPipeline

    res = train(cfg(latent_data, tiny_wan_model, tmp_path, max_steps=2), progress=False)
    pipe = DiffusionPipeline.from_pretrained(tiny_wan_model)
    x = torch.randn(1, 16, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = pipe.transformer(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=emb)[0]
        pipe.load_lora_weights(res.out / "final")
        after = pipe.transformer(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=emb)[0]
    assert not torch.allclose(before, after)


def test_a_later_round_starts_from_the_previous_lora_against_base_or_previous(latent_data, tiny_wan_model, tmp_path):
    """-o init_lora: the policy starts as the previous round's LoRA (its weights load exactly); against the base its
    first loss is not log 2, against -o reference=previous (the same weights, frozen) it is log 2 exactly, as for a
    fresh LoRA against the base. The saved LoRA is the policy's alone (loads into a plain pipeline)."""
    first = train(cfg(latent_data, tiny_wan_model, tmp_path / "r1", max_steps=3), progress=False)
    prev = first.out / "final"
    frozen = train(cfg(latent_data, tiny_wan_model, tmp_path / "r2a", max_steps=1, lr=1e-12, init_lora=prev),
                   progress=False)  # fmt: skip
    start, end = trainable(prev), trainable(frozen.out / "final")
    assert start.keys() == end.keys() and all(torch.allclose(start[k], end[k], atol=1e-6) for k in start)
    log2 = 0.6931471805599453
    assert first.history[0]["loss"] == pytest.approx(log2, abs=1e-6)  # a fresh LoRA is the base
    assert abs(frozen.history[0]["loss"] - log2) > 1e-3  # the previous LoRA differs from the base
    vs_previous = train(
        cfg(latent_data, tiny_wan_model, tmp_path / "r2b", max_steps=2, init_lora=prev, reference="previous"),
        progress=False,
    )
    assert vs_previous.history[0]["loss"] == pytest.approx(log2, abs=1e-6)
    assert abs(vs_previous.history[1]["loss"] - log2) > 1e-6  # and it trains away from it
    assert trainable(vs_previous.out / "final").keys() == start.keys()  # the policy's adapter only
    with pytest.raises(DenseDPOError, match="-o reference=previous needs -o init_lora"):
        cfg(latent_data, tiny_wan_model, tmp_path / "x", reference="previous").check()
    with pytest.raises(DenseDPOError, match="pass -o lora_rank=4"):
        train(cfg(latent_data, tiny_wan_model, tmp_path / "y", init_lora=prev, lora_rank=8), progress=False)


def test_full_finetune_with_frozen_copy(latent_data, tiny_wan_model, tmp_path):
    res = train(cfg(latent_data, tiny_wan_model, tmp_path, max_steps=2, full_finetune=True, lr=1e-4), progress=False)
    weights = trainable(res.out / "final")
    assert not any("lora" in n for n in weights) and len(weights) > 20
    assert (res.out / "final" / "transformer" / "config.json").exists()


def test_videos_without_latents_are_encoded_once(tiny_wan_model, tmp_path):
    """Pairs brought from elsewhere (videos only) + human labels: encoded into a cache, then trained."""
    from densedpo.synthetic import make_synthetic_pairs

    pairs, truth = make_synthetic_pairs(tmp_path / "data", num_pairs=3, num_frames=33, height=32, width=32)
    c = TrainConfig(
        pairs=pairs,
        labels=truth,
        model=str(tiny_wan_model),
        out=tmp_path / "run",
        max_steps=2,
        **{**FAST, "batch_size": 1},
    )
    train(c, progress=False)
    cache = sorted((tmp_path / "run" / "cache").glob("*.safetensors"))
    assert len(cache) == 3
    z = load_file(str(cache[0]))
    assert z["latents_a"].shape == (16, 9, 4, 4) and z["prompt_embeds"].ndim == 2
    mtimes = [p.stat().st_mtime_ns for p in cache]
    train(
        TrainConfig(**{**c.__dict__, "out": tmp_path / "run", "max_steps": 3, "resume": tmp_path / "run/final"}),
        progress=False,
    )
    assert [p.stat().st_mtime_ns for p in cache] == mtimes  # not encoded again


@pytest.mark.slow  # runs the stage's CLI in fresh interpreters (torch imports) or trains
def test_cli_errors_and_dry_run(latent_data, tiny_wan_model, tmp_path):
    pairs, labels = latent_data
    base = ["train", "--pairs", pairs, "--labels", labels, "--model", tiny_wan_model, "--out", tmp_path]
    r = run_cli(*base, "--dry-run", "-o", "beta=123.5")  # a value no default has
    assert r.returncode == 0 and re.search(r"beta\s*│\s*123\.500\b", r.stdout), r.stdout + r.stderr
    for override, fragment in (
        ("lr=-1", "lr and beta must be positive"),
        ("loss_form=sum", "loss_form must be one of"),
        ("lora_rank=0", "lora_rank must be at least 1"),
        ("mixed_precision=fp8", "mixed_precision must be auto, no, bf16 or fp16"),
    ):
        r = run_cli(*base, "--dry-run", "-o", override)
        assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr, (override, r.stderr)
    r = run_cli(*base, "--dry-run", "--resume", tmp_path)
    assert r.returncode == 2 and "is not a densedpo checkpoint" in r.stderr
    r = run_cli(*base, "--dry-run", "-o", "betta=1")
    assert r.returncode == 2 and "unknown config key(s) betta; valid keys:" in r.stderr
    r = run_cli(*base, "--dry-run", "-o", "min_non_tie_fraction=1")
    assert r.returncode == 2 and "no pair in" in r.stderr and "non-tie segments" in r.stderr
    other = tmp_path / "other.parquet"
    df = pd.read_parquet(labels)
    df.loc[0, "pair_id"] = "ghost"
    df.to_parquet(other)
    r = run_cli("train", "--pairs", pairs, "--labels", other, "--model", tiny_wan_model, "--dry-run")
    assert r.returncode == 2 and "'ghost'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_two_processes_with_accelerate(latent_data, tiny_wan_model, tmp_path):
    """Two ranks: one metrics writer, reduced metrics, evaluation split over the ranks (the same figure as one
    process), and early stopping decided once for both (rank 0, broadcast), so neither waits at a barrier alone."""
    pairs, labels = latent_data
    opts = ["max_steps=6", "lora_rank=4", "batch_size=2", "log_every=1", "val_fraction=0.4", "eval_every=1"]
    opts += ["early_stopping_patience=1", "lr=1e-12"]  # nothing changes: the second evaluation is no better
    args = ["train", "--pairs", pairs, "--labels", labels, "--model", tiny_wan_model, "--quiet"]
    args += [x for o in opts for x in ("-o", o)]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [*launch, "-m", "app.cli", *map(str, args), "--out", str(tmp_path / "two")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_cli(*args, "--out", tmp_path / "one", env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    steps = [int(x["step"]) for x in rows if "loss" in x]
    assert steps == [1, 2]  # one writer; stopped early at step 2 on both ranks
    # metrics are reduced over both processes: 2 processes x 2 pairs x 5 latent frames, all non-tie
    assert all(x["decided_frames"] == 20 for x in rows if "loss" in x)
    single = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    val_two = [x["val_implicit_accuracy"] for x in rows if "val_implicit_accuracy" in x]
    val_one = [x["val_implicit_accuracy"] for x in single if "val_implicit_accuracy" in x]
    assert len(val_two) == 2 and val_two == pytest.approx(val_one, abs=1e-9)  # every val pair counted once
    assert (tmp_path / "two" / "final" / "pytorch_lora_weights.safetensors").exists()
    assert (tmp_path / "two" / "best" / "pytorch_lora_weights.safetensors").exists()


@pytest.mark.slow
def test_learns_and_dense_beats_clip_labels(tiny_wan_model, tmp_path):
    """Per segment one video is corrupted and labeled worse; segments of a pair disagree.

    After training, held-out per-frame implicit accuracy is clearly above chance, and training on dense labels
    beats training on the clip-level (majority) labels of the same pairs.
    """
    pairs, labels = make_latent_pairs(tmp_path / "data", num_pairs=64, seed=1)
    acc = {}
    for mode in ("dense", "clip"):
        c = TrainConfig(
            pairs=pairs,
            labels=labels,
            model=str(tiny_wan_model),
            out=tmp_path / mode,
            max_steps=100,
            warmup_steps=10,
            batch_size=4,
            lora_rank=8,
            lr=1e-3,
            val_fraction=0.25,
            eval_every=100,
            save_every=1000,
            log_every=1000,
            label_mode=mode,
        )
        acc[mode] = train(c, progress=False).val_accuracy
    assert acc["dense"] > 0.7, acc
    assert acc["dense"] > acc["clip"] + 0.05, acc


def test_early_stopping_keeps_best(tiny_wan_model, tmp_path):
    """A learning rate too small to change anything: the second evaluation is no better, so patience 1 stops."""
    data = make_latent_pairs(tmp_path / "data", num_pairs=8, seed=2)
    res = train(
        cfg(
            data,
            tiny_wan_model,
            tmp_path / "run",
            max_steps=10,
            lr=1e-12,
            val_fraction=0.3,
            eval_every=1,
            early_stopping_patience=1,
        ),
        progress=False,
    )
    assert res.steps == 2
    assert (tmp_path / "run" / "best" / "pytorch_lora_weights.safetensors").exists()
    assert json.loads((tmp_path / "run" / "best" / "trainer_state.json").read_text())["step"] == 1


def test_resume_into_another_config_is_refused(latent_data, tiny_wan_model, tmp_path):
    from densedpo.errors import DenseDPOError

    train(cfg(latent_data, tiny_wan_model, tmp_path / "r4", max_steps=1), progress=False)
    with pytest.raises(DenseDPOError, match="does not match this model/config"):
        train(
            cfg(
                latent_data, tiny_wan_model, tmp_path / "r8", max_steps=2, lora_rank=8, resume=tmp_path / "r4" / "final"
            ),
            progress=False,
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_autocast_step_on_cuda(latent_data, tiny_wan_model, tmp_path):
    res = train(
        cfg(latent_data, tiny_wan_model, tmp_path / "cuda", max_steps=2, mixed_precision="bf16"), progress=False
    )
    assert res.steps == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history)


def test_labels_of_several_annotators_train_on_one_or_on_their_majority(tmp_path):
    """Two or three annotators: refused with both options named; -o annotator=NAME takes theirs; majority votes
    per segment (equal top votes are ties)."""
    import pandas as pd

    from densedpo.errors import DenseDPOError
    from densedpo.synthetic import make_synthetic_pairs
    from densedpo.tables import LABELS, read_table, write_table
    from dpo.data import join_tables

    pairs, truth = make_synthetic_pairs(tmp_path, num_pairs=1)
    t = read_table(truth, LABELS).assign(status="ok")
    n = len(t)
    x = t.assign(annotator="x", preference=["a"] * n)
    y = t.assign(annotator="y", preference=["b"] * n)
    z = t.assign(annotator="z", preference=["a"] * (n - 1) + ["tie"])
    two = write_table(pd.concat([x, y], ignore_index=True), tmp_path / "two.parquet", LABELS)
    with pytest.raises(DenseDPOError, match=r"2 annotators \(x, y\); .*-o annotator=NAME.*-o annotators=majority"):
        join_tables(pairs, two, 0.2)
    pid = t["pair_id"].iloc[0]
    _, segs, _ = join_tables(pairs, two, 0.0, annotator="y")
    assert [s[2] for s in segs[pid]] == [-1] * n
    with pytest.raises(DenseDPOError, match="no pair .* non-tie"):  # one a, one b everywhere: all ties
        join_tables(pairs, two, 0.0, annotator="majority")
    three = write_table(pd.concat([x, y, z], ignore_index=True), tmp_path / "three.parquet", LABELS)
    _, segs, _ = join_tables(pairs, three, 0.0, annotator="majority")
    assert [s[2] for s in segs[pid]] == [1] * (n - 1) + [0]  # last segment: a, b, tie -> no majority
    with pytest.raises(DenseDPOError, match=r"-o annotator=w: .* it has x, y"):
        join_tables(pairs, two, 0.0, annotator="w")


def test_train_config_takes_annotators_majority_only():
    from densedpo.errors import DenseDPOError
    from dpo.train import TrainConfig

    assert TrainConfig(pairs=Path("p"), labels=Path("l"), model="m", annotators="majority").who() == "majority"
    with pytest.raises(DenseDPOError, match="annotators can only be majority"):
        TrainConfig(pairs=Path("p"), labels=Path("l"), model="m", annotators="all").check()


def test_a_jury_table_trains_on_the_jury_or_the_named_judge(tmp_path):
    import pandas as pd

    from densedpo.errors import DenseDPOError
    from densedpo.synthetic import make_synthetic_pairs
    from densedpo.tables import LABELS, read_table, write_table
    from dpo.data import join_tables

    pairs, truth = make_synthetic_pairs(tmp_path, num_pairs=2)
    t = read_table(truth, LABELS)
    flipped = t.assign(preference=t["preference"].map({"a": "b", "b": "a", "tie": "tie"}))
    table = pd.concat([t.assign(judge="jury"), flipped.assign(judge="x")], ignore_index=True)
    path = write_table(table, tmp_path / "jury.parquet", LABELS)
    _, segs, _ = join_tables(pairs, path, 0.0)  # the jury's rows by default
    _, segs_x, _ = join_tables(pairs, path, 0.0, judge="x")
    pid = t["pair_id"].iloc[0]
    assert [s[2] for s in segs[pid]] == [-s[2] for s in segs_x[pid]] != [0] * len(segs[pid])
    with pytest.raises(DenseDPOError, match=r"-o judge=nobody: .* it has jury, x"):
        join_tables(pairs, path, 0.0, judge="nobody")
    two = write_table(
        table[table["judge"] == "x"]
        .assign(judge="x")
        .pipe(lambda d: pd.concat([d, d.assign(judge="y")], ignore_index=True)),
        tmp_path / "two.parquet",
        LABELS,
    )
    with pytest.raises(DenseDPOError, match=r"several judges \(x, y\); pick one with -o judge=NAME"):
        join_tables(pairs, two, 0.0)


def test_latent_cache_key_follows_the_model_and_the_video_bytes(tmp_path):
    """Another --model (another VAE) or re-encoded videos under the same --out never reuse stale latents."""
    from collections import namedtuple

    from densedpo.tiny import make_tiny_wan
    from dpo.data import cache_path, model_identity

    video = tmp_path / "a.mp4"
    video.write_bytes(b"video one")
    Row = namedtuple("Row", "pair_id video_a video_b prompt")
    row = Row("p", "a.mp4", "a.mp4", "a cat")
    table = tmp_path / "pairs.parquet"
    one, two = make_tiny_wan(tmp_path / "wan1"), make_tiny_wan(tmp_path / "wan2", seed=1)
    key = cache_path(tmp_path, row, table, model_identity(str(one)))
    assert key == cache_path(tmp_path, row, table, model_identity(str(one)))  # stable
    assert key != cache_path(tmp_path, row, table, model_identity(str(two)))  # another VAE
    video.write_bytes(b"video one, re-encoded")
    assert key != cache_path(tmp_path, row, table, model_identity(str(one)))  # other bytes
    assert key != cache_path(tmp_path, row._replace(prompt="a dog"), table, model_identity(str(one)))


@pytest.mark.slow
def test_samples_while_training(tiny_wan_model, tmp_path):
    """-o sample_every=2: samples of the current LoRA at steps 2 and 4 (the pairs' settings, sample's pairing rule),
    their motion in metrics.jsonl and TensorBoard, and without moviepy a frame strip image plus one warning."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from generation.sample import sample_seed

    pairs, labels = make_latent_pairs(tmp_path / "data", num_pairs=4)
    table = pd.read_parquet(pairs).assign(height=32, width=32, num_inference_steps=3, guidance_scale=2.0)
    table.to_parquet(pairs)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\na blue cube\n")
    opts = ["max_steps=4", "lora_rank=4", "batch_size=2", "val_fraction=0", "sample_every=2", "sample_seeds=0,1"]
    opts += [f"sample_prompts={prompts}"]
    args = ["train", "--pairs", pairs, "--labels", labels, "--model", tiny_wan_model, "--out", tmp_path / "run"]
    r = run_cli(*args, *[x for o in opts for x in ("-o", o)])
    assert r.returncode == 0, r.stderr[-3000:]
    for step in (2, 4):
        got = pd.read_parquet(tmp_path / "run" / "samples" / f"step-{step}" / "samples.parquet")
        assert sorted(zip(got["prompt_id"], got["k"])) == [("p0000", 0), ("p0000", 1), ("p0001", 0), ("p0001", 1)]
        assert list(got["seed"]) == [sample_seed(0, p, k) for p, k in zip(got["prompt_id"], got["k"])]
        assert set(got["num_frames"]) == {17} and set(got["height"]) == {32}
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows if "sample_motion" in x] == [2, 4]
    assert r.stderr.count("TensorBoard videos need moviepy") == 1
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert "samples/0" in events.Tags()["images"] and "sample_motion" in events.Tags()["scalars"]


def test_a_second_run_into_the_same_out_is_refused_unless_resume_or_overwrite(latent_data, tiny_wan_model, tmp_path):
    from densedpo.errors import DenseDPOError

    out = tmp_path / "run"
    train(cfg(latent_data, tiny_wan_model, out, max_steps=2, save_every=2), progress=False)
    lines = (out / "metrics.jsonl").read_text()
    with pytest.raises(DenseDPOError, match=r"holds a training run .* --resume .* --overwrite"):
        train(cfg(latent_data, tiny_wan_model, out, max_steps=2), progress=False)
    assert (out / "metrics.jsonl").read_text() == lines  # nothing of the first run was touched
    train(cfg(latent_data, tiny_wan_model, out, max_steps=3, resume=out / "checkpoint-2"), progress=False)
    train(cfg(latent_data, tiny_wan_model, out, max_steps=1, overwrite=True), progress=False)
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if "loss" in x]
    assert steps == [1] and not (out / "checkpoint-2").exists()  # started over


def test_segment_weights_from_a_table_read_from_disk(tmp_path):
    """-o segment_weight=confidence: each decided segment's latent frames carry its confidence, ties 0; the weights
    reach the batch; human labels (no confidence) are a one-line error naming the row and the fix."""
    import pandas as pd

    from densedpo.errors import DenseDPOError
    from densedpo.tables import LABELS, read_table, write_table
    from dpo.data import join_tables, load_examples
    from dpo.train import collate
    from tests.dpo.synthetic_latents import make_latent_pairs

    pairs, labels = make_latent_pairs(tmp_path / "data", num_pairs=2)
    t = read_table(labels, LABELS)
    conf = [0.55 + 0.05 * i for i in range(len(t))]
    judged = write_table(t.assign(confidence=conf, status=["ok"] * (len(t) - 1) + ["low_confidence"]),
                         tmp_path / "judged.parquet", LABELS)  # fmt: skip
    kept, segs, _ = join_tables(pairs, judged, 0.0, weight_rule="confidence")
    back = read_table(judged, LABELS)
    for row in back.itertuples():
        (seg,) = [s for s in segs[row.pair_id] if s[0] == row.frame_start]
        assert seg[3] == (pytest.approx(row.confidence) if row.status == "ok" else 0.0)
    examples = load_examples(kept, segs, pairs, tmp_path / "cache", "unused")
    batch = collate(examples, "dense")
    first = [s for s in segs[examples[0].pair_id]]
    assert batch["weights"].shape == batch["labels"].shape
    assert batch["weights"][0, 0].item() == pytest.approx(first[0][3])  # latent 0 is pixel frame 0: segment 0
    human = write_table(t.assign(confidence=None), tmp_path / "human.parquet", LABELS)
    with pytest.raises(
        DenseDPOError, match=r"human\.parquet, pair_id '.*' segment 0: -o segment_weight=confidence needs a confidence"
    ):
        join_tables(pairs, human, 0.0, weight_rule="confidence")
    assert pd.notna(back["confidence"]).all()


def test_confidence_weights_reach_the_loss(latent_data, tiny_wan_model, tmp_path):
    """Confidence 1 everywhere trains exactly as unweighted; other confidences change the loss."""
    from densedpo.tables import LABELS, read_table, write_table

    pairs, labels = latent_data
    t = read_table(labels, LABELS)
    ones = write_table(t.assign(confidence=1.0), tmp_path / "ones.parquet", LABELS)
    varied = write_table(t.assign(confidence=[0.5 + (i % 5) / 10 for i in range(len(t))]), tmp_path / "v.parquet",
                         LABELS)  # fmt: skip

    def run(lab, rule, name):
        out = tmp_path / name
        return train(cfg((pairs, lab), tiny_wan_model, out, max_steps=2, segment_weight=rule), progress=False).history

    plain, weighted_ones, weighted = (
        run(ones, "none", "n"),
        run(ones, "confidence", "o"),
        run(varied, "confidence", "v"),
    )
    assert [h["loss"] for h in weighted_ones] == pytest.approx([h["loss"] for h in plain], rel=1e-6)
    # step 1: policy = reference, every frame's loss is log 2 whatever its weight; after one update they differ
    assert weighted[0]["loss"] == pytest.approx(plain[0]["loss"]) and weighted[1]["loss"] != pytest.approx(
        plain[1]["loss"], rel=1e-6
    )
