"""Policy samples against base samples of the same (prompt_id, k): the pairs table `label` judges.

video_a is always the policy's sample and video_b the base's, so a segment labeled `a` is a policy win. Runs whose
settings differ cannot be compared sample by sample: the first differing field is a one-line error. Two samples
are paired only when they answer the same prompt text (and, in sdedit mode, edit the same clip span at the same
η): prompt ids alone are line numbers of a prompts file, which may have changed between the runs.

A pair's id carries the digest of both videos' bytes, so the judge's journal (keyed by pair id) only ever reuses an
answer for the very same videos: resampling a folder from another checkpoint makes new ids and new questions.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from densedpo.errors import DenseDPOError
from densedpo.files import file_sha256
from densedpo.tables import PAIRS, resolve_path, write_table
from generation.sample import read_samples, samples_table_path

MUST_MATCH = ("num_frames", "fps", "height", "width", "num_inference_steps", "guidance_scale", "negative_prompt")
# What a sample answers, compared per (prompt_id, k); sdedit samples also name their clip, span and η.
SAME_INPUT = ("prompt", "source_sha256", "start_s", "end_s", "strength")


def _settings(df: pd.DataFrame, folder: Path) -> dict:
    out = {}
    for name in MUST_MATCH:
        values = df[name].dropna().unique() if name in df.columns else []
        if len(values) > 1:
            raise DenseDPOError(f"{folder} mixes samples of several {name} values ({', '.join(map(str, values))}).")
        value = values[0] if len(values) else None
        out[name] = value.item() if hasattr(value, "item") else value  # a plain number in the error message
    return out


def _plain(v):
    v = v.item() if hasattr(v, "item") else v
    return None if v is None or (isinstance(v, float) and v != v) or v is pd.NA else v


def check_same_inputs(both: pd.DataFrame, name: str, folder: Path, base: Path) -> None:
    """Refuse pairs whose samples answer different prompts (or edit different clips): the first one, both values."""
    for field in SAME_INPUT:
        a, b = f"{field}_policy", f"{field}_base"
        if a not in both.columns and b not in both.columns:
            continue
        for r in both.itertuples(index=False):
            mine, theirs = _plain(getattr(r, a, None)), _plain(getattr(r, b, None))
            if isinstance(mine, float) and isinstance(theirs, float) and abs(mine - theirs) < 1e-9:
                continue
            if mine != theirs:
                raise DenseDPOError(
                    f"--policy {name}={folder} and --base {base} differ at prompt_id {r.prompt_id!r} (k={r.k}): "
                    f"{field} {mine!r} vs {theirs!r}. Sample both from the same --prompts (or --sources) file."
                )


def videos_digest(path_a: Path, path_b: Path, known: dict[Path, str]) -> str:
    """12 hex digits that change whenever either video's bytes do (the pair's identity for the judge's journal);
    `known` keeps each file's digest, so a base video shared by several policies is read once."""
    for path in (path_a, path_b):
        if path not in known:
            known[path] = file_sha256(path)
    return hashlib.sha256(f"{known[path_a]}:{known[path_b]}".encode()).hexdigest()[:12]


def pair_samples(base: Path, policies: dict[str, Path], out: Path) -> tuple[Path, pd.DataFrame]:
    """Write out/pairs.parquet (one row per policy and shared sample); return its path and the table."""
    base_df = read_samples(base)
    base_settings = _settings(base_df, base)
    rows, digests = [], {}
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
        check_same_inputs(both, name, folder, base)
        seeds = both[both["seed_policy"] != both["seed_base"]]
        if len(seeds):
            r = seeds.iloc[0]
            raise DenseDPOError(
                f"--policy {name}: sample (prompt_id={r['prompt_id']!r}, k={r['k']}) has seed {r['seed_policy']} "
                f"but the base's has {r['seed_base']}: sample both with the same --seed."
            )
        tables = {"policy": samples_table_path(folder), "base": samples_table_path(base)}
        for r in both.itertuples(index=False):
            paths = {side: resolve_path(tables[side], getattr(r, f"video_{side}")) for side in ("policy", "base")}
            rows.append(
                {
                    "pair_id": f"{name}:{r.prompt_id}:{r.k}:{videos_digest(paths['policy'], paths['base'], digests)}",
                    "prompt": r.prompt_policy,
                    "video_a": os.path.relpath(paths["policy"], out),
                    "video_b": os.path.relpath(paths["base"], out),
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
