import pytest

from labeler.segments import Segment, sample_frame_indices, segment_bounds


def bounds(n, fps, sec):
    return [(s.frame_start, s.frame_end) for s in segment_bounds(n, fps, sec)]


@pytest.mark.parametrize(
    "n, fps, sec, expected",
    [
        (81, 16, 1.0, [(0, 16), (16, 32), (32, 48), (48, 64), (64, 81)]),  # Wan 2.1: 1-frame tail joins the last
        (121, 24, 1.0, [(0, 24), (24, 48), (48, 72), (72, 96), (96, 121)]),  # paper: 5 s at 24 fps
        (49, 16, 1.0, [(0, 16), (16, 32), (32, 49)]),
        (56, 16, 1.0, [(0, 16), (16, 32), (32, 48), (48, 56)]),  # an 8-frame tail is half a segment: kept
        (10, 16, 1.0, [(0, 10)]),  # shorter than a segment: one segment
        (30, 12, 0.5, [(0, 6), (6, 12), (12, 18), (18, 24), (24, 30)]),
        (
            30,
            10,
            0.25,
            [
                (0, 2),
                (2, 5),
                (5, 8),
                (8, 10),
                (10, 12),
                (12, 15),
                (15, 18),
                (18, 20),
                (20, 22),
                (22, 25),
                (25, 28),
                (28, 30),
            ],
        ),  # 2.5 frames per segment: rounded, no drift
    ],
)
def test_segment_bounds(n, fps, sec, expected):
    assert bounds(n, fps, sec) == expected


@pytest.mark.parametrize("n, fps, sec", [(81, 16, 1.0), (97, 24, 0.5), (13, 8, 2.0), (200, 29.97, 1.0)])
def test_segments_tile_the_clip(n, fps, sec):
    segs = segment_bounds(n, fps, sec)
    assert segs[0].frame_start == 0 and segs[-1].frame_end == n
    for prev, nxt in zip(segs, segs[1:]):
        assert prev.frame_end == nxt.frame_start
    assert [s.segment_idx for s in segs] == list(range(len(segs)))
    assert all(s.t_start_s == pytest.approx(s.frame_start / fps) for s in segs)


def test_sample_frame_indices():
    seg = Segment(1, 16, 32, 1.0, 2.0)
    assert sample_frame_indices(seg, 16, 8) == [16, 18, 20, 22, 24, 26, 28, 30]
    assert sample_frame_indices(seg, 16, 16) == list(range(16, 32))
    assert sample_frame_indices(seg, 16, 100) == list(range(16, 32))
    tail = Segment(4, 64, 81, 4.0, 81 / 16)
    assert sample_frame_indices(tail, 16, 8) == [64, 66, 68, 70, 72, 74, 76, 78, 80]
    assert sample_frame_indices(Segment(0, 0, 24, 0, 1), 24, 8) == [0, 3, 6, 9, 12, 15, 18, 21]


def test_bad_arguments():
    with pytest.raises(ValueError):
        segment_bounds(0, 16, 1)
    with pytest.raises(ValueError):
        segment_bounds(10, 16, 0)
