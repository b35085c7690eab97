"""Segment labels (pixel frames) -> one label per latent frame of a causal video VAE (pure functions).

A causal VAE with temporal compression r maps F pixel frames to (F − 1)//r + 1 latent frames: latent 0 is
pixel frame 0 alone, latent k ≥ 1 covers pixel frames r(k−1)+1 … rk. A latent frame takes the label of the
segment that holds most of its pixel frames (ties: the earlier segment).
"""

from __future__ import annotations

from collections.abc import Sequence

PREFERENCE_VALUE = {"a": 1, "b": -1, "tie": 0}


def num_latent_frames(num_pixel_frames: int, r: int) -> int:
    return (num_pixel_frames - 1) // r + 1


def latent_frame_span(k: int, r: int, num_pixel_frames: int) -> range:
    """Pixel frames covered by latent frame k (clipped to the clip)."""
    if k == 0:
        return range(0, 1)
    return range(r * (k - 1) + 1, min(r * k, num_pixel_frames - 1) + 1)


def latent_labels(segments: Sequence[tuple[int, int, int]], num_pixel_frames: int, r: int) -> list[int]:
    """segments: (frame_start, frame_end, label) with half-open pixel ranges and label in {+1, −1, 0}.

    Returns one label per latent frame. Pixel frames outside every segment count for nobody; a latent frame
    with none of its pixels in a segment is a tie.
    """
    out = []
    for k in range(num_latent_frames(num_pixel_frames, r)):
        span = latent_frame_span(k, r, num_pixel_frames)
        best, best_count = 0, 0
        for start, end, label in sorted(segments):
            count = len(range(max(start, span.start), min(end, span.stop)))
            if count > best_count:
                best, best_count = label, count
        out.append(best)
    return out


def row_label(preference: str | None, status: str) -> int:
    """A labels-table row as +1/−1/0: every status other than ok is a tie (README: Table contracts)."""
    if status != "ok" or preference is None:
        return 0
    return PREFERENCE_VALUE[preference]
