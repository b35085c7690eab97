"""`densedpo rounds`: two rounds end to end with the tiny models (a real vLLM scorer as the judge), killed with
SIGKILL inside round 2's labeling and rerun: nothing finished is redone, every round's figures are there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from app.cli import app
from densedpo.errors import DenseDPOError
from densedpo.synthetic import make_synthetic_sources
from tests.conftest import REPO

SMALL = {"steps": 6, "guidance": 4.0, "num_frames": 33, "height": 32, "width": 32, "fps": 16.0}


def rounds_yaml(root: Path, judge_url: str, **over) -> Path:
    from densedpo.tiny import make_tiny_wan

    wan = root / "wan"
    if not wan.exists():
        make_tiny_wan(wan)
    sources = make_synthetic_sources(root / "src", num_sources=8, num_frames=40, height=32, width=32)
    prompts = root / "prompts.txt"
    prompts.write_text("a red circle bounces\na blue square slides left\n")
    config = {
        "model": str(wan),
        "sources": str(sources),
        "out": str(root / "rounds"),
        "rounds": 2,
        "sources_per_round": 4,
        "generate": SMALL,
        # a reward model scores each video's segment: decided on noise videos too (the tiny chat judge calls them ties)
        "label": {"judge": "score", "server": [judge_url], "min_confidence": 0.0, "max_rps": 4.0},
        "train": {
            "max_steps": 4,
            "warmup_steps": 1,
            "lr": 1e-3,
            "lora_rank": 4,
            "batch_size": 2,
            "val_fraction": 0.0,
            "eval_every": 1000,
            "save_every": 2,
            "log_every": 1,
        },  # fmt: skip
        "sample": {"prompts": str(prompts), "seeds_per_prompt": 2, **{k: v for k, v in SMALL.items()}},
        "evaluate": {"bootstrap": 100},
        **over,
    }
    path = root / "rounds.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def journal_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.vllm
def test_two_rounds_survive_a_kill_inside_round_two_labeling(pooling_server, tmp_path):
    config = rounds_yaml(tmp_path, pooling_server)
    out = tmp_path / "rounds"
    cmd = [sys.executable, "-m", "app.cli", "rounds", "--config", str(config)]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    journal = out / "round-2" / "labels.parquet.journal.jsonl"
    deadline = time.monotonic() + 400
    while journal_lines(journal) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stages = json.loads((out / "round-2" / "stages.json").read_text())
    assert list(stages) == ["sources", "generate"]  # killed inside labeling: label not finished
    round_1 = (out / "round-1" / "stages.json").read_bytes()
    lora_1 = (out / "round-1" / "train" / "final" / "pytorch_lora_weights.safetensors").stat().st_mtime_ns
    pairs_2 = (out / "round-2" / "pairs" / "pairs.parquet").stat().st_mtime_ns
    asked_before = journal_lines(journal)

    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # nothing finished was redone: round 1 untouched, round 2's pairs not regenerated, its answers not re-asked
    assert (out / "round-1" / "stages.json").read_bytes() == round_1
    assert (out / "round-1" / "train" / "final" / "pytorch_lora_weights.safetensors").stat().st_mtime_ns == lora_1
    assert (out / "round-2" / "pairs" / "pairs.parquet").stat().st_mtime_ns == pairs_2
    labels_2 = pd.read_parquet(out / "round-2" / "labels.parquet")
    # the journal: its header, then one line per video segment's answer, each asked once (none again after the kill)
    assert journal_lines(journal) == 1 + 2 * len(labels_2) > asked_before >= 3
    # round 2 made its pairs with round 1's LoRA and trained from it
    pairs = pd.read_parquet(out / "round-2" / "pairs" / "pairs.parquet")
    stages = json.loads((out / "round-2" / "stages.json").read_text())
    assert list(stages) == ["sources", "generate", "label", "train", "sample", "evaluate"]
    assert pairs["lora_sha256"].notna().all() and stages["generate"]["lora_sha256"] == pairs["lora_sha256"].iloc[0]
    assert stages["train"]["init_lora"].endswith("round-1/train/final") and stages["train"]["reference"] == "base"
    first = pd.read_parquet(out / "round-1" / "sources.parquet")["source_id"]
    second = pd.read_parquet(out / "round-2" / "sources.parquet")["source_id"]
    assert len(first) == len(second) == 4 and not set(first) & set(second)  # fresh clips each round
    report = json.loads((out / "report.json").read_text())
    r1, r2 = report["rounds"]
    for r in (r1, r2):
        for name in ("net_win_vs_base", "dynamic_degree", "label_coverage"):
            fig = r[name]
            assert fig["ci"][0] <= fig["value"] <= fig["ci"][1], (r["round"], name, fig)
    assert r1["net_win_vs_previous"] is None and r2["net_win_vs_previous"]["value"] is not None
    assert r2["label_coverage"]["value"] == 1.0  # min_confidence 0, margin 0: every segment decided
    for name in ("net_win_vs_base", "net_win_vs_previous", "dynamic_degree", "label_coverage"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    assert "| 2 |" in (out / "report.md").read_text()


def test_bad_rounds_configs_are_one_line_errors(tmp_path):
    config = rounds_yaml(tmp_path, "http://127.0.0.1:9")
    data = yaml.safe_load(config.read_text())
    cases = [
        ({"rounds": 3}, "has 8 clips; 3 rounds of 4 fresh clips need 12: add clips, lower sources_per_round"),
        ({"generate": {"out": "x"}}, "generate.out is set by rounds for each round; remove it"),
        ({"train": {"bogus": 1}}, "train: unknown key(s) bogus; valid keys: adam_beta1"),
        ({"colour": "red"}, "unknown config key(s) colour"),
        ({"label": {}}, "label: name the judge"),
    ]
    for change, message in cases:
        config.write_text(yaml.safe_dump({**data, **change}))
        r = CliRunner().invoke(app, ["rounds", "--config", str(config), "--dry-run"])
        assert isinstance(r.exception, DenseDPOError) and message in str(r.exception), (change, r.output)
    config.write_text(yaml.safe_dump(data))
    r = CliRunner().invoke(app, ["rounds", "--config", str(config), "--dry-run"])
    assert r.exit_code == 0 and "round 2: sources rows 4–7; finished: nothing" in " ".join(r.output.split())
