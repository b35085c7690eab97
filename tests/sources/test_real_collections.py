"""Real collections that broke `sources`: each clip ends kept or dropped with its reason, the run ends with its
report and exit 0 (each case failed, or kept the wrong clip, before its fix)."""

from __future__ import annotations

import shutil
from fractions import Fraction

import pandas as pd

from densedpo.synthetic import render_clip
from sources.collect import collect
from sources.curate import SourcesConfig, run_sources
from tests.conftest import run_cli
from tests.sources.test_sources import clip


def over_reporting_webm(path, frames: int, claimed_last_pts: int):
    """A VP8 webm whose last frame's timestamp lies far ahead: OpenCV estimates its frame count from the duration
    (webm states none) and over-reports it, as real webm/mkv files often do."""
    import av

    video, _ = render_clip(9, frames, 48, 64)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libvpx", rate=Fraction(16))
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i, f in enumerate(video):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts, frame.time_base = (i if i < frames - 1 else claimed_last_pts), Fraction(1, 16)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_a_real_collection_ends_with_a_report_and_every_clip_accounted_for(tmp_path):
    d = tmp_path / "clips"
    d.mkdir()
    clip(d / "clip.mp4", 3.5, seed=1, caption="a cat jumps")
    clip(d / "clip.mov", 3.5, seed=2, caption="a cat jumps")  # the same id `clip` once (and one sidecar clip.txt)
    (d / "a").mkdir()
    clip(d / "a" / "b.mp4", 3.5, seed=3, caption="a bird flies")
    clip(d / "a-b.mp4", 3.5, seed=4, caption="a fish swims")  # `a/b` and `a-b` once shared `a-b`
    clip(d / "music.mp4", 3.5, seed=5, caption="[Music] a man plays guitar")
    over_reporting_webm(d / "long.webm", frames=33, claimed_last_pts=80)  # says 81 frames (5.06 s), holds 33
    (d / "long.txt").write_text("a red ball")
    over_reporting_webm(d / "enough.webm", frames=60, claimed_last_pts=120)  # holds 60 frames: 3.75 s is enough
    (d / "enough.txt").write_text("a blue ball")
    out = tmp_path / "sources.parquet"
    r = run_cli("sources", "--from", d, "--out", out, "--min-seconds", "3", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    report = pd.read_parquet(tmp_path / "sources.report.parquet")
    assert report["source_id"].is_unique and len(report) == 7
    by_video = report.set_index(report["video"].map(lambda v: v.rsplit("/", 1)[-1]))
    kept = set(by_video.index[by_video["reason"].isna()])
    assert {"clip.mp4", "clip.mov", "b.mp4", "a-b.mp4", "music.mp4", "enough.webm"} <= kept
    assert by_video.at["music.mp4", "caption"] == "[Music] a man plays guitar"
    assert by_video.at["long.webm", "reason"] == "too_short"
    assert "the container says 81 frames, 33 decode" in by_video.at["long.webm", "detail"]
    assert by_video.at["enough.webm", "duration_s"] == 3.75
    sources = pd.read_parquet(out)
    assert sources["source_id"].is_unique and len(sources) == 6
    assert sorted(i for i in sources["source_id"] if i.startswith("clip")) == sorted(
        report["source_id"][report["video"].str.contains("/clip\\.")]
    )


def test_a_captioned_copy_is_kept_over_an_uncaptioned_one(tmp_path):
    d = tmp_path / "clips"
    d.mkdir()
    clip(d / "a.mp4", 3.5, seed=1, caption=False)  # sorts first, no caption
    shutil.copy(d / "a.mp4", d / "b.mp4")
    (d / "b.txt").write_text("a dog runs")
    result = run_sources(SourcesConfig(d, tmp_path / "s.parquet", min_seconds=3), progress=False)
    assert list(result.kept["source_id"]) == ["b"] and list(result.kept["prompt"]) == ["a dog runs"]
    why = result.report.set_index("source_id")
    assert why.at["a", "reason"] == "duplicate" and why.at["a", "detail"] == "same content as b"


def test_manifests_with_long_ids_bracket_captions_and_flat_timestamps(tmp_path):
    clip(tmp_path / "v.mp4", 6.0, seed=1, caption=False)
    prefix = "openvid_" + "x" * 100
    for name in ("clip1", "clip2"):
        shutil.copy(tmp_path / "v.mp4", tmp_path / f"{prefix}_{name}.mp4")
    pd.DataFrame(
        {
            "video": [f"{prefix}_clip1.mp4", f"{prefix}_clip2.mp4", "v.mp4"],
            "caption": ["[Music] a man plays guitar", "a plain caption", "[Applause] people clap"],
        }
    ).to_csv(tmp_path / "openvid.csv", index=False)
    c = collect(tmp_path / "openvid.csv")
    assert list(c["caption"]) == ["[Music] a man plays guitar", "a plain caption", "[Applause] people clap"]
    assert c["source_id"].is_unique
    pd.DataFrame(
        {"videoID": ["v", "v"], "timestamp": ["['1', '4']", "[[0, 2], [2, 5]]"], "caption": ["x", "y"]}
    ).to_csv(tmp_path / "panda.csv", index=False)
    spans = collect(tmp_path / "panda.csv")[["start_s", "end_s"]].values.tolist()
    assert spans == [[1.0, 4.0], [0.0, 2.0], [2.0, 5.0]]  # ['1', '4'] is one clip, not (1, 4) read per character


def test_the_vlm_journal_key_holds_the_model_caption_and_clip(tmp_path):
    from sources.vlm import Question, load_clip_prompt

    prompt = load_clip_prompt("dynamics")
    q = Question("clip", prompt, "v.mp4", 16.0, 0.0, 3.0, "a dog", "digest1", "model-a")
    other = [
        Question("clip", prompt, "v.mp4", 16.0, 0.0, 3.0, "a dog", "digest1", "model-b"),
        Question("clip", prompt, "v.mp4", 16.0, 0.0, 3.0, "a cat", "digest1", "model-a"),
        Question("clip", prompt, "w.mp4", 16.0, 0.0, 3.0, "a dog", "digest2", "model-a"),
    ]
    assert len({q.key, *(o.key for o in other)}) == 4
    assert q.key == Question("clip", prompt, "moved.mp4", 16.0, 0.0, 3.0, "a dog", "digest1", "model-a").key


def test_unique_ids_number_a_clip_listed_twice():
    from sources.collect import unique_ids

    ids = unique_ids(["a", "a", "a", "b"], ["x.mp4", "x.mp4", "y.mp4", "b.mp4"])
    assert len(set(ids)) == 4 and ids[3] == "b" and ids[1] == ids[0] + "~2"
    many = unique_ids([f"c{i % 500}" for i in range(2_000)], [str(i) for i in range(2_000)])
    assert len(set(many)) == 2_000
