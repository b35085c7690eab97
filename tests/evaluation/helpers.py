"""Sample folders written the way `densedpo sample` writes them (videos + samples.parquet), from given frames:
the tests control what the "policy" and the "base" show (synthetic renders with or without artifacts, frozen
copies), which the tiny random Wan cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from densedpo.tables import SAMPLES, write_table
from densedpo.video import write_video
from generation.sample import sample_seed


def sample_folder(
    folder: Path, videos: dict[tuple[str, int], np.ndarray], prompts: dict[str, str], fps: float, lora=None
) -> Path:
    rows = []
    for (prompt_id, k), frames in sorted(videos.items()):
        name = f"{prompt_id}-{k}.mp4"
        write_video(folder / name, frames, fps)
        t, h, w, _ = frames.shape
        ids = {"prompt_id": prompt_id, "prompt": prompts[prompt_id], "k": k, "seed": sample_seed(0, prompt_id, k)}
        model = {"video": name, "model_id": "tiny", "lora": lora, "lora_sha256": None, "latents": None}
        size = {"num_frames": t, "fps": fps, "height": h, "width": w}
        settings = {"num_inference_steps": 4, "guidance_scale": 3.0, "negative_prompt": ""}
        rows.append({**ids, **model, **size, **settings})
    write_table(pd.DataFrame(rows), folder / "samples.parquet", SAMPLES)
    return folder
