"""How much a video moves, measured one way everywhere: dense optical flow (OpenCV Farnebäck) between sampled
frames, in pixels at a fixed working size. The judge report, the model evaluation and source filtering use it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from densedpo.video import _cv2, resize_to_fit

FLOW_MAX_SIDE = 160  # frames are downscaled to this longer side before flow: magnitudes are pixels at this size


def gray_frames(frames: Sequence[np.ndarray] | np.ndarray, max_side: int = FLOW_MAX_SIDE) -> list[np.ndarray]:
    """RGB uint8 frames (T, H, W, 3) -> grey uint8 frames, the longer side at most `max_side`."""
    cv2 = _cv2()
    return [cv2.cvtColor(resize_to_fit(np.asarray(f), max_side), cv2.COLOR_RGB2GRAY) for f in frames]


def flow_magnitudes(gray: Sequence[np.ndarray]) -> list[float]:
    """Mean optical-flow magnitude (pixels) of each consecutive pair of grey frames: T frames -> T - 1 values."""
    cv2 = _cv2()
    return [
        float(np.linalg.norm(cv2.calcOpticalFlowFarneback(p, q, None, 0.5, 3, 15, 3, 5, 1.2, 0), axis=-1).mean())
        for p, q in zip(gray, gray[1:])
    ]


def mean_motion(gray: Sequence[np.ndarray]) -> float:
    """Mean flow magnitude over a sequence of grey frames; 0.0 for fewer than two frames."""
    mags = flow_magnitudes(gray)
    return float(np.mean(mags)) if mags else 0.0
