import numpy as np
import pandas as pd
import pytest

from densedpo.errors import DenseDPOError
from densedpo.synthetic import ARTIFACTS, inject_artifact, make_synthetic_pairs, make_synthetic_sources, render_clip
from densedpo.video import probe, read_frames, write_video


def test_write_probe_read_roundtrip(tmp_path):
    frames, _ = render_clip(1, 17, 48, 64)
    path = write_video(tmp_path / "v.mp4", frames, fps=16)
    info = probe(path)
    assert (info.num_frames, info.fps, info.height, info.width) == (17, 16.0, 48, 64)
    back = read_frames(path, [0, 8, 16])
    assert back.shape == (3, 48, 64, 3)
    assert np.abs(back.astype(int) - frames[[0, 8, 16]].astype(int)).mean() < 6  # H.264 at crf 18
    assert read_frames(path).shape[0] == 17
    import av

    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"


def test_read_past_end_and_corrupt(tmp_path):
    frames, _ = render_clip(2, 5, 32, 32)
    path = write_video(tmp_path / "v.mp4", frames, fps=8)
    with pytest.raises(DenseDPOError, match="ended before frame 9"):
        read_frames(path, [0, 9])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(DenseDPOError, match="cannot decode video"):
        probe(bad)
    with pytest.raises(DenseDPOError, match="not found"):
        probe(tmp_path / "missing.mp4")


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_artifacts_change_only_their_segment(artifact):
    frames, _ = render_clip(3, 32, 64, 64)
    out = inject_artifact(frames, artifact, 8, 16, seed=0)
    assert np.array_equal(out[:8], frames[:8]) and np.array_equal(out[16:], frames[16:])
    assert not np.array_equal(out[8:16], frames[8:16])


def test_synthetic_truth_matches_artifacts(tmp_path):
    """Against the same pairs rendered clean, each non-tie segment differs in exactly the dispreferred video.

    Lossless encoding (crf 0) keeps the encoder's rate control from spreading an artifact into other segments.
    """
    pairs_path, truth_path = make_synthetic_pairs(tmp_path / "dirty", num_pairs=3, crf=0)
    clean_path, _ = make_synthetic_pairs(tmp_path / "clean", num_pairs=3, artifacts=False, crf=0)
    pairs, truth = pd.read_parquet(pairs_path), pd.read_parquet(truth_path)
    clean = pd.read_parquet(clean_path).set_index("pair_id")
    assert len(pairs) == 3 and len(truth) == 9
    assert set(truth["preference"]) <= {"a", "b", "tie"}
    for pair_id, g in truth.groupby("pair_id"):
        assert (g["preference"] != "tie").any()
        row = pairs.set_index("pair_id").loc[pair_id]
        for side, worse_when in (("video_a", "b"), ("video_b", "a")):
            got = read_frames(pairs_path.parent / row[side]).astype(int)
            ref = read_frames(clean_path.parent / clean.loc[pair_id, side]).astype(int)
            for seg in g.itertuples():
                diff = np.abs(got[seg.frame_start : seg.frame_end] - ref[seg.frame_start : seg.frame_end]).mean()
                assert (diff > 1.0) == (seg.preference == worse_when), (pair_id, side, seg.segment_idx, diff)


def test_sources(tmp_path):
    path = make_synthetic_sources(tmp_path, num_sources=2, num_frames=9)
    df = pd.read_parquet(path)
    assert list(df.columns) == ["source_id", "video", "prompt"] and probe(tmp_path / df["video"][0]).num_frames == 9


def test_identical_frames_write_identical_bytes(tmp_path):
    """write_video is a function of its frames and settings: 16 writes of the same frames, one file. (libx264's
    AVX-512 code wrote a different file about 1 time in 5; write_video keeps x264 off it.)"""
    import hashlib

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (1, 240, 416, 3), dtype=np.uint8)
    frames = np.concatenate([np.roll(base, 3 * i, axis=2) for i in range(25)])
    frames = (frames // 2 + rng.integers(0, 120, frames.shape, dtype=np.uint8) // 2).astype(np.uint8)
    small, _ = render_clip(1, 17, 64, 64)
    for name, video in (("big", frames), ("small", small)):
        digests = set()
        for i in range(16):
            write_video(tmp_path / f"{name}{i}.mp4", video, 16.0)
            digests.add(hashlib.sha256((tmp_path / f"{name}{i}.mp4").read_bytes()).hexdigest())
        assert len(digests) == 1, f"{name}: {len(digests)} different files of 16 writes of the same frames"
