"""`densedpo generate` with a tiny random Wan 2.1 pipeline, through the real diffusers code."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from densedpo.files import finished_files
from densedpo.synthetic import make_synthetic_sources
from densedpo.video import probe, read_frames
from generation.engine import GenerateConfig, generate_pairs
from tests.conftest import REPO, run_cli

SMALL = dict(steps=8, num_frames=17, height=32, width=32, guidance=4.0, fps=16.0)


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory) -> Path:
    from densedpo.tiny import make_tiny_wan

    return make_tiny_wan(tmp_path_factory.mktemp("tiny-wan"))


@pytest.fixture(scope="session")
def sources(tmp_path_factory) -> Path:
    return make_synthetic_sources(tmp_path_factory.mktemp("sources"), num_sources=4, num_frames=24, height=48, width=64)


def gen(sources, model, out, **kw) -> pd.DataFrame:
    cfg = GenerateConfig(sources=sources, model=str(model), out=out, **{**SMALL, **kw})
    res = generate_pairs(cfg, progress=False)
    return pd.read_parquet(res.pairs_path)


def latents(out: Path, rel: str) -> torch.Tensor:
    return load_file(out / rel)["latents"]


@pytest.fixture(scope="session")
def sdedit_run(tiny_wan, sources, tmp_path_factory):
    out = tmp_path_factory.mktemp("sdedit")
    return out, gen(sources, tiny_wan, out)


def test_a_row_left_torn_by_a_kill_mid_write_is_not_read(sdedit_run, sources, tiny_wan, tmp_path):
    """A SIGKILL inside a row's atomic write leaves its temporary (`.<pair>.tmp-<pid>-<tid>.json`, empty or half
    written) in rows/: the rerun finds every pair finished and merges the whole rows only (the old code read the
    temporary as a row and failed on it)."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(sdedit_run[0], out)
    first = sorted(finished_files(out / "rows", "*.json"))
    (out / "rows" / f".{first[0].stem}.tmp-4242-1.json").write_text('{"pair_id": "')  # torn
    (out / "rows" / f".{first[1].stem}.tmp-4242-2.json").write_bytes(b"")  # killed before the first byte
    again = gen(sources, tiny_wan, out)
    pd.testing.assert_frame_equal(again, sdedit_run[1])


def test_sdedit_pairs_follow_the_contract(sdedit_run, tiny_wan):
    out, df = sdedit_run
    assert len(df) == 4 and df["pair_id"].is_unique
    from diffusers import DiffusionPipeline

    sched = DiffusionPipeline.from_pretrained(tiny_wan).scheduler
    sched.set_timesteps(SMALL["steps"])
    grid = sched.sigmas[:-1].tolist()
    for row in df.itertuples():
        assert 0.65 <= row.strength <= 0.8 and row.mode == "sdedit"
        inside = [s for s in grid if 0.65 <= s <= 0.8] or grid
        nearest = min(inside, key=lambda s: abs(s - row.strength))
        assert row.start_sigma == pytest.approx(nearest)  # the grid point nearest eta in range, not `strength`
        a, b = latents(out, row.latents_a), latents(out, row.latents_b)
        assert a.shape == b.shape == (16, 5, 4, 4)  # 17 frames -> 5 latent frames; 32 px -> 4
        assert not torch.equal(a, b)
        for col in ("video_a", "video_b", "source_video"):
            info = probe(out / getattr(row, col))
            assert (info.num_frames, info.height, info.width, info.fps) == (17, 32, 32, 16.0)
        assert not np.array_equal(read_frames(out / row.video_a), read_frames(out / row.video_b))
        emb = load_file(out / row.prompt_embeds)["prompt_embeds"]
        assert emb.ndim == 2 and emb.shape[1] == 32
    assert (out / "generate.run.yaml").exists() is False  # written by the CLI only


