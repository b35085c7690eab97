"""The README's first hour, line by line as it stands there: clips -> sources -> generate -> label -> review ->
eval-labels -> train, on 3–5 s clips, with tiny models standing in for $WAN and $VLM. The review page is a
server: the test labels every segment through its API (as the page does) and stops it as Ctrl-C would."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, require_module

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def first_hour_lines() -> tuple[str, list[str]]:
    """(the variables line, the commands) of the README block after `<!-- first-hour -->`."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- first-hour -->", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [ln for ln in block.strip().splitlines() if ln.strip()]
    return lines[0], lines[1:]


def label_everything(port: int) -> int:
    """Label every segment of every queued pair through the review page's API, as its keys would."""
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            session = httpx.get(f"{base}/api/session", timeout=2).json()
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "review did not start"
            time.sleep(0.2)
    n = 0
    for index in range(session["pairs"]):
        for seg in httpx.get(f"{base}/api/pairs/{index}").json()["segments"]:
            choice = ("left", "right", "left")[seg["segment_idx"] % 3]
            r = httpx.post(
                f"{base}/api/labels", json={"index": index, "segment_idx": seg["segment_idx"], "choice": choice}
            )
            assert r.status_code == 200, r.text
            n += 1
    assert httpx.get(f"{base}/api/session").json()["finished_pairs"] == session["pairs"]
    return n


def test_the_readme_first_hour_runs_as_written(tiny_vlm, tmp_path):
    require_module("vllm", "vllm", "bash scripts/setup.sh")
    from densedpo.synthetic import render_clip
    from densedpo.tiny import make_tiny_wan
    from densedpo.video import write_video

    clips = tmp_path / "clips"
    clips.mkdir()
    for k, seconds in enumerate((3.2, 4.6)):  # 3–5 s clips, as a user's
        frames, caption = render_clip(k, int(seconds * 16), 120, 208)
        write_video(clips / f"clip{k}.mp4", frames, 16)
        (clips / f"clip{k}.txt").write_text(caption)
    wan = make_tiny_wan(tmp_path / "wan")
    env = {**os.environ, "WAN": str(wan), "VLM": str(tiny_vlm), "CLIPS": str(clips)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the `densedpo` entry point
    variables, commands = first_hour_lines()
    assert [c.split()[1] for c in commands] == [
        "sources", "generate", "generate", "label", "review", "eval-labels", "train",
    ]  # fmt: skip
    out = {}
    for command in commands:
        stage = command.split()[1]
        if stage == "review":
            port = 8090  # the README's page address
            proc = subprocess.Popen(["bash", "-c", f"{variables}; exec {command}"], cwd=tmp_path, env=env)
            try:
                out["review"] = label_everything(port)
            finally:
                proc.send_signal(signal.SIGINT)  # Ctrl-C
                proc.wait(timeout=30)
            continue
        r = subprocess.run(
            ["bash", "-c", f"{variables}; {command}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, f"{command}\n{r.stdout}\n{r.stderr}"
        out[stage if stage not in out else stage + "-run"] = " ".join((r.stdout + r.stderr).split())
    work = tmp_path / "work"
    assert re.search(r"kept │ 2\b", out["sources"]) and re.search(r"pairs to make │ 2\b", out["generate"])
    assert "pairs train keeps (> 20% decided)" in out["label"]
    assert out["review"] == 6  # two pairs of 49 frames at 16 fps: 3 segments each
    assert (work / "human.parquet").exists() and "segment accuracy" in out["eval-labels"]
    assert (work / "run" / "final").exists() and (work / "run" / "metrics.jsonl").exists()
