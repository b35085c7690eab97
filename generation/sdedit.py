"""SDEdit on a rectified-flow schedule, as pure functions (DenseDPO §3.2, App. A).

x_t = (1 − t)·x + t·ε. η is a noise level σ, not diffusers' `strength` (a floored fraction of steps over a
shifted schedule): denoising starts at the scheduler step whose σ is closest to η, and that σ is recorded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def nearest_sigma_index(sigmas: Sequence[float], eta: float, lo: float | None = None, hi: float | None = None) -> int:
    """Index of the step whose σ is closest to η (ties go to the earlier, noisier step); with bounds, the closest
    among the steps whose σ lies in [lo, hi] when there is one (a coarse grid never leaves the run's η range).

    `sigmas` are the per-step noise levels of the schedule, highest first, without the final 0.
    """
    s = np.asarray(sigmas, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0:
        raise ValueError("sigmas must be a non-empty 1-D sequence")
    distance = np.abs(s - eta)
    inside = sigmas_in_range(s, lo, hi)
    if inside.any():
        distance = np.where(inside, distance, np.inf)
    return int(np.argmin(distance))


def sigmas_in_range(sigmas: Sequence[float], lo: float | None, hi: float | None) -> np.ndarray:
    """Which steps' σ lie in [lo, hi] (open ends when None; 1e-9 of slack for float schedules)."""
    s = np.asarray(sigmas, dtype=np.float64)
    return (s >= (lo if lo is not None else -np.inf) - 1e-9) & (s <= (hi if hi is not None else np.inf) + 1e-9)


def noise_to_level(x0, noise, sigma: float):
    """x_σ = (1 − σ)·x0 + σ·ε (rectified flow); works on numpy arrays and torch tensors alike."""
    return (1.0 - sigma) * x0 + sigma * noise


def pair_randomness(seed: int, source_id: str, eta_min: float, eta_max: float) -> tuple[float, int, int]:
    """(η, seed_a, seed_b) for one source: a function of the run seed and the source only.

    So a source gets the same pair whatever the order, sharding or resumption of the run. η ~ U(eta_min, eta_max)
    is drawn once per pair: both videos MUST share it (a different η lets DPO learn a noise-level shortcut).
    """
    digest = int.from_bytes(hashlib.sha256(source_id.encode()).digest()[:8], "little")
    rng = np.random.default_rng([seed, digest])
    eta = float(rng.uniform(eta_min, eta_max))
    seed_a, seed_b = (int(x) for x in rng.integers(0, 2**31 - 1, size=2))
    if seed_b == seed_a:
        seed_b = (seed_a + 1) % (2**31 - 1)
    return eta, seed_a, seed_b


def make_pair_id(
    source_id: str, model_id: str, mode: str, eta: float | None, seed_a: int, seed_b: int, **settings
) -> str:
    """Deterministic id from the source, the model, η, the seeds and every setting that changes the videos."""
    key = "|".join(
        [source_id, model_id, mode, f"{eta:.6f}" if eta is not None else "-", str(seed_a), str(seed_b)]
        + [f"{k}={settings[k]}" for k in sorted(settings)]
    )
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in source_id)[:40]
    return f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def source_frame_indices(src_fps: float, src_frames: int, fps: float, num_frames: int, offset_s: float) -> list[int]:
    """Source frames that resample a clip to `fps`: frame k is the source frame shown at offset_s + k / fps.

    Raises ValueError (with the seconds needed and available) when the clip is too short.
    """
    idx = [int(np.floor((offset_s + k / fps) * src_fps + 1e-6)) for k in range(num_frames)]
    if idx[-1] >= src_frames or idx[0] < 0:
        need = offset_s + num_frames / fps
        raise ValueError(
            f"too short: {num_frames} frames at {fps:g} fps from {offset_s:g} s need {need:.2f} s, "
            f"the clip has {src_frames / src_fps:.2f} s"
        )
    return idx


def frames_that_fit(src_fps: float, src_frames: int, fps: float, offset_s: float) -> int:
    """The most frames (4k+1, Wan's causal VAE) `source_frame_indices` can take from a clip at `fps` from
    `offset_s`; 0 when not even one fits."""
    if offset_s < 0 or int(np.floor(offset_s * src_fps + 1e-6)) >= src_frames:
        return 0
    n = int(np.floor(((src_frames - 1e-6) / src_fps - offset_s) * fps - 1e-6)) + 2  # one past the estimate
    while n > 1 and int(np.floor((offset_s + (n - 1) / fps) * src_fps + 1e-6)) >= src_frames:
        n -= 1
    return n - (n - 1) % 4