def test_deterministic(sdedit_run, tiny_wan, sources, tmp_path):
    out, df = sdedit_run
    again = gen(sources, tiny_wan, tmp_path, max_sources=2)
    for row in again.itertuples():
        first = df.set_index("pair_id").loc[row.pair_id]
        assert torch.equal(latents(tmp_path, row.latents_a), latents(out, first["latents_a"]))
        assert torch.equal(latents(tmp_path, row.latents_b), latents(out, first["latents_b"]))


def test_vanilla_vs_sdedit(sdedit_run, tiny_wan, sources, tmp_path):
    out, sd = sdedit_run
    van = gen(sources, tiny_wan, tmp_path / "v", mode="vanilla")
    assert van["strength"].isna().all() and (van["mode"] == "vanilla").all() and van["source_video"].isna().all()
    assert np.allclose(van["start_sigma"], 1.0, atol=1e-5)  # pure noise
    assert not set(van["pair_id"]) & set(sd["pair_id"])
    # SDEdit from a low eta keeps the pair aligned: its two videos are much closer than two vanilla videos.
    low = gen(sources, tiny_wan, tmp_path / "low", eta_min=0.2, eta_max=0.3)

    def gap(out_dir, df):
        return np.mean(
            [(latents(out_dir, r.latents_a) - latents(out_dir, r.latents_b)).norm().item() for r in df.itertuples()]
        )

    assert gap(tmp_path / "low", low) < 0.5 * gap(tmp_path / "v", van)


@pytest.mark.slow  # runs the stage's CLI in fresh interpreters (torch imports) or trains
def test_bad_sources_are_skipped_with_reasons(tiny_wan, sources, tmp_path):
    from densedpo.synthetic import render_clip
    from densedpo.video import write_video

    good = pd.read_parquet(sources).iloc[0]
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00" * 500)
    write_video(tmp_path / "short.mp4", render_clip(0, 9, 32, 32)[0], 16)
    table = tmp_path / "sources.parquet"
    pd.DataFrame(
        [
            {"source_id": good["source_id"], "video": str(sources.parent / good["video"]), "prompt": good["prompt"]},
            {"source_id": "broken", "video": "corrupt.mp4", "prompt": "x"},
            {"source_id": "short", "video": "short.mp4", "prompt": "y"},
            {"source_id": "missing", "video": "nope.mp4", "prompt": "z"},
        ]
    ).to_parquet(table)
    r = run_cli(
        "generate",
        "--sources",
        table,
        "--model",
        tiny_wan,
        "--out",
        tmp_path / "out",
        "--steps",
        "4",
        "--num-frames",
        "17",
        "--height",
        "32",
        "--width",
        "32",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    assert "cannot decode video" in r.stdout and "too short" in r.stdout and "video not found" in r.stdout
    df = pd.read_parquet(tmp_path / "out" / "pairs.parquet")
    assert list(df["source_id"]) == [good["source_id"]]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--num-frames", "16"], "--num-frames must be 4k+1"),
        (["--eta-min", "0.9", "--eta-max", "0.8"], "--eta-min <= --eta-max"),
        (["--shard", "2/2"], "--shard must be i/n"),
        (["--mode", "img2vid"], "--mode must be one of sdedit, vanilla"),
    ],
)
def test_bad_flags(sources, tiny_wan, args, fragment, tmp_path):
    r = run_cli("generate", "--sources", sources, "--model", tiny_wan, "--out", tmp_path, "--dry-run", *args)
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.slow  # runs the stage's CLI in fresh interpreters (torch imports) or trains
def test_resume_after_kill(tiny_wan, sources, tmp_path):
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "app.cli",
        "generate",
        "--sources",
        str(sources),
        "--model",
        str(tiny_wan),
        "--out",
        str(out),
        "--steps",
        "30",
        "--num-frames",
        "17",
        "--height",
        "32",
        "--width",
        "32",
        "--quiet",
    ]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / "rows").glob("*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in finished_files(out / "rows", "*.json")}
    assert len(first) < 4
    r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # the kill may land inside a row's atomic write: its temporary (.name.tmp-….json) stays and is not a row
    rows = {p.name: p.stat().st_mtime_ns for p in finished_files(out / "rows", "*.json")}
    assert len(rows) == 4 and all(rows[k] == v for k, v in first.items() if k in rows)  # finished: not redone
    df = pd.read_parquet(out / "pairs.parquet")
    assert len(df) == 4 and df["pair_id"].is_unique
    for row in df.itertuples():  # every file of every row is complete
        assert probe(out / row.video_a).num_frames == 17 and load_file(out / row.latents_b)["latents"].numel() > 0
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


@pytest.mark.slow
def test_two_processes_shard_and_merge(tiny_wan, sources, sdedit_run, tmp_path):
    """torchrun with 2 processes splits the sources; the merged table equals the single-process one."""
    _, single = sdedit_run
    out = tmp_path / "dist"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "-m",
            "app.cli",
            "generate",
            "--sources",
            str(sources),
            "--model",
            str(tiny_wan),
            "--out",
            str(out),
            "--steps",
            "8",
            "--num-frames",
            "17",
            "--height",
            "32",
            "--width",
            "32",
            "--guidance",
            "4",
            "--quiet",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    merged = pd.read_parquet(out / "pairs.parquet")
    pd.testing.assert_frame_equal(merged, single)  # every column, not only the ids (hashes of the settings)
    for row in single.itertuples():  # and the same latents, so the same videos
        assert torch.equal(latents(out, row.latents_a), latents(sdedit_run[0], row.latents_a))
    # and --shard i/n by hand, merged by a last run that has nothing left to do
    for i in range(2):
        r = run_cli(
            "generate",
            "--sources",
            sources,
            "--model",
            tiny_wan,
            "--out",
            tmp_path / "manual",
            "--shard",
            f"{i}/2",
            "--steps",
            "8",
            "--num-frames",
            "17",
            "--height",
            "32",
            "--width",
            "32",
            "--guidance",
            "4",
            "--quiet",
        )
        assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "manual" / "pairs.parquet"), single)


