"""How much a video moves, measured one way everywhere: dense optical flow between frames. The judge report's
motion bias uses the mean Farnebäck flow of sampled frames at a fixed working size; the model evaluation (and
source filtering) use VBench's dynamic-degree rule below, with Farnebäck or RAFT."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

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


def mean_flow_magnitude(gray: Sequence[np.ndarray]) -> float:
    """Mean flow magnitude over a sequence of grey frames; 0.0 for fewer than two frames."""
    mags = flow_magnitudes(gray)
    return float(np.mean(mags)) if mags else 0.0


# ---------------------------------------------------------------------------------------------- dynamic degree
# VBench's dynamic-degree rule (Huang et al., VBench, `vbench/dynamic_degree.py`), with the flow of your choice:
#  1. frames subsampled to about 8 fps: every round(fps / 8)-th frame (every frame at 8 fps or less);
#  2. per consecutive pair of kept frames, the mean of the top 5% optical-flow magnitudes (pixels, full size);
#  3. a video is dynamic when at least round(4 * N / 16) pairs (N = kept frames) exceed
#     max(1, 8 / fps) * 6 * min(H, W) / 256 pixels.
# VBench computes the flow with RAFT (20 iterations); densedpo uses OpenCV Farnebäck by default (a proxy, named
# `farneback` in every report) and RAFT when given its weights (`raft`).

VBENCH_FPS = 8.0


def vbench_stride(fps: float) -> int:
    """Keep every stride-th frame: about 8 frames per second, as VBench does."""
    return max(1, round(fps / VBENCH_FPS))


def dynamic_rule(fps: float, num_kept: int, height: int, width: int) -> tuple[float, int]:
    """(flow threshold in pixels, how many frame pairs must exceed it) for a video of this fps and size."""
    factor = max(1.0, VBENCH_FPS / fps)
    return factor * 6.0 * min(height, width) / 256.0, round(4 * num_kept / 16.0)


def top_flow(flow: np.ndarray) -> float:
    """Mean of the top 5% flow magnitudes of one (H, W, 2) flow field (at least one value)."""
    mag = np.sqrt((flow.astype(np.float64) ** 2).sum(-1)).ravel()
    k = max(1, int(mag.size * 0.05))
    return float(np.sort(mag)[-k:].mean())


def farneback_flow(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) between two RGB uint8 frames at their own size (OpenCV Farnebäck)."""
    cv2 = _cv2()
    gp, gq = (cv2.cvtColor(np.asarray(f), cv2.COLOR_RGB2GRAY) for f in (p, q))
    return cv2.calcOpticalFlowFarneback(gp, gq, None, 0.5, 3, 15, 3, 5, 1.2, 0)


@dataclass
class Motion:
    """One video's motion by VBench's rule: per-pair scores (top-5% flow, pixels), the rule, the verdict."""

    scores: list[float]
    threshold_px: float
    pairs_needed: int
    dynamic: bool
    method: str

    @property
    def mean_top5_px(self) -> float:
        """The video's motion strength: mean of its per-pair scores, each the mean of the top 5% flow magnitudes
        in pixels (0 for a single frame). Not VBench's dynamic degree, which is `dynamic` (pairs over a line)."""
        return float(np.mean(self.scores)) if self.scores else 0.0


def video_motion(frames: np.ndarray, fps: float, flow: Callable | None = None, method: str = "farneback") -> Motion:
    """VBench's dynamic degree of RGB uint8 frames (T, H, W, 3) at `fps`; `flow(p, q) -> (H, W, 2)` (Farnebäck
    by default, or a RAFT from raft_flow())."""
    flow = flow or farneback_flow
    kept = frames[:: vbench_stride(fps)]
    h, w = frames.shape[1:3]
    threshold, needed = dynamic_rule(fps, len(kept), h, w)
    scores = [top_flow(flow(p, q)) for p, q in zip(kept, kept[1:])]
    dynamic = sum(s > threshold for s in scores) >= needed and len(scores) > 0
    return Motion(scores, threshold, needed, bool(dynamic), method)


def segment_motion_means(motion: Motion, fps: float, num_frames: int, segment_seconds: float = 1.0) -> list[float]:
    """Per segment of the clip (densedpo.segments), the mean score of the kept frame pairs that start in it: the
    motion of each 1 s segment by the same measure as the whole video (0 for a segment with no pair)."""
    from densedpo.segments import segment_bounds

    stride = vbench_stride(fps)
    out = []
    for seg in segment_bounds(num_frames, fps, segment_seconds):
        inside = [s for j, s in enumerate(motion.scores) if seg.frame_start <= j * stride < seg.frame_end]
        out.append(float(np.mean(inside)) if inside else 0.0)
    return out


def raft_flow(weights: str | Path, device: str = "cpu", small: bool = False, iterations: int = 20) -> Callable:
    """A flow function from torchvision's RAFT with weights from a local file (no download): `raft_large`
    (VBench's network; torchvision's C_T_V1 weights) or `raft_small`. Frames are padded (edge values) to a
    multiple of 8 and to at least 128 pixels a side (RAFT's correlation pyramid needs it); the flow is cropped back."""
    import torch
    from torchvision.models.optical_flow import raft_large, raft_small

    model = (raft_small if small else raft_large)(weights=None)
    if weights is not None:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    model = model.eval().to(device)

    def flow(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        h, w = p.shape[:2]
        ph, pw = max(128, h + (-h) % 8) - h, max(128, w + (-w) % 8) - w

        def prep(f):
            x = torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1).float()[None] / 127.5 - 1.0
            return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate").to(device)

        with torch.no_grad():
            out = model(prep(p), prep(q), num_flow_updates=iterations)[-1]  # (1, 2, H', W')
        return out[0, :, :h, :w].permute(1, 2, 0).cpu().numpy()

    return flow
