import pytest

from densedpo.segments import segment_bounds
from dpo.segments import latent_frame_span, latent_labels, num_latent_frames, row_label


def test_wan_81_frames():
    assert num_latent_frames(81, 4) == 21
    assert list(latent_frame_span(0, 4, 81)) == [0]
    assert list(latent_frame_span(1, 4, 81)) == [1, 2, 3, 4]
    assert list(latent_frame_span(20, 4, 81)) == [77, 78, 79, 80]


def test_against_the_labelers_segment_boundaries():
    """Wan 2.1: 81 frames at 16 fps, 1 s segments [0,16) [16,32) [32,48) [48,64) [64,81)."""
    segs = segment_bounds(81, 16, 1.0)
    labels = [1, -1, 0, 1, -1]
    lat = latent_labels([(s.frame_start, s.frame_end, lab) for s, lab in zip(segs, labels)], 81, 4)
    # latent k covers 4k-3..4k: latents 1-3 (1..12) in seg 0; latent 4 (13..16): 3 frames in seg 0, 1 in seg 1
    assert lat[:5] == [1, 1, 1, 1, 1]
    assert lat[5:9] == [-1, -1, -1, -1]  # 17..32: latent 8 = 29..32, 3 frames in seg 1
    assert lat[9:13] == [0, 0, 0, 0]
    assert lat[13:17] == [1, 1, 1, 1]
    assert lat[17:] == [-1, -1, -1, -1]
    assert len(lat) == 21


def test_majority_and_ties_to_the_earlier_segment():
    # r = 4, latent 1 covers 1..4; segments split it 2/2 -> the earlier one wins
    assert latent_labels([(0, 3, 1), (3, 9, -1)], 9, 4) == [1, 1, -1]
    assert latent_labels([(0, 4, 1), (4, 9, -1)], 9, 4) == [1, 1, -1]  # 3 of 4 in the first
    assert latent_labels([(0, 2, 1), (2, 9, -1)], 9, 4) == [1, -1, -1]


def test_uncovered_latents_are_ties():
    assert latent_labels([(0, 5, 1)], 13, 4) == [1, 1, 0, 0]


@pytest.mark.parametrize(
    "pref, status, value",
    [("a", "ok", 1), ("b", "ok", -1), ("tie", "ok", 0), ("a", "low_confidence", 0), (None, "request_error", 0)],
)
def test_row_label(pref, status, value):
    assert row_label(pref, status) == value


def test_latent_weights_follow_the_latent_labels():
    from dpo.segments import latent_values

    segs = [(0, 3, 1, 0.9), (3, 9, -1, 0.6)]
    assert latent_labels(segs, 9, 4) == [1, 1, -1]
    assert latent_values(segs, 9, 4, field=3, default=0.0) == [0.9, 0.9, 0.6]
    assert latent_values([(0, 5, 1, 0.7)], 13, 4, field=3, default=0.0) == [0.7, 0.7, 0.0, 0.0]


def test_segment_weight_rules():
    from types import SimpleNamespace

    from dpo.segments import segment_weight

    chat = SimpleNamespace(confidence=0.8, p_a=0.8, p_b=0.15, score_a=float("nan"), score_b=float("nan"))
    scorer = SimpleNamespace(confidence=0.7, p_a=0.7, p_b=0.2, score_a=1.5, score_b=0.25)
    human = SimpleNamespace(confidence=None, p_a=None, p_b=None)
    assert segment_weight("none", human) == 1.0
    assert segment_weight("confidence", chat) == 0.8 and segment_weight("confidence", human) is None
    assert segment_weight("margin", scorer) == 1.25 and segment_weight("margin", chat) == pytest.approx(0.65)
