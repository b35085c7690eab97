"""Segments of a clip in pixel frames (pure). Shared by the labeler, the synthetic data and dpo's label mapping."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    segment_idx: int
    frame_start: int  # first pixel frame
    frame_end: int  # one past the last pixel frame (half-open)
    t_start_s: float
    t_end_s: float


def segment_bounds(num_frames: int, fps: float, segment_seconds: float) -> list[Segment]:
    """Cut `num_frames` frames at `fps` into segments of `segment_seconds`.

    Boundaries are round(k · segment_seconds · fps), so non-integer frames-per-segment do not drift.
    Tail rule: a last piece shorter than half a segment joins the previous segment (e.g. Wan's 81 frames at
    16 fps with 1 s segments give 5 segments, the last one [64, 81)); otherwise it is a segment of its own.
    A clip shorter than one segment is one segment.
    """
    if num_frames <= 0:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if fps <= 0 or segment_seconds <= 0:
        raise ValueError(f"fps and segment_seconds must be positive, got {fps} and {segment_seconds}")
    per_segment = segment_seconds * fps
    starts = []
    k = 0
    while True:
        start = int(round(k * per_segment))
        if start >= num_frames:
            break
        starts.append(start)
        k += 1
    if len(starts) > 1 and num_frames - starts[-1] < per_segment / 2:
        starts.pop()
    ends = starts[1:] + [num_frames]
    return [Segment(i, s, e, s / fps, e / fps) for i, (s, e) in enumerate(zip(starts, ends))]
