"""Video I/O: probe and decode with OpenCV, write browser-playable H.264 with PyAV.

Frames are numpy arrays of shape (T, H, W, 3), RGB, uint8.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from densedpo.errors import DenseDPOError
from densedpo.files import atomic_path


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps


def _cv2():
    # FFmpeg inside OpenCV prints decoder complaints ("moov atom not found") to stderr; our errors say it better.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    import cv2

    cv2.utils.logging.setLogLevel(2)  # errors only: a corrupt file otherwise logs a WARN line before our own message
    return cv2


def _open(path: str | Path):
    cv2 = _cv2()

    path = Path(path)
    if not path.exists():
        raise DenseDPOError(f"video not found: {path}")
    # One decoder thread: callers parallelise across videos, and short clips decode with less CPU this way
    # (measured 16 vs 20 ms for 49 frames at 128 px).
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    if not cap.isOpened():
        raise DenseDPOError(f"cannot decode video {path}: not a readable video file (corrupt or unsupported codec).")
    return cap


def probe(path: str | Path) -> VideoInfo:
    """Frame count, fps and size of a video. Counts frames by decoding when the container does not say."""
    cv2 = _cv2()

    cap = _open(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        if n <= 0:
            n = 0
            while cap.grab():
                n += 1
        ok, _ = cap.read() if n > 0 and cap.set(cv2.CAP_PROP_POS_FRAMES, 0) else (False, None)
    finally:
        cap.release()
    if n <= 0 or not ok or h <= 0 or w <= 0:
        raise DenseDPOError(f"cannot decode video {path}: it has no readable frames (corrupt or empty file).")
    if not fps > 0:
        raise DenseDPOError(f"video {path} does not state its frame rate; re-encode it with an fps.")
    return VideoInfo(num_frames=n, fps=fps, height=h, width=w)


def count_frames(path: str | Path) -> int:
    """The frames a video really decodes to (its container's count can be an estimate: webm, mkv)."""
    cap = _open(path)
    try:
        n = 0
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n


def read_frames(path: str | Path, indices: Sequence[int] | None = None) -> np.ndarray:
    """Decode frames (all, or the given increasing indices) as RGB uint8, shape (T, H, W, 3).

    Decodes sequentially and skips unwanted frames with grab(), which is faster than seeking for short clips.
    """
    cv2 = _cv2()

    cap = _open(path)
    wanted = None if indices is None else sorted(set(int(i) for i in indices))
    frames: dict[int, np.ndarray] = {}
    try:
        last = None if wanted is None else wanted[-1]
        i = 0
        want = None if wanted is None else set(wanted)
        while last is None or i <= last:
            if want is None or i in want:
                ok, bgr = cap.read()
                if not ok:
                    break
                frames[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            elif not cap.grab():
                break
            i += 1
    finally:
        cap.release()
    if wanted is None:
        if not frames:
            raise DenseDPOError(f"cannot decode video {path}: it has no readable frames.")
        return np.stack([frames[k] for k in sorted(frames)])
    missing = [k for k in wanted if k not in frames]
    if missing:
        raise DenseDPOError(f"video {path} ended before frame {missing[0]} (decoded {i} frames).")
    order = [frames[int(k)] for k in indices]
    return np.stack(order)


# x264's CPU flags (x264.h): MMX..AVX (bits 0-9), FMA3, BMI1, BMI2, AVX2 (12-15), SSE2_IS_FAST (20). Not AVX512
# (16): x264's AVX-512 code writes different bytes for identical frames in some encodes (here about 1 in 5, also
# with one thread), and asm=0 or this set without it is byte-stable (benchmarks/write_video_determinism.py).
X264_NO_AVX512 = sum(1 << b for b in (*range(10), 12, 13, 14, 15, 20))


@functools.lru_cache(maxsize=1)
def x264_cpu_options() -> dict[str, str]:
    """x264-params that keep libx264 off its AVX-512 code on a CPU that has it (every AVX-512 CPU has the rest of
    the set above); elsewhere nothing: x264 detects the CPU itself."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return {}
    return {"x264-params": f"asm={X264_NO_AVX512}"} if "avx512f" in flags and "avx2" in flags else {}


def write_video(path: str | Path, frames: np.ndarray, fps: float, crf: int = 18) -> Path:
    """Write RGB uint8 frames (T, H, W, 3) as H.264/yuv420p MP4, atomically (temp file + rename).

    Odd sizes are padded by one pixel (yuv420p needs even sides) — callers that care should pass even sizes.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", **x264_cpu_options()}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (height, width, 3): area filter when shrinking (no aliasing), cubic when enlarging."""
    cv2 = _cv2()

    h, w = frame.shape[:2]
    if (h, w) == (height, width):
        return frame
    shrink = width * height < w * h
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def resize_to_fit(frame: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale so the longer side is at most `max_side`, keeping the aspect ratio; never enlarges."""
    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return frame
    return resize(frame, max(1, round(w * scale)), max(1, round(h * scale)))
