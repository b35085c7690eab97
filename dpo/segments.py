"""Segment labels (pixel frames) -> one label per latent frame of a causal video VAE (pure functions).

A causal VAE with temporal compression r maps F pixel frames to (F − 1)//r + 1 latent frames: latent 0 is
pixel frame 0 alone, latent k ≥ 1 covers pixel frames r(k−1)+1 … rk. A latent frame takes the label of the
segment that holds most of its pixel frames (ties: the earlier segment).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

PREFERENCE_VALUE = {"a": 1, "b": -1, "tie": 0}


def num_latent_frames(num_pixel_frames: int, r: int) -> int:
    return (num_pixel_frames - 1) // r + 1


def latent_frame_span(k: int, r: int, num_pixel_frames: int) -> range:
    """Pixel frames covered by latent frame k (clipped to the clip)."""
    if k == 0:
        return range(0, 1)
    return range(r * (k - 1) + 1, min(r * k, num_pixel_frames - 1) + 1)


def latent_values(segments: Sequence[tuple], num_pixel_frames: int, r: int, field: int = 2, default=0) -> list:
    """segments: (frame_start, frame_end, label[, weight]) with half-open pixel ranges.

    Returns, per latent frame, the segment's `field` (2: the label in {+1, −1, 0}; 3: its weight) of the segment
    that holds most of its pixel frames. Pixel frames outside every segment count for nobody; a latent frame with
    none of its pixels in a segment gets `default` (a tie).
    """
    out = []
    for k in range(num_latent_frames(num_pixel_frames, r)):
        span = latent_frame_span(k, r, num_pixel_frames)
        best, best_count = default, 0
        for seg in sorted(segments):
            count = len(range(max(seg[0], span.start), min(seg[1], span.stop)))
            if count > best_count:
                best, best_count = seg[field], count
        out.append(best)
    return out


def latent_labels(segments: Sequence[tuple], num_pixel_frames: int, r: int) -> list[int]:
    """One label (+1, −1, 0) per latent frame (latent_values of the segments' labels)."""
    return latent_values(segments, num_pixel_frames, r, field=2, default=0)


SEGMENT_WEIGHTS = ("none", "confidence", "margin")


def segment_weight(rule: str, row) -> float | None:
    """A decided segment's weight in the loss: none 1; confidence the judge's confidence in its answer; margin the
    scorer's |score_a − score_b|, else |p_a − p_b|. None when the row lacks what the rule needs."""
    if rule == "none":
        return 1.0

    def number(name):
        v = getattr(row, name, None)
        return None if v is None or pd.isna(v) else float(v)

    if rule == "confidence":
        return number("confidence")
    a, b = number("score_a"), number("score_b")
    if a is not None and b is not None:
        return abs(a - b)
    pa, pb = number("p_a"), number("p_b")
    return abs(pa - pb) if pa is not None and pb is not None else None


def row_label(preference: str | None, status: str) -> int:
    """A labels-table row as +1/−1/0: every status other than ok is a tie (README: Table contracts)."""
    if status != "ok" or preference is None:
        return 0
    return PREFERENCE_VALUE[preference]
