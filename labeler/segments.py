"""The frames the VLM sees from each segment (pure). Segment boundaries are shared: densedpo.segments."""

from __future__ import annotations

from densedpo.segments import Segment, segment_bounds

__all__ = ["Segment", "segment_bounds", "sample_frame_indices"]


def sample_frame_indices(segment: Segment, fps: float, sample_fps: float) -> list[int]:
    """Pixel frames to show from a segment, sampled at `sample_fps` (every frame when sample_fps ≥ fps).

    Sample j is the frame shown at time t_start_s + j / sample_fps; the first frame of the segment is always
    included, and every index lies in [frame_start, frame_end).
    """
    if sample_fps <= 0:
        raise ValueError(f"sample_fps must be positive, got {sample_fps}")
    if sample_fps >= fps:
        return list(range(segment.frame_start, segment.frame_end))
    out: list[int] = []
    j = 0
    while True:
        idx = segment.frame_start + int(j * fps / sample_fps + 1e-9)
        if idx >= segment.frame_end:
            break
        if not out or idx != out[-1]:
            out.append(idx)
        j += 1
    return out
