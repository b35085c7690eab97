"""`densedpo sources` on real files: rendered clips written as H.264, probed, measured and filtered."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from densedpo.synthetic import render_clip
from densedpo.video import read_frames, write_video
from sources.collect import collect, parse_span
from sources.curate import SourcesConfig, run_sources
from tests.conftest import require_module, run_cli

FPS = 16.0


def clip(path, seconds, seed=0, size=(48, 64), still=False, caption=None):
    frames, text = render_clip(seed, int(round(seconds * FPS)), *size)
    if still:
        frames = np.repeat(frames[:1], len(frames), axis=0)
    write_video(path, frames, FPS)
    if caption is not False:
        path.with_suffix(".txt").write_text(caption or text)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Eight files: two good clips (3.5 s and 4.5 s), a copy of one, a 2 s clip, a tiny one, a still one, one
    without a caption, and a corrupt file."""
    d = tmp_path_factory.mktemp("clips")
    clip(d / "walk.mp4", 3.5, seed=1)
    (d / "sub").mkdir()
    clip(d / "sub" / "run.mp4", 4.5, seed=2)
    shutil.copy(d / "walk.mp4", d / "x-walk-copy.mp4")  # sorts after walk.mp4: the copy is the duplicate
    (d / "x-walk-copy.txt").write_text("the same clip again")
    clip(d / "short.mp4", 2.0, seed=3)
    clip(d / "tiny.mp4", 4.0, seed=4, size=(16, 16))
    clip(d / "still.mp4", 4.0, seed=5, still=True)
    clip(d / "nocap.mp4", 4.0, seed=6, caption=False)
    (d / "broken.mp4").write_bytes(b"\x00" * 300)
    (d / "broken.txt").write_text("x")
    return d


def test_a_folder_is_probed_filtered_and_reported(folder, tmp_path):
    out = tmp_path / "sources.parquet"
    r = run_cli(
        "sources", "--from", folder, "--out", out, "--min-seconds", "3", "--min-side", "32", "--min-motion", "0.05",
        "--quiet",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    kept = pd.read_parquet(out)
    assert sorted(kept["source_id"]) == ["sub-run", "walk"]
    assert set(kept["caption_source"]) == {"sidecar"} and (kept["prompt"].str.len() > 0).all()
    walk = kept.set_index("source_id").loc["walk"]
    assert walk["video"] == str(folder / "walk.mp4")  # not under the table's folder: absolute
    assert walk["duration_s"] == pytest.approx(3.5, abs=0.07) and (walk["height"], walk["width"]) == (48, 64)
    report = pd.read_parquet(tmp_path / "sources.report.parquet").set_index("source_id")
    assert report["reason"].fillna("kept").to_dict() == {
        "broken": "unreadable",
        "nocap": "no_caption",
        "short": "too_short",
        "still": "low_motion",
        "sub-run": "kept",
        "tiny": "too_small",
        "walk": "kept",
        "x-walk-copy": "duplicate",
    }
    assert report.loc["still", "motion_over_threshold"] < 0.02 and report.loc["walk", "motion_over_threshold"] > 0.05
    assert report.loc["x-walk-copy", "detail"] == "same content as walk"
    text = " ".join(r.stdout.split())
    for reason, n in (("kept", 2), ("duplicate", 1), ("too_short", 1), ("low_motion", 1)):
        assert re.search(rf"{reason} │ {n}\b", text), text
    # the table is what generate reads: its dry run sees both clips and their lengths
    g = run_cli(
        "generate", "--sources", out, "--model", "m", "--dry-run", "--num-frames", "49", "--out", tmp_path / "p"
    )
    assert g.returncode == 0 and re.search(r"pairs to make\s*│\s*2\b", g.stdout), g.stdout + g.stderr


def test_hidden_files_and_folders_are_not_clips(tmp_path):
    """A collection copied from a Mac (`._walk.mp4` resource forks), a `.cache/` copy, Label Studio's blind links:
    not candidates (the old code listed all four)."""
    d = tmp_path / "clips"
    d.mkdir()
    clip(d / "walk.mp4", 1.0, seed=1)
    (d / "._walk.mp4").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 200)  # AppleDouble header, not a video
    for hidden in (".cache", ".densedpo-blind"):
        (d / hidden).mkdir()
        shutil.copy(d / "walk.mp4", d / hidden / "walk.mp4")
    found = collect(d)
    assert list(found["source_id"]) == ["walk"] and found["video"].tolist() == [str((d / "walk.mp4").resolve())]