def test_dry_run_plans_and_loads_nothing(sources, tiny_wan, tmp_path):
    r = run_cli(
        "generate",
        "--sources",
        sources,
        "--model",
        tmp_path / "no-such-model",
        "--out",
        tmp_path / "o",
        "--dry-run",
        "--num-frames",
        "17",
        "--height",
        "32",
        "--width",
        "32",
    )
    assert r.returncode == 0, r.stderr
    assert re.search(r"pairs to make\s*│\s*4\b", r.stdout) and "17 / 16 / 32x32" in r.stdout, r.stdout
    assert not (tmp_path / "o").exists()  # nothing written, no model loaded (the model path does not exist)


def test_sources_too_short_are_found_by_the_dry_run_and_stop_the_run_with_exit_2(sources, tiny_wan, tmp_path):
    """24-frame clips at 16 fps and generate's default 81 frames: the dry run says all four are too short and the
    most frames that fit (4k+1: 21); the run exits 2 with one line saying so, before any file is written."""
    args = ["--sources", sources, "--model", tiny_wan, "--out", tmp_path / "o", "--height", "32", "--width", "32"]
    r = run_cli("generate", *args, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert re.search(r"pairs to make\s*│\s*0\b", r.stdout), r.stdout
    assert re.search(r"clips too short\s*│\s*4: --num-frames 21 \(1\.25 s at 16 fps\)", r.stdout), r.stdout
    r = run_cli("generate", *args, "--offset-s", "0.25", "--quiet")
    assert r.returncode == 2
    line = " ".join(r.stderr.split())
    assert "none of the 4 sources can make a pair: 4 too short for 81 frames at 16 fps from 0.25 s" in line, line
    assert "Try --num-frames 17 (1.00 s at 16 fps), which fits all of them; --offset-s 0" in line, line
    assert not (tmp_path / "o" / "generate.run.yaml").exists() and not (tmp_path / "o" / "pairs.parquet").exists()


def test_a_bug_is_not_a_skipped_source(tiny_wan, sources, tmp_path, monkeypatch):
    """Only a source's own problems are skipped; a ValueError from the model or the writer stops the run."""

    def broken(*args, **kwargs):
        raise ValueError("a bug in the video writer")

    monkeypatch.setattr("densedpo.video.write_video", broken)
    with pytest.raises(ValueError, match="a bug in the video writer"):
        generate_pairs(
            GenerateConfig(sources=sources, model=str(tiny_wan), out=tmp_path / "o", **SMALL), progress=False
        )
    assert not (tmp_path / "o" / "pairs.parquet").exists()  # the run stopped: no table merged from partial rows


def test_generate_and_train_encode_a_video_to_the_same_latents(sdedit_run, tiny_wan, tmp_path):
    """One VAE encode + normalise (densedpo.latents) for both stages: the latents `train` caches for a video are
    the ones `generate` would compute from the same frames, and they are not trivially equal (not all zero)."""
    from collections import namedtuple

    from dpo.data import cache_path, encode_into_cache, model_identity
    from generation.engine import Sampler

    out, df = sdedit_run
    video = out / df.iloc[0]["video_a"]
    frames = read_frames(video)
    sampler = Sampler(GenerateConfig(sources=Path("-"), model=str(tiny_wan), out=out, **SMALL), device="cpu")
    from_generate = sampler.encode_video(frames)[0]
    Row = namedtuple("Row", "pair_id video_a video_b prompt")
    row = Row("../p/0", str(video), str(video), "a prompt")
    encode_into_cache([row], out / "pairs.parquet", tmp_path, str(tiny_wan))
    cached = cache_path(tmp_path, row, out / "pairs.parquet", model_identity(str(tiny_wan)))
    assert cached.parent == tmp_path and cached.name.startswith("___p_0-")  # the id cannot leave the cache
    from_train = load_file(cached)["latents_a"]
    assert from_train.shape == from_generate.shape
    assert torch.equal(from_train, from_generate)
    assert from_train.abs().sum() > 0


def test_shards_merging_at_once_keep_every_row(sdedit_run, tmp_path, monkeypatch):
    """Shard A reads the rows, shard B adds its own and merges while A still writes: the table ends with all."""
    import shutil
    import threading

    import generation.engine as engine

    out, _ = sdedit_run
    rows = sorted((out / "rows").glob("*.json"))
    (tmp_path / "rows").mkdir()
    for p in rows[:2]:
        shutil.copy(p, tmp_path / "rows" / p.name)
    a_is_writing = threading.Event()
    real_write = engine.write_table

    def slow_first_write(df, path, schema, **kw):
        if not a_is_writing.is_set():
            a_is_writing.set()
            time.sleep(0.5)  # shard A holds an old view of the rows while B finishes
        return real_write(df, path, schema, **kw)

    monkeypatch.setattr(engine, "write_table", slow_first_write)
    shard_a = threading.Thread(target=engine.merge_rows, args=(tmp_path,))
    shard_a.start()
    assert a_is_writing.wait(10)
    for p in rows[2:]:
        shutil.copy(p, tmp_path / "rows" / p.name)
    engine.merge_rows(tmp_path)  # shard B
    shard_a.join()
    assert len(pd.read_parquet(tmp_path / "pairs.parquet")) == len(rows) == 4


def test_start_sigma_stays_in_the_eta_range_or_the_run_says_which_steps_would(tiny_wan, sources, tmp_path):
    """10 steps: the σ grid has 0.75 and 0.667 in [0.65, 0.8], so every pair starts there (the nearest grid point to
    η may be 0.818, outside). 8 steps: no σ in [0.76, 0.8]; the run warns once, naming the fewest steps that have."""
    import io

    from diffusers import DiffusionPipeline
    from rich.console import Console

    df = gen(sources, tiny_wan, tmp_path / "ten", steps=10, eta_min=0.65, eta_max=0.8)
    assert df["start_sigma"].between(0.65, 0.8).all(), df[["strength", "start_sigma"]]

    buf = io.StringIO()
    cfg = GenerateConfig(
        sources=sources, model=str(tiny_wan), out=tmp_path / "eight", **{**SMALL, "steps": 8}, eta_min=0.76, eta_max=0.8
    )
    generate_pairs(cfg, console=Console(file=buf, width=300), progress=False)
    sched = DiffusionPipeline.from_pretrained(tiny_wan).scheduler
    fits = next(n for n in range(9, 100) if sched.set_timesteps(n) or any(0.76 <= s <= 0.8 for s in sched.sigmas))
    lines = [x for x in buf.getvalue().splitlines() if "warning" in x]
    assert len(lines) == 1 and "no step of the 8-step schedule has σ in [0.76, 0.8]" in lines[0], buf.getvalue()
    assert f"--steps {fits} has one" in lines[0]


def random_lora(model: Path, folder: Path) -> Path:
    """A LoRA in `train`'s format whose B is not zero (it changes the videos), made without training."""
    from diffusers import WanPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from dpo.train import LORA_TARGETS

    pipe = WanPipeline.from_pretrained(model)
    torch.manual_seed(0)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=LORA_TARGETS))
    WanPipeline.save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer))
    return folder


