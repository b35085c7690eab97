"""Tiny latent-space DPO data with a known answer: per segment one video is corrupted and labeled worse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from densedpo.segments import segment_bounds
from densedpo.tables import LABELS, PAIRS, write_table

NUM_FRAMES, FPS = 17, 4.0  # 1 s segments [0,4) [4,8) [8,12) [12,17) -> latents {0,1} {2} {3} {4} at r = 4
SHAPE = (16, 5, 4, 4)  # (C, T, h, w) of the tiny Wan


def make_latent_pairs(out: Path, num_pairs: int, seed: int = 0, mixed: bool = True) -> tuple[Path, Path]:
    """Clean latents are smooth; in every segment one side gets strong high-frequency noise and is worse.

    mixed=True makes the segments of a pair disagree (some prefer a, some b), where clip labels go wrong.
    """
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    pairs, labels = [], []
    segments = segment_bounds(NUM_FRAMES, FPS, 1.0)
    lat_of_seg = {0: [0, 1], 1: [2], 2: [3], 3: [4]}
    for k in range(num_pairs):
        base = torch.from_numpy(rng.normal(0, 1, (SHAPE[0], 1, 1, 1))).float().expand(SHAPE).clone()
        base += 0.3 * torch.from_numpy(rng.normal(0, 1, (SHAPE[0], SHAPE[1], 1, 1))).float()
        a = base + 0.05 * torch.from_numpy(rng.normal(0, 1, SHAPE)).float()
        b = base + 0.05 * torch.from_numpy(rng.normal(0, 1, SHAPE)).float()
        prefs = rng.choice(["a", "b"], size=len(segments)) if mixed else np.full(len(segments), rng.choice(["a", "b"]))
        pid = f"lat-{seed}-{k:03d}"
        for seg, pref in zip(segments, prefs):
            worse = b if pref == "a" else a
            for t in lat_of_seg[seg.segment_idx]:
                worse[:, t] += 1.5 * torch.from_numpy(rng.normal(0, 1, (SHAPE[0], *SHAPE[2:]))).float()
            labels.append(
                {
                    "pair_id": pid,
                    "segment_idx": seg.segment_idx,
                    "frame_start": seg.frame_start,
                    "frame_end": seg.frame_end,
                    "t_start_s": seg.t_start_s,
                    "t_end_s": seg.t_end_s,
                    "preference": str(pref),
                    "status": "ok",
                    "judge_model": "human",
                }
            )
        save_file({"latents": a}, str(out / f"{pid}_a.safetensors"))
        save_file({"latents": b}, str(out / f"{pid}_b.safetensors"))
        emb = torch.from_numpy(rng.normal(0, 1, (8, 32))).float()
        save_file({"prompt_embeds": emb}, str(out / f"{pid}_emb.safetensors"))
        pairs.append(
            {
                "pair_id": pid,
                "prompt": "shapes",
                "video_a": "-",
                "video_b": "-",
                "num_frames": NUM_FRAMES,
                "fps": FPS,
                "latents_a": f"{pid}_a.safetensors",
                "latents_b": f"{pid}_b.safetensors",
                "prompt_embeds": f"{pid}_emb.safetensors",
            }
        )
    labels_df = pd.DataFrame(labels)
    for col in LABELS.names:
        if col not in labels_df:
            labels_df[col] = None
    return (
        write_table(pd.DataFrame(pairs), out / "pairs.parquet", PAIRS),
        write_table(labels_df, out / "labels.parquet", LABELS),
    )