def test_nothing_kept_is_one_line_naming_the_largest_reason(folder, tmp_path):
    r = run_cli("sources", "--from", folder, "--out", tmp_path / "s.parquet", "--quiet")  # default: 5.06 s
    assert r.returncode == 2
    line = " ".join(r.stderr.split())
    assert line.startswith("error: no clip kept of 8: 1 unreadable, 7 too_short."), line
    assert "Try a lower --min-seconds (now 5.0625" in line, line
    assert not (tmp_path / "s.parquet").exists() and (tmp_path / "s.report.parquet").exists()


def test_manifest_layouts_are_read_without_flags(tmp_path):
    """Hugging Face metadata.jsonl (file_name, text), OpenVid's CSV (video, caption, scores) and Panda-70M's CSV
    (videoID without extension, timestamp and caption lists: one clip per timestamp)."""
    clip(tmp_path / "a.mp4", 6.0, seed=1, caption=False)
    clip(tmp_path / "b.mp4", 4.0, seed=2, caption=False)
    (tmp_path / "metadata.jsonl").write_text(
        "\n".join(json.dumps({"file_name": f, "text": t}) for f, t in (("a.mp4", "a dog"), ("b.mp4", "a cat")))
    )
    hf = collect(tmp_path / "metadata.jsonl")
    assert list(hf["caption"]) == ["a dog", "a cat"] and hf["video"].iloc[0] == str(tmp_path / "a.mp4")
    pd.DataFrame({"video": ["a.mp4"], "caption": ["a dog runs"], "aesthetic score": [5.1], "seconds": [6]}).to_csv(
        tmp_path / "openvid.csv", index=False
    )
    assert collect(tmp_path / "openvid.csv")[["source_id", "caption"]].values.tolist() == [["a", "a dog runs"]]
    pd.DataFrame(
        {
            "videoID": ["a"],
            "url": ["https://www.youtube.com/watch?v=a"],
            "timestamp": ["[['0:00:00.000', '0:00:03.500'], ['0:00:03.500', '0:00:06.000']]"],
            "caption": ["['a dog sits.', 'a dog runs.']"],
        }
    ).to_csv(tmp_path / "panda.csv", index=False)
    panda = collect(tmp_path / "panda.csv")
    assert panda[["source_id", "caption", "start_s", "end_s"]].values.tolist() == [
        ["a-0", "a dog sits.", 0.0, 3.5],
        ["a-1", "a dog runs.", 3.5, 6.0],
    ]
    result = run_sources(SourcesConfig(tmp_path / "panda.csv", tmp_path / "s.parquet", min_seconds=2.4), progress=False)
    assert list(result.kept["source_id"]) == ["a-0", "a-1"]
    assert result.kept["duration_s"].tolist() == pytest.approx([3.5, 2.5], abs=0.07)
    assert parse_span([5, 7.25]) == (5.0, 7.25)
    from densedpo.errors import DenseDPOError

    with pytest.raises(DenseDPOError, match=r"timestamp \['soon', '0:00:02'\]: write \[start, end\]"):
        parse_span(["soon", "0:00:02"])


def test_generate_reads_a_clip_from_its_span(tmp_path):
    """A source with start_s / end_s: generate's frames are the file's frames from start_s on, never past end_s."""
    from generation.engine import GenerateConfig, SourceUnusable, load_clip

    clip(tmp_path / "a.mp4", 6.0, seed=1)
    cfg = GenerateConfig(sources=tmp_path / "s.parquet", model="m", num_frames=17, fps=FPS, height=48, width=64)
    got = load_clip(tmp_path / "a.mp4", cfg, start_s=3.5, end_s=6.0)
    want = read_frames(tmp_path / "a.mp4", list(range(56, 73)))
    assert np.array_equal(got, want)
    with pytest.raises(SourceUnusable, match="too short"):
        load_clip(tmp_path / "a.mp4", cfg, start_s=3.5, end_s=4.5)


