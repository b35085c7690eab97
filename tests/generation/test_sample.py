"""`densedpo sample` with a tiny random Wan 2.1: pairing by seed, LoRA loading, resume and shards.

The tiny random VAE decodes every latent to nearly the same grey video, so tests that must tell samples apart
compare the final latents (--save-latents), as the issue says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from densedpo.video import read_frames
from generation.sample import SampleConfig, sample, sample_seed
from tests.conftest import REPO

SMALL = dict(steps=4, num_frames=9, height=32, width=32, guidance=3.0, fps=8.0, save_latents=True)


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory) -> Path:
    from densedpo.tiny import make_tiny_wan

    return make_tiny_wan(tmp_path_factory.mktemp("wan"))


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("a red ball rolls\na cat jumps over a fence\n\nwaves hit a rock\n")
    return path


def run(prompts, model, out, **kw) -> pd.DataFrame:
    res = sample(SampleConfig(prompts=str(prompts), model=str(model), out=out, **{**SMALL, **kw}), progress=False)
    return pd.read_parquet(res.samples_path)


def latents(out: Path, row) -> torch.Tensor:
    return load_file(out / row["latents"])["latents"]


def zero_lora(model: Path, out: Path) -> Path:
    """A LoRA whose delta is zero (B = 0 at init), saved in train's diffusers format."""
    from diffusers import AutoModel
    from peft import LoraConfig

    from dpo.train import LORA_TARGETS, _save_lora

    transformer = AutoModel.from_pretrained(str(model), subfolder="transformer")
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=True, target_modules=LORA_TARGETS))
    out.mkdir(parents=True)
    _save_lora(transformer, str(model), out)
    return out


def test_samples_follow_the_contract_and_pair_by_seed(tiny_wan, prompts, tmp_path):
    df = run(prompts, tiny_wan, tmp_path / "base", seeds_per_prompt=2)
    assert list(zip(df["prompt_id"], df["k"])) == [(p, k) for p in ("p0000", "p0001", "p0003") for k in (0, 1)]
    assert df.loc[df["prompt_id"] == "p0003", "prompt"].iloc[0] == "waves hit a rock"  # ids are line numbers
    assert all(s == sample_seed(0, p, k) for s, p, k in zip(df["seed"], df["prompt_id"], df["k"]))
    assert df["seed"].is_unique and df["lora"].isna().all()
    frames = read_frames(tmp_path / "base" / df["video"].iloc[0])
    assert frames.shape == (9, 32, 32, 3)
    z = {(r["prompt_id"], r["k"]): latents(tmp_path / "base", r) for _, r in df.iterrows()}
    assert not torch.equal(z[("p0000", 0)], z[("p0000", 1)])  # another k: other noise


def test_a_zero_lora_gives_the_base_videos_byte_for_byte(tiny_wan, prompts, tmp_path):
    base = run(prompts, tiny_wan, tmp_path / "base", max_prompts=2)
    lora = zero_lora(tiny_wan, tmp_path / "zero-lora")
    policy = run(prompts, tiny_wan, tmp_path / "policy", max_prompts=2, lora=lora)
    assert policy["lora_sha256"].notna().all() and policy["lora"].iloc[0] == str(lora.resolve())
    for (_, b), (_, p) in zip(base.iterrows(), policy.iterrows()):
        # the sampling is bit-identical; the videos too, up to the CPU VAE decode: once in a full-suite process the
        # decode of bit-identical latents differed by <= 4 levels on 10% of one video's pixels, so pixels get a
        # tolerance (latents decide the pairing; the decode is diffusers' and oneDNN's)
        assert torch.equal(latents(tmp_path / "base", b), latents(tmp_path / "policy", p))
        frames_b, frames_p = (
            read_frames(tmp_path / f / r["video"]).astype(int) for f, r in (("base", b), ("policy", p))
        )
        assert np.abs(frames_b - frames_p).max() <= 8 and np.abs(frames_b - frames_p).mean() < 0.5


@pytest.mark.slow  # fresh interpreters (torch imports) or a training run
def test_shards_processes_and_resume_draw_the_same_noise(tiny_wan, prompts, tmp_path):
    whole = run(prompts, tiny_wan, tmp_path / "whole")
    # two shards, each in its own process, into one folder
    for shard in ("0/2", "1/2"):
        small = ["--steps", "4", "--num-frames", "9", "--height", "32", "--width", "32", "--guidance", "3"]
        args = ["--prompts", prompts, "--model", tiny_wan, "--out", tmp_path / "shards", "--shard", shard]
        args += [*small, "--fps", "8", "--save-latents", "--quiet"]
        cmd = [sys.executable, "-m", "app.cli", "sample", *map(str, args)]
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    sharded = pd.read_parquet(tmp_path / "shards" / "samples.parquet")
    # a run stopped after one prompt, then resumed
    run(prompts, tiny_wan, tmp_path / "resumed", max_prompts=1)
    resumed = run(prompts, tiny_wan, tmp_path / "resumed")
    for other, folder in ((sharded, "shards"), (resumed, "resumed")):
        assert list(other["seed"]) == list(whole["seed"])
        for (_, a), (_, b) in zip(whole.iterrows(), other.iterrows()):
            assert torch.equal(latents(tmp_path / "whole", a), latents(tmp_path / folder, b)), folder


