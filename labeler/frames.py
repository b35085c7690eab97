"""Step 2 of `label`: the frames a judge sees, decoded once per pair and encoded as JPEG data URLs."""

from __future__ import annotations

import base64

import numpy as np

from densedpo.errors import DenseDPOError
from densedpo.video import read_frames, resize_to_fit
from labeler.config import LabelConfig
from labeler.plan import PairPlan
from labeler.segments import Segment, sample_frame_indices


def encode_frame(frame: np.ndarray, max_side: int, quality: int) -> str:
    """RGB uint8 (H, W, 3) -> JPEG data URL, downscaled so the longer side is at most `max_side`."""
    import cv2

    frame = resize_to_fit(frame, max_side)
    ok, buf = cv2.imencode(".jpg", frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DenseDPOError("OpenCV could not encode a frame as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def prepare_pair(plan: PairPlan, segments: list[Segment], cfg: LabelConfig) -> dict[str, dict[int, str]]:
    """Decode each needed frame of both videos once, as data URLs: {"a": {frame: url}, "b": {...}}."""
    needed = sorted({i for s in segments for i in sample_frame_indices(s, plan.info.fps, cfg.sample_fps)})
    out = {}
    for side, path in (("a", plan.video_a), ("b", plan.video_b)):
        frames = read_frames(path, needed)
        out[side] = {i: encode_frame(f, cfg.max_side, cfg.jpeg_quality) for i, f in zip(needed, frames)}
    return out