@pytest.mark.slow  # two generate runs (~10 s): the full suite, not the fast lane
def test_pairs_from_the_current_policy_carry_its_lora(sdedit_run, tiny_wan, sources, tmp_path):
    """generate --lora: the policy's videos (not the base's) from the same clip, η and seeds; the LoRA's digest in
    the pair ids, each row and the run file; a rerun finds them finished; a folder without a LoRA is refused."""
    from densedpo.errors import DenseDPOError
    from densedpo.files import file_sha256

    base_out, base = sdedit_run
    lora = random_lora(tiny_wan, tmp_path / "lora")
    out = tmp_path / "policy"
    small = ["--num-frames", "9", "--height", "32", "--width", "32", "--steps", "4", "--fps", "8", "--guidance", "4"]
    r = run_cli("generate", "--sources", sources, "--model", tiny_wan, "--out", out, "--lora", lora, *small, "--quiet")
    assert r.returncode == 0, r.stderr
    policy = pd.read_parquet(out / "pairs.parquet")
    digest = file_sha256(lora / "pytorch_lora_weights.safetensors")
    assert (policy["lora_sha256"] == digest).all() and base["lora_sha256"].isna().all()
    assert f"lora_sha256: {digest}" in (out / "generate.run.yaml").read_text()
    same_settings = gen(sources, tiny_wan, tmp_path / "base-small", num_frames=9, height=32, width=32, steps=4, fps=8)
    assert not set(policy["pair_id"]) & set(same_settings["pair_id"])  # the policy's pairs are other pairs
    for p, b in zip(policy.sort_values("source_id").itertuples(), same_settings.sort_values("source_id").itertuples()):
        assert (p.strength, p.seed_a, p.seed_b) == (b.strength, b.seed_a, b.seed_b)  # same clip, η and seeds
        assert not torch.allclose(latents(out, p.latents_a), latents(tmp_path / "base-small", b.latents_a))
    small = dict(num_frames=9, height=32, width=32, steps=4, fps=8.0, guidance=4.0)
    again = generate_pairs(
        GenerateConfig(sources=sources, model=str(tiny_wan), out=out, lora=lora, **small), progress=False
    )
    assert (again.made, again.already_done) == (0, len(policy))
    with pytest.raises(DenseDPOError, match="holds no pytorch_lora_weights.safetensors"):
        GenerateConfig(sources=sources, model=str(tiny_wan), lora=tmp_path).check()
