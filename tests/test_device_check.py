"""Stand-ins at the real architectures and the device check that turns a lent GPU into figures.

The CPU runs the check's --small mode (the same stand-in builders, vLLM with --load-format dummy, generate, label,
train, sample), so the script cannot rot while no device is at hand; the `gpu` tests run it where CUDA is."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from app.cli import app
from densedpo.standins import PUBLISHED, vlm_parameter_count, wan_parameter_count
from tests.conftest import REPO, require_module


@pytest.mark.parametrize(("kind", "size"), [("wan", "1.3b"), ("wan", "14b"), ("vlm", "7b")])
def test_stand_ins_have_the_published_parameter_counts(kind, size):
    count = wan_parameter_count(size) if kind == "wan" else vlm_parameter_count(size)
    published = PUBLISHED[(kind, size)]
    print(f"{kind} {size}: {count:,} parameters, published {published:,} ({100 * (count / published - 1):+.3f}%)")
    assert abs(count / published - 1) < 0.02


def test_make_standin_prints_the_counts_and_writes_loadable_folders(tmp_path):
    r = CliRunner().invoke(app, ["make-standin", "wan", "--size", "1.3b", "--dry-run"])
    assert r.exit_code == 0 and "transformer: 1,418,996,800 parameters (published 1,418,996,800: +0.00%)" in r.output
    r = CliRunner().invoke(app, ["make-standin", "vlm", "--size", "small", "--out", str(tmp_path / "vlm")])
    assert r.exit_code == 0, r.output
    from labeler.servers import vllm_launch

    cmd, _, _ = vllm_launch(str(tmp_path / "vlm"), 8000, max_images=4)
    assert cmd[cmd.index("--load-format") + 1] == "dummy"  # no weights on disk: vLLM draws them
    from diffusers import DiffusionPipeline

    r = CliRunner().invoke(app, ["make-standin", "wan", "--size", "small", "--out", str(tmp_path / "wan")])
    assert r.exit_code == 0, r.output
    from safetensors import safe_open

    assert type(DiffusionPipeline.from_pretrained(tmp_path / "wan")).__name__ == "WanPipeline"
    with safe_open(tmp_path / "wan" / "transformer" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert f.get_tensor("blocks.0.ffn.net.0.proj.weight").dtype == torch.bfloat16  # stored as the real one is
    r = CliRunner().invoke(app, ["make-standin", "wan", "--size", "2b"])
    assert "--size must be one of 1.3b, 14b, small" in str(r.exception)


def run_check(tmp_path) -> dict:
    out = tmp_path / "check.json"
    r = subprocess.run([sys.executable, "benchmarks/device_check.py", "--small", "--out", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.vllm
def test_the_device_check_runs_every_stage_in_small_mode(tmp_path):
    require_module("vllm", "vllm", "bash scripts/setup.sh")
    figures = run_check(tmp_path)
    assert figures["mode"] == "small" and figures["generate"]["pairs"] == 2
    for stage, key in (("generate", "seconds_per_pair"), ("train", "seconds_per_step"), ("sample", "videos_per_s")):
        assert figures[stage][key] > 0, (stage, figures[stage])
    for layout in ("images", "video"):
        label = figures["label"][layout]
        assert label["segments_per_s"] > 0 and label["requests"] == 2 * figures["label"]["segments"]
        assert label["prompt_tokens_per_segment"] > 100  # two videos' frames and the prompt, both orders
    assert figures["train"]["steps"] == 3 and figures["paper_scale"]["label_device_hours"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_device_check_reports_gpu_memory_and_bf16_on_cuda(tmp_path):
    figures = run_check(tmp_path)
    assert figures["device"] != "CPU" and figures["train"]["precision"] == "bf16"
    for stage in ("generate", "train", "sample"):
        assert figures[stage]["peak_gpu_memory_gib"] > 0
