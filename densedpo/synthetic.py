"""Procedurally rendered aligned pairs with known per-segment preferences.

Each pair is one rendered scene (moving shapes over a texture, with a caption) shown twice with small,
aligned detail differences; in chosen segments one video carries an injected artifact (blur, noise, freeze,
flicker or a local deformation) and the other video is the preferred one there. The ground-truth labels table
uses the labels contract with judge_model = "synthetic-truth". Used by the demo, the tests and the benchmarks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from densedpo.segments import segment_bounds
from densedpo.tables import LABELS, PAIRS, SOURCES, write_table
from densedpo.video import write_video

ARTIFACTS = ("blur", "noise", "freeze", "flicker", "deform")
_COLORS = {
    "red": (220, 40, 40),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
    "white": (240, 240, 240),
    "green": (40, 180, 70),
    "purple": (150, 60, 200),
}
_BACKGROUNDS = {"sandy": (190, 160, 110), "grey": (120, 120, 120), "dark blue": (30, 40, 90), "teal": (40, 120, 120)}


def render_clip(seed: int, num_frames: int, height: int, width: int) -> tuple[np.ndarray, str]:
    """A clip of 2–3 shapes moving over a textured background; returns frames (T, H, W, 3) uint8 and a caption."""
    import cv2

    rng = np.random.default_rng(seed)
    bg_name = list(_BACKGROUNDS)[rng.integers(len(_BACKGROUNDS))]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = sum(
        np.sin(xx * rng.uniform(0.05, 0.3) + yy * rng.uniform(0.05, 0.3) + rng.uniform(0, 6.28)) for _ in range(3)
    )
    background = np.clip(np.array(_BACKGROUNDS[bg_name], np.float32) + 12 * texture[..., None], 0, 255)
    shapes = []
    for _ in range(rng.integers(2, 4)):
        color = list(_COLORS)[rng.integers(len(_COLORS))]
        kind = ("circle", "square")[rng.integers(2)]
        size = rng.uniform(0.08, 0.18) * min(height, width)
        pos = rng.uniform([size, size], [width - size, height - size])
        vel = rng.uniform(-1, 1, 2) * min(height, width) / 40
        shapes.append((color, kind, size, pos, vel))
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        img = background.copy()
        for color, kind, size, pos, vel in shapes:
            # Bounce off the borders: reflect the unbounded path into [size, side - size].
            p = [_reflect(pos[d] + vel[d] * t, size, (width, height)[d] - size) for d in (0, 1)]
            c = (int(p[0]), int(p[1]))
            if kind == "circle":
                cv2.circle(img, c, int(size), _COLORS[color], -1, lineType=cv2.LINE_AA)
            else:
                s = int(size)
                cv2.rectangle(img, (c[0] - s, c[1] - s), (c[0] + s, c[1] + s), _COLORS[color], -1)
        frames[t] = img.astype(np.uint8)
    names = [f"a {color} {kind}" for color, kind, *_ in shapes]
    caption = f"{', '.join(names[:-1])} and {names[-1]} move over a {bg_name} textured background."
    return frames, caption[0].upper() + caption[1:]


def _reflect(x: float, lo: float, hi: float) -> float:
    span = hi - lo
    if span <= 0:
        return lo
    y = (x - lo) % (2 * span)
    return lo + (y if y <= span else 2 * span - y)


def detail_variation(frames: np.ndarray, seed: int, amplitude: float = 6.0) -> np.ndarray:
    """A fixed fine-grained texture difference: the 'different seeds, same structure' of SDEdit pairs."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, amplitude, frames.shape[1:]).astype(np.float32)
    return np.clip(frames.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def inject_artifact(frames: np.ndarray, artifact: str, frame_start: int, frame_end: int, seed: int) -> np.ndarray:
    """Return a copy of frames with `artifact` in [frame_start, frame_end)."""
    import cv2

    out = frames.copy()
    seg = out[frame_start:frame_end]
    rng = np.random.default_rng(seed)
    h, w = frames.shape[1:3]
    if artifact == "blur":
        k = max(3, (min(h, w) // 8) | 1)
        seg[:] = np.stack([cv2.GaussianBlur(f, (k, k), 0) for f in seg])
    elif artifact == "noise":
        seg[:] = np.clip(seg.astype(np.float32) + rng.normal(0, 40, seg.shape), 0, 255).astype(np.uint8)
    elif artifact == "freeze":
        seg[:] = seg[0]
    elif artifact == "flicker":
        gains = np.where(np.arange(len(seg)) % 2 == 0, 0.45, 1.55).astype(np.float32)
        seg[:] = np.clip(seg.astype(np.float32) * gains[:, None, None, None], 0, 255).astype(np.uint8)
    elif artifact == "deform":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy, r = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, 0.35 * min(h, w)
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        angle = 2.5 * np.clip(1 - d / r, 0, 1) ** 2  # a swirl that melts rigid shapes
        mx = cx + (xx - cx) * np.cos(angle) - (yy - cy) * np.sin(angle)
        my = cy + (xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        seg[:] = np.stack([cv2.remap(f, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) for f in seg])
    else:
        raise ValueError(f"unknown artifact {artifact!r}; one of {ARTIFACTS}")
    return out


def make_synthetic_pairs(
    out_dir: str | Path,
    num_pairs: int = 4,
    num_frames: int = 49,
    fps: float = 16.0,
    height: int = 64,
    width: int = 64,
    segment_seconds: float = 1.0,
    seed: int = 0,
    artifacts: bool = True,
    crf: int = 18,
    artifact_kinds: tuple[str, ...] = ARTIFACTS,
) -> tuple[Path, Path]:
    """Write videos, pairs.parquet and truth_labels.parquet under out_dir; return the two table paths.

    Per segment: artifact in video_b (truth a), in video_a (truth b) or none (truth tie), each about a third
    of the time, with at least one non-tie segment per pair. `artifacts=False` renders the same pairs clean
    (same seeds, same truth table), which the tests use to locate every injected artifact. `artifact_kinds`: the
    kinds drawn from (all of ARTIFACTS by default; a subset renders the same scenes and segments).
    """
    unknown = set(artifact_kinds) - set(ARTIFACTS)
    if unknown or not artifact_kinds:
        raise ValueError(f"artifact_kinds must be a non-empty subset of {ARTIFACTS}; got {artifact_kinds!r}")
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pairs, truth = [], []
    for k in range(num_pairs):
        clip_seed = int(rng.integers(2**31))
        base, caption = render_clip(clip_seed, num_frames, height, width)
        a, b = detail_variation(base, clip_seed + 1), detail_variation(base, clip_seed + 2)
        segments = segment_bounds(num_frames, fps, segment_seconds)
        prefs = rng.choice(["a", "b", "tie"], size=len(segments))
        if (prefs == "tie").all():
            prefs[rng.integers(len(segments))] = rng.choice(["a", "b"])
        pair_id = f"syn{seed}-{k:04d}-" + hashlib.sha1(f"{seed}:{k}".encode()).hexdigest()[:8]
        for seg, pref in zip(segments, prefs):
            artifact = artifact_kinds[int(rng.integers(len(artifact_kinds)))] if pref != "tie" else None
            if not artifacts:
                pass
            elif pref == "a":  # b gets the artifact
                b = inject_artifact(b, artifact, seg.frame_start, seg.frame_end, clip_seed + seg.segment_idx)
            elif pref == "b":
                a = inject_artifact(a, artifact, seg.frame_start, seg.frame_end, clip_seed + seg.segment_idx)
            truth.append(
                {
                    "pair_id": pair_id,
                    "segment_idx": seg.segment_idx,
                    "frame_start": seg.frame_start,
                    "frame_end": seg.frame_end,
                    "t_start_s": seg.t_start_s,
                    "t_end_s": seg.t_end_s,
                    "preference": str(pref),
                    "p_a": float(pref == "a"),
                    "p_b": float(pref == "b"),
                    "p_tie": float(pref == "tie"),
                    "confidence": 1.0,
                    "order_agreement": True,
                    "status": "ok",
                    "error": None,
                    "raw_response": None,
                    "judge_model": "synthetic-truth",
                    "prompt_name": None,
                    "prompt_sha256": None,
                    "artifact": artifact,
                }
            )
        va, vb = f"videos/{pair_id}_a.mp4", f"videos/{pair_id}_b.mp4"
        write_video(out_dir / va, a, fps, crf=crf)
        write_video(out_dir / vb, b, fps, crf=crf)
        pairs.append(
            {
                "pair_id": pair_id,
                "prompt": caption,
                "video_a": va,
                "video_b": vb,
                "source_id": f"src-{k:04d}",
                "num_frames": num_frames,
                "fps": fps,
                "height": height,
                "width": width,
            }
        )
    pairs_path = write_table(pd.DataFrame(pairs), out_dir / "pairs.parquet", PAIRS)
    truth_path = write_table(pd.DataFrame(truth), out_dir / "truth_labels.parquet", LABELS)
    return pairs_path, truth_path


def make_synthetic_sources(
    out_dir: str | Path,
    num_sources: int = 4,
    num_frames: int = 49,
    fps: float = 16.0,
    height: int = 64,
    width: int = 64,
    seed: int = 0,
) -> Path:
    """Write clean rendered clips and sources.parquet (source_id, video, prompt) for `densedpo generate`."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(num_sources):
        frames, caption = render_clip(int(rng.integers(2**31)), num_frames, height, width)
        rel = f"videos/source_{k:04d}.mp4"
        write_video(out_dir / rel, frames, fps)
        rows.append({"source_id": f"src-{k:04d}", "video": rel, "prompt": caption})
    return write_table(pd.DataFrame(rows), out_dir / "sources.parquet", SOURCES)
