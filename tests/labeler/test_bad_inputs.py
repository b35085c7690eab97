"""A corpus of bad inputs: each ends in one clear line naming the problem (exit 2), never a traceback."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from densedpo.synthetic import render_clip
from densedpo.video import write_video
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    frames, _ = render_clip(0, 33, 32, 32)
    write_video(d / "a.mp4", frames, 16)
    write_video(d / "b.mp4", frames[::-1].copy(), 16)
    write_video(d / "short.mp4", frames[:25], 16)
    write_video(d / "fps8.mp4", frames, 8)
    write_video(d / "big.mp4", np.repeat(np.repeat(frames, 2, 1), 2, 2), 16)
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 2000)
    return d


def table(d, name, rows=None, **cols):
    rows = rows or [{"pair_id": "p0", "prompt": "a ball", "video_a": "a.mp4", "video_b": "b.mp4"}]
    df = pd.DataFrame(rows)
    for k, v in cols.items():
        df[k] = v
    path = d / name
    df.to_parquet(path)
    return path


def pair(pid="p0", a="a.mp4", b="b.mp4"):
    return {"pair_id": pid, "prompt": "a ball", "video_a": a, "video_b": b}


CASES = {
    "missing table": (lambda d: d / "nope.parquet", "pairs table not found"),
    "missing column": (lambda d: _drop(d), "lacks required column(s) video_b"),
    "duplicate pair_id": (lambda d: table(d, "t2.parquet", [pair(), pair()]), "duplicate key (pair_id='p0') at row 1"),
    "empty table": (lambda d: _empty(d), "is empty"),
    "missing video": (
        lambda d: table(d, "t4.parquet", [pair(b="gone.mp4")]),
        "row 0 (pair_id='p0'), column video_b: video not found",
    ),  # noqa: E501
    "corrupt video": (lambda d: table(d, "t5.parquet", [pair(a="corrupt.mp4")]), "column video_a: cannot decode video"),
    "fps mismatch": (lambda d: table(d, "t6.parquet", [pair(b="fps8.mp4")]), "at 8 fps"),
    "size mismatch": (lambda d: table(d, "t7.parquet", [pair(b="big.mp4")]), "64x64"),
    "frame mismatch": (lambda d: table(d, "t8.parquet", [pair(b="short.mp4")]), "--trim-to-shortest"),
    "second row bad": (lambda d: table(d, "t9.parquet", [pair(), pair("p1", b="gone.mp4")]), "row 1 (pair_id='p1')"),
}


def _drop(d):
    path = d / "t1.parquet"
    pd.DataFrame([pair()]).drop(columns=["video_b"]).to_parquet(path)
    return path


def _empty(d):
    path = d / "t3.parquet"
    pd.DataFrame([pair()]).iloc[:0].to_parquet(path)
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_pairs_give_one_line(corpus, case):
    """The real command (not --dry-run) on an output that already holds an earlier run: nothing of it is lost."""
    make, fragment = CASES[case]
    path = make(corpus)
    out = corpus / f"labels-{case.replace(' ', '_')}.parquet"
    earlier = {
        out: b"earlier table",
        out.with_name(out.name + ".journal.jsonl"): b'{"fingerprint": {}}\n',
        out.with_name(out.name + ".run.yaml"): b"earlier: run\n",
    }
    for p, data in earlier.items():
        p.write_bytes(data)
    r = run_cli("label", "--pairs", path, "--out", out, "--server", "http://127.0.0.1:9")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert fragment in lines[0]
    assert "Traceback" not in r.stderr
    assert {p: p.read_bytes() for p in earlier} == earlier


def test_trim_to_shortest_accepts_frame_mismatch(corpus):
    path = table(corpus, "trim.parquet", [pair(b="short.mp4")])
    r = run_cli("label", "--pairs", path, "--server", "http://127.0.0.1:9", "--dry-run", "--trim-to-shortest")
    assert r.returncode == 0, r.stderr
    assert re.search(r"segments\s*│\s*2\b", r.stdout), r.stdout  # 25 frames at 16 fps: 2 segments


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--min-confidence", "2"], "--min-confidence must lie in [0, 1], got 2.0"),
        (["--segment-seconds", "0"], "--segment-seconds must be a positive finite number, got 0.0"),
        (["--sample-fps", "nan"], "--sample-fps must be a positive finite number, got nan"),
        (["--prompt", "nope"], "--prompt 'nope' not found; use one of segment_preference_v1"),
    ],
)
def test_bad_flags(corpus, args, fragment):
    path = table(corpus, "ok.parquet")
    r = run_cli("label", "--pairs", path, "--server", "http://127.0.0.1:9", "--show-prompt", *args)
    assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_unknown_config_key(corpus, tmp_path):
    cfg = tmp_path / "label.yaml"
    cfg.write_text("sample_fps: 4\nsegment_secs: 1\n")
    r = run_cli("label", "--pairs", table(corpus, "ok.parquet"), "--config", cfg, "--dry-run")
    assert r.returncode == 2 and "unknown config key(s) segment_secs; valid keys:" in r.stderr


def test_no_server_answers(corpus, tmp_path):
    r = run_cli(
        "label",
        "--pairs",
        table(corpus, "ok.parquet"),
        "--out",
        tmp_path / "l.parquet",
        "--server",
        "http://127.0.0.1:9",
    )
    assert r.returncode == 2, r.stderr
    assert "no VLM server answered at http://127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr


def test_dry_run_and_show_prompt(synthetic):
    pairs_path, _ = synthetic
    r = run_cli("label", "--pairs", pairs_path, "--server", "http://127.0.0.1:9", "--dry-run")
    assert r.returncode == 0 and re.search(r"requests\s*│\s*18\s*│", r.stdout), r.stdout + r.stderr
    r = run_cli("label", "--pairs", pairs_path, "--server", "http://127.0.0.1:9", "--show-prompt")
    assert r.returncode == 0 and "<frame 7>" in r.stdout and "<frame 8>" not in r.stdout
    assert "structurally similar" in r.stdout and "move over a" in r.stdout  # the caption is in the prompt