def test_split_scenes_cuts_a_hard_cut(tmp_path):
    require_module("scenedetect", "scenedetect", "bash scripts/setup.sh (pip install --no-deps scenedetect)")
    one, _ = render_clip(1, 64, 48, 64)
    two, _ = render_clip(9, 64, 48, 64)
    write_video(tmp_path / "long.mp4", np.concatenate([one, 255 - two]), FPS)
    (tmp_path / "long.txt").write_text("two shots")
    result = run_sources(
        SourcesConfig(tmp_path, tmp_path / "s.parquet", min_seconds=3, split_scenes=True), progress=False
    )
    spans = result.kept[["source_id", "start_s", "end_s"]].values.tolist()
    assert [s for s, *_ in spans] == ["long-s0", "long-s1"] and spans[0][2] == pytest.approx(4.0, abs=0.07)


@pytest.mark.vllm
def test_vlm_captions_and_filter_through_real_vllm_are_journaled_and_never_asked_twice(vllm_server, folder, tmp_path):
    """--caption writes the caption of the clip without one; --filter-prompt dynamics asks each kept clip yes/no
    (constrained; p(yes) from logprobs) and drops the no's; a rerun asks nothing (the journal answers)."""
    from tests.labeler.test_vllm_integration import vllm_requests

    out = tmp_path / "sources.parquet"
    args = [
        "sources",
        "--from",
        folder,
        "--out",
        out,
        "--min-seconds",
        "3",
        "--min-side",
        "32",
        "--server",
        vllm_server,
    ]
    before = vllm_requests(vllm_server)
    r = run_cli(*args, "--caption", "--filter-prompt", "dynamics", "--min-filter-p", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    asked = vllm_requests(vllm_server) - before
    report = pd.read_parquet(tmp_path / "sources.report.parquet").set_index("source_id")
    nocap = report.loc["nocap"]
    assert nocap["caption_source"] == "vlm" and len(nocap["caption"]) > 0 and pd.isna(nocap["reason"])
    kept = pd.read_parquet(out).set_index("source_id")
    assert set(kept.index) == {"walk", "sub-run", "still", "nocap"}  # --min-filter-p 0 keeps every answer
    assert kept["filter_answer"].isin(["yes", "no"]).all() and kept["filter_p"].between(0, 1).all()
    assert (kept["filter_prompt"].str.startswith("dynamics_v1@")).all()
    assert asked == 1 + 4  # one caption, four filter questions
    lines = (tmp_path / "sources.vlm.jsonl").read_text().splitlines()
    assert len(lines) == 5
    r = run_cli(*args, "--caption", "--filter-prompt", "dynamics", "--min-filter-p", "0.999999", "--quiet")
    assert r.returncode == 2 and "vlm_filter" in r.stderr  # the tiny random VLM is never that sure: none kept
    assert vllm_requests(vllm_server) - before == asked  # all journaled: nothing asked again
    report = pd.read_parquet(tmp_path / "sources.report.parquet").set_index("source_id")
    strict = report[report["filter_p"].notna()]
    assert ((strict["reason"] == "vlm_filter") == (strict["filter_p"] < 0.999999)).all()


@pytest.mark.vllm
def test_vlm_questions_through_an_openai_compatible_endpoint(vllm_server, tiny_vlm, folder, tmp_path):
    """--api openai: only fields the OpenAI API defines (a strict proxy in front of vLLM refuses anything else),
    the yes/no constrained by response_format, p(yes) from the logprobs at the JSON answer; the key from the
    environment."""
    from tests.openai_proxy import OpenAIProxy

    out = tmp_path / "sources.parquet"
    with OpenAIProxy(vllm_server, "sk-test", logprobs=True) as proxy:
        r = run_cli(
            "sources", "--from", folder, "--out", out, "--min-seconds", "3", "--min-side", "32", "--caption",
            "--filter-prompt", "dynamics", "--min-filter-p", "0", "--api", "openai", "--server", proxy.url,
            "--model", tiny_vlm, "--api-key-env", "SOURCES_TEST_KEY", "--quiet",
            env={**os.environ, "SOURCES_TEST_KEY": "sk-test"},
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert proxy.refused == [] and sum(proxy.counts.values()) == 5  # one caption, four yes/no questions
    kept = pd.read_parquet(out)
    assert kept["filter_answer"].isin(["yes", "no"]).all() and kept["filter_p"].between(0, 1).all()
    assert ((kept["filter_p"] >= 0.5) == (kept["filter_answer"] == "yes")).all()
