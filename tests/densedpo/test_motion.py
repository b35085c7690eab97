"""densedpo.motion: VBench's dynamic-degree rule by hand, with Farnebäck and (code path) RAFT."""

from __future__ import annotations

import numpy as np
import pytest

from densedpo.motion import dynamic_rule, top_flow, vbench_stride, video_motion


def moving_square(num_frames: int, size: int, step_px: float, seed: int = 0) -> np.ndarray:
    """A textured square (side size/2) moving by step_px per frame (right, then back) over a static background."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    import cv2

    background = cv2.GaussianBlur(background, (5, 5), 0)
    side = size // 2
    patch = cv2.GaussianBlur(rng.integers(0, 255, (side, side, 3), dtype=np.uint8), (3, 3), 0)
    frames = np.repeat(background[None], num_frames, axis=0)
    for t in range(num_frames):
        travel, span = t * step_px, size - side  # back and forth: any number of frames stays in the picture
        x = int(round(travel % (2 * span) if travel % (2 * span) <= span else 2 * span - travel % (2 * span)))
        frames[t, size // 4 : size // 4 + side, x : x + side] = patch
    return frames


def test_the_count_rule_for_wan_clips_by_hand():
    # 81 frames at 16 fps: every 2nd frame kept -> 41 frames, 40 pairs; round(4 * 41 / 16) = round(10.25) = 10
    assert vbench_stride(16.0) == 2 and len(range(0, 81, 2)) == 41
    threshold, needed = dynamic_rule(16.0, 41, 480, 832)
    assert needed == 10 and threshold == pytest.approx(6 * 480 / 256)
    # 24 fps: every 3rd frame; below 8 fps every frame and a threshold scaled up by 8 / fps
    assert vbench_stride(24.0) == 3 and vbench_stride(8.0) == 1 and vbench_stride(4.0) == 1
    assert dynamic_rule(4.0, 20, 256, 256) == (pytest.approx(2 * 6.0), 5)


def test_top_five_percent_of_the_flow():
    flow = np.zeros((20, 20, 2))
    flow[:2, :10, 0] = 3.0  # 20 of 400 pixels (5%) move 3 px, the rest not at all
    assert top_flow(flow) == pytest.approx(3.0)
    flow[0, 0] = (3.0, 4.0)  # one moves 5 px: the top 20 average (5 + 19 * 3) / 20
    assert top_flow(flow) == pytest.approx((5 + 19 * 3) / 20)


@pytest.mark.parametrize("size,fps", [(64, 8.0), (128, 16.0)])
def test_a_square_moving_d_pixels_per_frame_measures_d_per_kept_pair(size, fps):
    step = size / 32  # 2 px/frame at 64 px, 4 px/frame at 128 px
    m = video_motion(moving_square(17, size, step), fps)
    per_pair = step * vbench_stride(fps)
    assert np.median(m.scores) == pytest.approx(per_pair, rel=0.25)
    assert m.method == "farneback" and m.threshold_px == pytest.approx(6 * size / 256)
    assert m.dynamic == (per_pair > m.threshold_px)


def test_a_frozen_video_measures_zero_and_is_not_dynamic():
    frames = np.repeat(moving_square(1, 64, 0)[:1], 17, axis=0)
    m = video_motion(frames, 16.0)
    assert m.mean_top5_px == pytest.approx(0.0, abs=0.05) and not m.dynamic
    assert len(m.scores) == 8  # 17 frames at 16 fps: 9 kept, 8 pairs


@pytest.mark.slow  # torchvision's RAFT
def test_raft_path_runs_with_random_weights():
    """RAFT (torchvision raft_small, weights=None: no download) through the same rule: padding to a multiple of 8
    (an odd size here) and subsampling; the numbers of a random network mean nothing."""
    import torch
    from torchvision.models.optical_flow import raft_small

    from densedpo.motion import raft_flow

    torch.manual_seed(0)
    path = "raft_small_random.pt"
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        weights = f"{tmp}/{path}"
        torch.save(raft_small(weights=None).state_dict(), weights)
        flow = raft_flow(weights, small=True, iterations=2)
        frames = moving_square(9, 60, 2.0)[:, :, :52]  # 60 x 52: both sides need padding
        out = flow(frames[0], frames[1])
        assert out.shape == (60, 52, 2) and np.isfinite(out).all()
        m = video_motion(frames, 16.0, flow=flow, method="raft")
        assert len(m.scores) == 4 and m.method == "raft"
