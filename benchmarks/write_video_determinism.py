"""Does `densedpo.video.write_video` write the same bytes for the same frames? libx264 as PyAV ships it, side by
side: its own CPU detection (AVX-512 on these machines), no assembly at all (asm=0), and densedpo's set (every
x86 extension but AVX-512). For each: how many distinct files N encodes of identical frames give, and seconds
per encode.

    python benchmarks/write_video_determinism.py --repeats 12
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

import densedpo.video
from densedpo.video import X264_NO_AVX512


def frames(width: int, height: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (1, height, width, 3), dtype=np.uint8)
    moving = np.concatenate([np.roll(base, 3 * i, axis=2) for i in range(n)])  # a horizontal pan
    return (moving // 2 + rng.integers(0, 120, moving.shape, dtype=np.uint8) // 2).astype(np.uint8)


def encode(video: np.ndarray, params: str | None, path: Path) -> bytes:
    """write_video itself (H.264, yuv420p, CRF 18, veryfast), with its x264 CPU flags replaced by `params`."""
    options = {"x264-params": params} if params else {}
    with mock.patch.object(densedpo.video, "x264_cpu_options", lambda: options):
        densedpo.video.write_video(path, video, 16.0)
    return path.read_bytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=12)
    args = ap.parse_args()
    variants = {"x264 default (auto)": None, "asm=0": "asm=0", "densedpo (no AVX-512)": f"asm={X264_NO_AVX512}"}
    sizes = [(64, 64, 17), (416, 240, 25), (832, 480, 33)]
    print("| encoder CPU flags | size | distinct files of N | s per encode |")
    print("|---|---|---|---|")
    tmp = Path(tempfile.mkdtemp())
    for name, params in variants.items():
        for w, h, n in sizes:
            video = frames(w, h, n)
            t0 = time.perf_counter()
            digests = {hashlib.sha256(encode(video, params, tmp / f"{i}.mp4")).hexdigest() for i in range(args.repeats)}
            seconds = (time.perf_counter() - t0) / args.repeats
            print(f"| {name} | {n}x{w}x{h} | {len(digests)} of {args.repeats} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
