"""Samples while training (`train -o sample_every=N -o sample_prompts=P -o sample_seeds=0,1`): the app gives dpo's
trainer a hook that samples the current policy with generation's Sampler (stages never use each other's code).

Samples are made at the resolution, frame count, fps, steps and CFG of the training pairs, with `densedpo
sample`'s pairing rule (the seed of sample k of a prompt is a function of the seed 0, the prompt id and k), so
run/samples/step-N/ pairs with a `densedpo sample` run of the base model at those settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def pair_settings(pairs_path: Path) -> dict:
    """num_frames, fps, height, width, steps and guidance of the training pairs (the first row; videos probed when
    the table does not say)."""
    import pandas as pd

    from densedpo.tables import PAIRS, read_table, resolve_path
    from densedpo.video import probe

    row = read_table(pairs_path, PAIRS).iloc[0]

    def given(col, default=None):
        return row[col] if col in row and pd.notna(row[col]) else default

    known = given("num_frames") and given("fps") and given("height")
    info = None if known else probe(resolve_path(pairs_path, row["video_a"]))
    return {
        "num_frames": int(given("num_frames", info and info.num_frames)),
        "fps": float(given("fps", info and info.fps)),
        "height": int(given("height", info and info.height)),
        "width": int(given("width", info and info.width)),
        "steps": int(given("num_inference_steps", 40)),
        "guidance": float(given("guidance_scale", 8.0)),
    }


def make_sample_hook(cfg):
    """The hook for dpo.train.train(sample_hook=...): (step, transformer, folder) -> metrics, videos, fps."""
    from densedpo.files import atomic_write_text
    from densedpo.motion import video_motion
    from densedpo.video import read_frames
    from generation.engine import Sampler
    from generation.sample import SampleConfig, _row_path, make_samples, merge_samples, plan_samples

    settings = pair_settings(Path(cfg.pairs))
    ks = sorted({int(k) for k in str(cfg.sample_seeds).split(",")})
    state: dict = {}

    def hook(step: int, transformer, folder: Path) -> dict:
        k_max = max(ks) + 1
        scfg = SampleConfig(
            prompts=cfg.sample_prompts, model=cfg.model, out=folder, seeds_per_prompt=k_max, dtype="float32", **settings
        )
        if "sampler" not in state:  # the pipeline's text encoder and VAE, loaded once
            state["sampler"] = Sampler(scfg, device=str(next(transformer.parameters()).device))
        sampler = state["sampler"]
        sampler.cfg = scfg
        own, sampler.pipe.transformer = sampler.pipe.transformer, transformer  # the policy as it is now
        try:
            tasks, _ = plan_samples(scfg)
            rows = []
            for task in tasks:
                task.ks = [k for k in task.ks if k in ks]
                rows += make_samples(sampler, task, scfg, None) if task.ks else []
            for row in rows:
                atomic_write_text(_row_path(folder, row["prompt_id"], row["k"]), json.dumps(row))
            merge_samples(folder)
        finally:
            sampler.pipe.transformer = own
        videos = [read_frames(folder / row["video"]) for row in rows]
        motions = [video_motion(v, scfg.fps) for v in videos]
        return {
            "sample_motion": float(np.mean([m.mean_top5_px for m in motions])) if motions else 0.0,
            "sample_dynamic_degree": float(np.mean([m.dynamic for m in motions])) if motions else 0.0,
            "videos": videos[:4],
            "fps": scfg.fps,
        }

    return hook
