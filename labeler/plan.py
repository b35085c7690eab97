"""Step 1 of `label`: validate every pair, cut its segments, name each request; the dry run's plan."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from densedpo.errors import DenseDPOError
from densedpo.tables import PAIRS, read_table, resolve_path
from densedpo.video import VideoInfo, probe
from labeler.config import LabelConfig, cost_usd
from labeler.journal import journal_path_for, read_journal
from labeler.judges import Judge, JudgeSpec, make_judge
from labeler.parse import REASONED
from labeler.segments import Segment, sample_frame_indices, segment_bounds

REQUEST_ORDERS = ("ab", "ba")  # a chat judge sees each segment twice: video a first, then video b first


@dataclass
class PairPlan:
    row: int
    pair_id: str
    prompt: str
    video_a: Path
    video_b: Path
    info: VideoInfo
    segments: list[Segment]


def plan_pairs(cfg: LabelConfig, pairs: pd.DataFrame | None = None) -> list[PairPlan]:
    """Validate every pair (both videos readable, same fps, frame count and size) and cut its segments."""
    pairs = read_table(cfg.pairs, PAIRS) if pairs is None else pairs
    where = str(cfg.pairs)

    def one(i: int) -> PairPlan:
        row = pairs.iloc[i]
        label = f"{where} row {i} (pair_id={row['pair_id']!r})"
        infos = {}
        for col in ("video_a", "video_b"):
            path = resolve_path(cfg.pairs, row[col])
            try:
                infos[col] = (path, probe(path))
            except DenseDPOError as e:
                raise DenseDPOError(f"{label}, column {col}: {e}") from None
        (pa, ia), (pb, ib) = infos["video_a"], infos["video_b"]
        if abs(ia.fps - ib.fps) > 1e-3 or (ia.height, ia.width) != (ib.height, ib.width):
            raise DenseDPOError(
                f"{label}: video_a is {_desc(ia)} but video_b is {_desc(ib)}; the two videos of a pair must share "
                "fps and size (regenerate or re-encode them)."
            )
        n = ia.num_frames
        if ia.num_frames != ib.num_frames:
            if not cfg.trim_to_shortest:
                raise DenseDPOError(
                    f"{label}: video_a has {ia.num_frames} frames but video_b has {ib.num_frames}; pass "
                    "--trim-to-shortest to label only their common frames."
                )
            n = min(ia.num_frames, ib.num_frames)
        info = VideoInfo(n, ia.fps, ia.height, ia.width)
        return PairPlan(
            i, str(row["pair_id"]), str(row["prompt"]), pa, pb, info, segment_bounds(n, ia.fps, cfg.segment_seconds)
        )

    with ThreadPoolExecutor(max_workers=4) as ex:
        futures = [ex.submit(one, i) for i in range(len(pairs))]
        errors, plans = [], []
        for f in futures:
            try:
                plans.append(f.result())
            except DenseDPOError as e:
                errors.append(str(e))
    if errors:
        more = f" (and {len(errors) - 1} more bad row(s))" if len(errors) > 1 else ""
        raise DenseDPOError(errors[0] + more)
    return plans


def _desc(i: VideoInfo) -> str:
    return f"{i.num_frames} frames at {i.fps:g} fps, {i.width}x{i.height}"


def request_id(pair_id: str, segment_idx: int, unit: str) -> str:
    return f"{pair_id}:{segment_idx}:{unit}"


def frames_per_video(plans: list[PairPlan], sample_fps: float) -> int:
    """The most frames one video of a segment shows."""
    return max(len(sample_frame_indices(s, p.info.fps, sample_fps)) for p in plans for s in p.segments)


def max_images_per_request(plans: list[PairPlan], sample_fps: float) -> int:
    return 2 * frames_per_video(plans, sample_fps)


def journal_judges(specs: list[JudgeSpec], header: dict | None) -> tuple[list[Judge], bool]:
    """(the run's judges, whether they are bound): bound to the models the journal header names (no server
    needed) when it records the same number of judges; unbound (no ids yet) otherwise."""
    judges = [make_judge(s) for s in specs]
    recorded = (header or {}).get("judges") or []
    if len(recorded) != len(judges):
        return judges, False
    for judge, fp in zip(judges, recorded):
        judge.bind(fp["model"])
    return judges, True


def dry_run_plan(cfg: LabelConfig) -> dict:
    """What `label` would do, without any server: pairs, segments, requests and images per judge, how many the
    journal has, and (where earlier answers reported usage) the tokens and cost still to spend."""
    specs, _ = cfg.judge_specs()
    plans = plan_pairs(cfg)
    header, done = read_journal(journal_path_for(cfg.out))
    judges, _ = journal_judges(specs, header)
    n_segments = sum(len(p.segments) for p in plans)
    plan = {
        "pairs": len(plans),
        "segments": n_segments,
        "requests": 0,
        "already_journaled": 0,
        "images_per_request_max": 0,
    }
    for judge, spec in zip(judges, specs):
        ids = {
            (judge.id, request_id(p.pair_id, s.segment_idx, u)) for p in plans for s in p.segments for u in judge.units
        }
        answered = [done[k] for k in ids & set(done) if done[k].status != REASONED]  # a thought awaits its answer
        name = judge.id or spec.name or f"{spec.kind}:{spec.model or 'served model'}"
        plan["requests"] += len(ids)
        plan["already_journaled"] += len(answered)
        per_request = judge.images_per_request(frames_per_video(plans, cfg.sample_fps))
        plan["images_per_request_max"] = max(plan["images_per_request_max"], per_request)
        prefix = f"{name}: " if len(specs) > 1 else ""
        plan[f"{prefix}requests left"] = len(ids) - len(answered)
        plan[f"{prefix}images left (at most)"] = (len(ids) - len(answered)) * per_request
        reported = [r for r in answered if r.prompt_tokens is not None]
        if reported:
            left = len(ids) - len(answered)
            tokens_in = left * sum(r.prompt_tokens for r in reported) / len(reported)
            tokens_out = left * sum(r.completion_tokens or 0 for r in reported) / len(reported)
            plan[f"{prefix}prompt tokens left (est.)"] = round(tokens_in)
            plan[f"{prefix}completion tokens left (est.)"] = round(tokens_out)
            if spec.price_in is not None or spec.price_out is not None:
                plan[f"{prefix}cost left (est., USD)"] = cost_usd(tokens_in, tokens_out, spec)
    return plan
