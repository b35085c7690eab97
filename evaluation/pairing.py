"""Policy samples against base samples of the same (prompt_id, k): the pairs table `label` judges.

video_a is always the policy's sample and video_b the base's, so a segment labeled `a` is a policy win. Runs whose
settings differ cannot be compared sample by sample: the first differing field is a one-line error.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from densedpo.errors import DenseDPOError
from densedpo.tables import PAIRS, resolve_path, write_table
from generation.sample import read_samples

MUST_MATCH = ("num_frames", "fps", "height", "width", "num_inference_steps", "guidance_scale", "negative_prompt")


def _settings(df: pd.DataFrame, folder: Path) -> dict:
    out = {}
    for name in MUST_MATCH:
        values = df[name].dropna().unique() if name in df.columns else []
        if len(values) > 1:
            raise DenseDPOError(f"{folder} mixes samples of several {name} values ({', '.join(map(str, values))}).")
        value = values[0] if len(values) else None
        out[name] = value.item() if hasattr(value, "item") else value  # a plain number in the error message
    return out


def pair_samples(base: Path, policies: dict[str, Path], out: Path) -> tuple[Path, pd.DataFrame]:
    """Write out/pairs.parquet (one row per policy and shared sample); return its path and the table."""
    base_df = read_samples(base)
    base_settings = _settings(base_df, base)
    rows = []
    for name, folder in policies.items():
        pol = read_samples(folder)
        for field, value in _settings(pol, folder).items():
            if value != base_settings[field]:
                raise DenseDPOError(
                    f"--policy {name}={folder} was sampled with {field} {value!r} but --base {base} with "
                    f"{base_settings[field]!r}: sample both with the same settings."
                )
        both = pol.merge(base_df, on=["prompt_id", "k"], suffixes=("_policy", "_base"))
        if both.empty:
            raise DenseDPOError(
                f"--policy {name}={folder} and --base {base} share no (prompt_id, k): sample both from the same "
                "--prompts with the same --seeds-per-prompt."
            )
        seeds = both[both["seed_policy"] != both["seed_base"]]
        if len(seeds):
            r = seeds.iloc[0]
            raise DenseDPOError(
                f"--policy {name}: sample (prompt_id={r['prompt_id']!r}, k={r['k']}) has seed {r['seed_policy']} "
                f"but the base's has {r['seed_base']}: sample both with the same --seed."
            )
        for r in both.itertuples(index=False):
            videos = {
                side: os.path.relpath(resolve_path(Path(f) / "samples.parquet", getattr(r, f"video_{suffix}")), out)
                for side, suffix, f in (("a", "policy", folder), ("b", "base", base))
            }
            rows.append(
                {
                    "pair_id": f"{name}:{r.prompt_id}:{r.k}",
                    "prompt": r.prompt_policy,
                    "video_a": videos["a"],
                    "video_b": videos["b"],
                    "source_id": str(r.prompt_id),
                    "num_frames": int(r.num_frames_policy),
                    "fps": float(r.fps_policy),
                    "height": int(r.height_policy),
                    "width": int(r.width_policy),
                    "num_inference_steps": int(r.num_inference_steps_policy),
                    "guidance_scale": float(r.guidance_scale_policy),
                    "model_id": str(r.model_id_policy),
                    "policy": name,
                    "prompt_id": str(r.prompt_id),
                    "k": int(r.k),
                    "policy_lora": r.lora_policy,
                }
            )
    table = pd.DataFrame(rows)
    return write_table(table, out / "pairs.parquet", PAIRS), table