@pytest.mark.slow  # fresh interpreters (torch imports) or a training run
def test_a_trained_lora_changes_the_latents(tiny_wan, prompts, tmp_path):
    from dpo.train import TrainConfig, train
    from tests.dpo.synthetic_latents import make_latent_pairs

    pairs, labels = make_latent_pairs(tmp_path / "data", num_pairs=4)
    fast = dict(warmup_steps=1, lora_rank=4, batch_size=2, val_fraction=0.0, eval_every=1000, save_every=1000)
    cfg = TrainConfig(
        pairs=pairs, labels=labels, model=str(tiny_wan), out=tmp_path / "run", max_steps=3, lr=5e-2, **fast
    )
    train(cfg, progress=False)
    base = run(prompts, tiny_wan, tmp_path / "base", max_prompts=1)
    policy = run(prompts, tiny_wan, tmp_path / "policy", max_prompts=1, lora=tmp_path / "run" / "final")
    diff = (latents(tmp_path / "base", base.iloc[0]) - latents(tmp_path / "policy", policy.iloc[0])).abs().mean()
    assert float(diff) > 1e-3


def test_bad_prompts_and_lora_are_one_line_errors(tiny_wan, tmp_path):
    from densedpo.errors import DenseDPOError

    with pytest.raises(DenseDPOError, match="no such file or prompt set"):
        run(tmp_path / "nope.txt", tiny_wan, tmp_path / "o")
    with pytest.raises(DenseDPOError, match=r"need 0 < --eta-min <= --eta-max <= 1, got 0\.9 and 0\.7"):
        SampleConfig(prompts=None, model="m", mode="sdedit", sources=tmp_path, eta_min=0.9, eta_max=0.7).check()
    with pytest.raises(DenseDPOError, match="holds no pytorch_lora_weights.safetensors"):
        SampleConfig(prompts="vbench-dynamic", model="m", lora=tmp_path).check()
    pd.DataFrame({"prompt_id": ["x", "x"], "prompt": ["a", "b"]}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DenseDPOError, match="prompt_id 'x' appears twice"):
        run(tmp_path / "p.parquet", tiny_wan, tmp_path / "o2")
    from generation.sample import load_prompts

    assert len(load_prompts("vbench-dynamic")) == 72 and len(load_prompts("vbench-all")) == 946
    assert np.all(load_prompts("vbench-dynamic")["prompt_id"].str.match(r"p\d{4}"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_initial_noise_on_cuda_equals_the_cpu_draw(tiny_wan):
    """The noise of sample (prompt_id, k) is drawn on a CPU generator: on CUDA it is the same tensor."""
    from generation.engine import Sampler

    cfg = SampleConfig(prompts="vbench-dynamic", model=str(tiny_wan), **SMALL)
    cpu, cuda = Sampler(cfg, device="cpu"), Sampler(cfg, device="cuda")
    seeds = [sample_seed(0, "p0000", k) for k in range(2)]
    a, b = cpu.noise(seeds, cpu.latent_shape()), cuda.noise(seeds, cuda.latent_shape())
    assert b.device.type == "cuda" and torch.equal(a, b.cpu())


def test_sdedit_samples_are_generates_pairs(tiny_wan, tmp_path):
    """--mode sdedit: each held-out clip noised to generate's η and denoised with its pair's two seeds (k = 0, 1):
    the same latents `generate` makes for that clip, so base and policy edit the same clip from the same noise
    (the second clip is a span of its file, start_s 0.5: both read it from there)."""
    from densedpo.synthetic import make_synthetic_sources
    from densedpo.tables import SOURCES, write_table
    from generation.engine import GenerateConfig, generate_pairs

    sources = make_synthetic_sources(tmp_path / "src", num_sources=2, num_frames=32, height=48, width=64)
    table = pd.read_parquet(sources).assign(start_s=[None, 0.5], end_s=[None, 2.0])
    write_table(table, sources, SOURCES)
    settings = dict(steps=4, num_frames=9, height=32, width=32, guidance=3.0, fps=8.0)
    generated = generate_pairs(GenerateConfig(sources=sources, model=str(tiny_wan), out=tmp_path / "gen", **settings))
    pairs = pd.read_parquet(generated.pairs_path)
    sdedit = dict(mode="sdedit", sources=sources, seeds_per_prompt=2, save_latents=True)
    cfg = SampleConfig(prompts=None, model=str(tiny_wan), out=tmp_path / "s", **sdedit, **settings)
    got = pd.read_parquet(sample(cfg, progress=False).samples_path)
    for row in pairs.itertuples():
        mine = got[got["prompt_id"] == row.source_id].sort_values("k")
        assert list(mine["seed"]) == [row.seed_a, row.seed_b] and mine["start_sigma"].iloc[0] == row.start_sigma
        for k, side in ((0, "latents_a"), (1, "latents_b")):
            ours = load_file(tmp_path / "s" / mine.iloc[k]["latents"])["latents"]
            theirs = load_file(tmp_path / "gen" / getattr(row, side))["latents"]
            assert torch.equal(ours, theirs), (row.source_id, k)


def test_resuming_into_a_folder_of_another_lora_or_settings_is_refused(tiny_wan, prompts, tmp_path):
    from densedpo.errors import DenseDPOError

    run(prompts, tiny_wan, tmp_path / "s", max_prompts=1)
    with pytest.raises(DenseDPOError, match=r"holds samples with lora_sha256 None, this run has '[0-9a-f]{64}'"):
        run(prompts, tiny_wan, tmp_path / "s", lora=zero_lora(tiny_wan, tmp_path / "lora"))
    with pytest.raises(DenseDPOError, match=r"holds samples with num_inference_steps 4, this run has 5"):
        run(prompts, tiny_wan, tmp_path / "s", steps=5)


def test_a_row_left_torn_by_a_kill_mid_write_is_not_read(tiny_wan, prompts, tmp_path):
    """A kill inside a sample row's atomic write leaves `.<name>.tmp-<pid>-<tid>.json` (here empty) in rows/: the
    resume check and the merge read whole rows only (the old code failed on the temporary)."""
    first = run(prompts, tiny_wan, tmp_path / "s", max_prompts=2)
    (tmp_path / "s" / "rows" / ".waves.tmp-4242-1.json").write_bytes(b"")
    again = run(prompts, tiny_wan, tmp_path / "s", max_prompts=2)
    pd.testing.assert_frame_equal(again, first)


def test_long_and_dotted_prompt_ids_get_distinct_files(tiny_wan, tmp_path):
    """OpenVid-style ids share a long prefix, and `a.b` / `a_b` once mapped to one name: every sample keeps its own
    file, and a plain id keeps its own name."""
    from generation.sample import sample_name

    long = "openvid_" + "x" * 90
    ids = [f"{long}_clip1", f"{long}_clip2", "a.b", "a_b"]
    table = pd.DataFrame({"prompt_id": ids, "prompt": ["p one", "p two", "p three", "p four"]})
    table.to_parquet(tmp_path / "prompts.parquet")
    df = run(tmp_path / "prompts.parquet", tiny_wan, tmp_path / "s")
    assert len(df) == 4 and df["video"].nunique() == 4
    assert sorted(df["prompt_id"]) == sorted(ids)
    assert sample_name("a_b") == "a_b" and sample_name("a.b") != "a_b"
    assert len({sample_name(i) for i in ids}) == 4


def test_resume_checks_every_row_and_the_seed(tiny_wan, prompts, tmp_path):
    """The resume check reads every finished row (not the first) and the settings that change a sample: --seed."""
    import json

    from densedpo.errors import DenseDPOError

    run(prompts, tiny_wan, tmp_path / "s", max_prompts=2)
    with pytest.raises(DenseDPOError, match=r"holds samples with run_seed 0, this run has 5"):
        run(prompts, tiny_wan, tmp_path / "s", seed=5)
    rows = sorted((tmp_path / "s" / "rows").glob("*.json"))
    last = json.loads(rows[-1].read_text())
    rows[-1].write_text(json.dumps({**last, "mode": "sdedit"}))  # a row of another mode, not the first one
    with pytest.raises(DenseDPOError, match=r"holds samples with mode 'sdedit', this run has 't2v'"):
        run(prompts, tiny_wan, tmp_path / "s")
    old = {k: v for k, v in last.items() if k != "name_scheme"}
    rows[-1].write_text(json.dumps(old))
    with pytest.raises(DenseDPOError, match=r"written by an older densedpo"):
        run(prompts, tiny_wan, tmp_path / "s")
