"""`densedpo sources`: candidate clips -> sources.parquet and sources.report.parquet.

run_sources() reads top to bottom: 1 collect the candidates (sources/collect.py; optionally cut long videos into
shots with PySceneDetect), 2 probe each clip (readable, fps, duration, size) and drop it with its reason: too
short for `generate`, too small, too few fps, too little motion (mean top-5% flow over VBench's per-pair
threshold, densedpo/motion.py), no caption; then one clip of each content (a duplicate by digest: a captioned
copy first); 3 write the kept clips (the sources contract plus what was measured) and the report of every clip,
atomically.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from densedpo.errors import DenseDPOError
from densedpo.progress import progress_bar
from densedpo.tables import SOURCES, write_table
from sources.collect import collect

# What `generate` needs at its defaults (81 frames at 16 fps): a clip of at least 81 / 16 s.
GENERATE_FRAMES, GENERATE_FPS = 81, 16.0
MOTION_SIDE = 256  # frames are downscaled to this longer side for the motion measure (the rule scales with size)
MOTION_SECONDS = 10.0  # at most this much of each clip is measured
REASONS = ("unreadable", "too_short", "too_small", "low_fps", "duplicate", "low_motion", "no_caption", "vlm_filter")


@dataclass
class SourcesConfig:
    from_path: Path
    out: Path = Path("sources.parquet")
    video_column: str | None = None
    caption_column: str | None = None
    min_seconds: float = GENERATE_FRAMES / GENERATE_FPS
    min_side: int = 0
    min_fps: float = 0.0
    min_motion: float | None = None  # mean top-5% flow over VBench's per-pair threshold (an average; VBench's
    # dynamic degree instead counts the frame pairs over the threshold)
    dedupe: bool = True
    split_scenes: bool = False
    scene_threshold: float = 27.0  # PySceneDetect ContentDetector's threshold
    min_scene_seconds: float = 1.0
    # the VLM (same servers and client as `label`): a yes/no filter and captions for clips without one
    filter_prompt: str | None = None  # e.g. dynamics (prompts/sources/dynamics_v1.yaml)
    min_filter_p: float = 0.5  # keep a clip when p(yes) reaches this
    caption: bool = False
    caption_prompt: str = "caption_v1"
    server: list[str] | None = None
    model: str | None = None
    api: str = "vllm"  # vllm | openai (any OpenAI-compatible endpoint: only fields the OpenAI API defines)
    api_key_env: str | None = None
    concurrency: int = 8

    @property
    def asks_vlm(self) -> bool:
        return bool(self.filter_prompt or self.caption)

    def check(self) -> None:
        if self.min_seconds < 0 or self.min_side < 0 or self.min_fps < 0:
            raise DenseDPOError("--min-seconds, --min-side and --min-fps must not be negative.")
        if self.out.suffix != ".parquet":
            raise DenseDPOError(f"--out must be a .parquet file, got {self.out}.")
        if self.asks_vlm and not (self.server or self.model):
            raise DenseDPOError("--filter-prompt and --caption ask a VLM: pass --server URL or --model M.")
        if self.api not in ("vllm", "openai") or (self.api == "openai" and not self.server):
            raise DenseDPOError("--api must be vllm or openai; --api openai needs --server (the endpoint's base URL).")
        if not 0 <= self.min_filter_p <= 1:
            raise DenseDPOError(f"--min-filter-p must lie in [0, 1], got {self.min_filter_p}.")


def report_path(out: Path) -> Path:
    return out.with_name(out.stem + ".report.parquet")


@dataclass
class SourcesResult:
    kept: pd.DataFrame
    report: pd.DataFrame
    out: Path
    counts: dict[str, int]  # kept, and each drop reason


def run_sources(cfg: SourcesConfig, console=None, progress: bool = True) -> SourcesResult:
    """Collect, probe and filter every clip; write sources.parquet and its report (see the module docstring)."""
    from rich.console import Console

    cfg.check()
    console = console or Console(stderr=True)

    # 1. Candidates (and shots, when long videos are cut).
    candidates = collect(cfg.from_path, cfg.video_column, cfg.caption_column)
    if cfg.split_scenes:
        candidates = split_into_scenes(candidates, cfg.scene_threshold, cfg.min_scene_seconds)

    twice = candidates["source_id"][candidates["source_id"].duplicated()]
    if len(twice):  # collect makes ids unique; a split or a future reader must not break that (the VLM journal)
        raise DenseDPOError(f"--from {cfg.from_path}: source id {twice.iloc[0]!r} names two clips; report this bug.")

    # 2. Probe and filter, one clip at a time; then one clip of each content (a captioned copy first).
    rows = []
    with progress_bar(console, "clips", progress) as bar:
        task = bar.add_task("probing", total=len(candidates))
        for clip in candidates.to_dict("records"):
            rows.append(measure(clip, cfg))
            bar.advance(task)
    report = pd.DataFrame(rows)
    if cfg.dedupe:
        report = drop_duplicates(report)
    if cfg.asks_vlm:  # 2b. Captions for clips without one, then the yes/no filter, through the VLM.
        report = ask_vlm(report, cfg, console, progress)

    # 3. Write the kept clips (paths relative to the table when they lie under its folder) and the report.
    kept = report[report["reason"].isna()].drop(columns=["reason", "detail", "digest"])
    kept = kept.rename(columns={"caption": "prompt"})
    counts = {"kept": len(kept), **{r: int(n) for r, n in Counter(report["reason"].dropna()).items()}}
    from densedpo.files import atomic_path

    with atomic_path(report_path(cfg.out)) as tmp:  # written in every case: it says why each clip was dropped
        report.to_parquet(tmp, index=False)
    if kept.empty:
        raise DenseDPOError(nothing_kept(len(report), counts, cfg) + f" Every clip and why: {report_path(cfg.out)}")
    kept = kept.assign(video=[relative_to(cfg.out, v) for v in kept["video"]])
    write_table(kept.reset_index(drop=True), cfg.out, SOURCES)
    return SourcesResult(kept, report, cfg.out, counts)


def drop_duplicates(report: pd.DataFrame) -> pd.DataFrame:
    """Of clips with the same content (digest) that would be kept or captioned, keep one: the first with a
    caption, else the first; the others are dropped as duplicates of it. Deciding after every check means a
    captioned copy is never dropped for an uncaptioned one that is itself dropped later."""
    report = report.copy()
    alive = report["digest"].notna() & (report["reason"].isna() | report["reason"].eq("no_caption"))
    for _, g in report[alive].groupby("digest", sort=False):
        if len(g) < 2:
            continue
        keep = g.index[g["reason"].isna()][0] if g["reason"].isna().any() else g.index[0]
        for i in g.index.drop(keep):
            report.loc[i, ["reason", "detail"]] = ["duplicate", f"same content as {report.at[keep, 'source_id']}"]
    return report


def measure(clip: dict, cfg: SourcesConfig, info=None, note: str = "") -> dict:
    """One candidate's report row: what was measured, and the reason it is dropped (None: kept). `info` overrides
    the probe (a container that over-reports its frames is measured again with the frames it decodes)."""
    from densedpo.video import VideoInfo, count_frames, probe

    row = {
        **clip,
        "duration_s": None,
        "fps": None,
        "height": None,
        "width": None,
        "motion_over_threshold": None,
        "digest": None,
    }
    try:
        info = info or probe(clip["video"])
    except DenseDPOError as e:
        return {**row, "reason": "unreadable", "detail": str(e)}
    start = 0.0 if pd.isna(clip["start_s"]) else float(clip["start_s"])
    end = min(np.inf if pd.isna(clip["end_s"]) else float(clip["end_s"]), info.num_frames / info.fps)
    row.update(duration_s=round(end - start, 3), fps=info.fps, height=info.height, width=info.width)
    checks = (
        ("too_short", end - start < cfg.min_seconds, f"{end - start:.2f} s < --min-seconds {cfg.min_seconds:g}"),
        ("too_small", min(info.height, info.width) < cfg.min_side, f"shorter side < --min-side {cfg.min_side}"),
        ("low_fps", info.fps < cfg.min_fps, f"{info.fps:g} fps < --min-fps {cfg.min_fps:g}"),
    )
    for reason, failed, detail in checks:
        if failed:
            return {**row, "reason": reason, "detail": detail + note}
    row["digest"] = content_digest(Path(clip["video"]), None if pd.isna(clip["start_s"]) else start, end)
    try:
        row["motion_over_threshold"] = round(clip_motion(Path(clip["video"]), info.fps, info.num_frames, start, end), 4)
    except DenseDPOError as e:
        decoded = count_frames(clip["video"])
        if note or decoded >= info.num_frames:
            return {**row, "reason": "unreadable", "detail": str(e)}
        # webm/mkv state no frame count; OpenCV estimates it from the duration, which can overshoot
        note = f" (the container says {info.num_frames} frames, {decoded} decode)"
        return measure(clip, cfg, VideoInfo(decoded, info.fps, info.height, info.width), note)
    if cfg.min_motion is not None and row["motion_over_threshold"] < cfg.min_motion:
        return {
            **row,
            "reason": "low_motion",
            "detail": f"motion_over_threshold {row['motion_over_threshold']:.3f} < --min-motion {cfg.min_motion:g}",
        }
    if not has_text(clip["caption"]):
        return {**row, "reason": "no_caption", "detail": "no caption (a sidecar .txt or a manifest column)" + note}
    return {**row, "reason": None, "detail": note.strip(" ()") or None}


def vlm_journal(out: Path) -> Path:
    return out.with_name(out.stem + ".vlm.jsonl")


def ask_vlm(report: pd.DataFrame, cfg: SourcesConfig, console, progress: bool) -> pd.DataFrame:
    """Caption the clips that lack one (--caption), then ask the yes/no filter of the clips still kept; both
    journaled beside --out. Adds caption_source "vlm", filter_answer, filter_p, filter_prompt."""
    import asyncio
    import contextlib

    from sources.vlm import load_clip_prompt

    report = report.assign(filter_answer=None, filter_p=np.nan, filter_prompt=None)
    with contextlib.ExitStack() as stack:
        urls = cfg.server or [start_vlm(cfg, stack, console)]
        if cfg.caption:
            prompt = load_clip_prompt(cfg.caption_prompt)
            rows = report.index[report["reason"].eq("no_caption")]
            answers = asyncio.run(_ask(report, rows, prompt, urls, cfg, console, progress, "captions"))
            for i in rows:
                a = answers[i]
                if a["answer"]:
                    report.loc[i, ["caption", "caption_source", "reason", "detail"]] = [a["answer"], "vlm", None, None]
                else:
                    report.at[i, "detail"] = f"the VLM wrote no caption: {a['error']}"
        if cfg.filter_prompt:
            prompt = load_clip_prompt(cfg.filter_prompt)
            rows = report.index[report["reason"].isna()]
            answers = asyncio.run(_ask(report, rows, prompt, urls, cfg, console, progress, "filter"))
            for i in rows:
                a = answers[i]
                report.loc[i, ["filter_answer", "filter_p", "filter_prompt"]] = [a["answer"], a["p"], prompt.key]
                if a["p"] is None or a["p"] < cfg.min_filter_p:
                    why = (
                        a["error"]
                        or f"answered {a['answer']} (p(yes) {a['p']:.3f} < --min-filter-p {cfg.min_filter_p:g})"
                    )
                    report.loc[i, ["reason", "detail"]] = ["vlm_filter", why]
    return report


def start_vlm(cfg: SourcesConfig, stack, console) -> str:
    """An embedded vLLM for --model (as `label --model` starts it), stopped when the run ends."""
    from labeler.servers import managed_vllm
    from sources.vlm import FRAMES_PER_CLIP

    log = cfg.out.with_name(cfg.out.stem + ".vllm.log")
    console.print(f"starting vLLM for {cfg.model} (log: {log}) ...")
    return stack.enter_context(managed_vllm(cfg.model, log_path=log, max_images=FRAMES_PER_CLIP))


async def _ask(report, rows, prompt, urls, cfg, console, progress, what) -> dict:
    """{report row: answer} for the given rows, through the journal (sources/vlm.py: ask_all)."""
    from labeler.client import ServerPool
    from labeler.judges import JudgeSpec
    from labeler.judges.chat import resolve_model
    from sources.vlm import Question, ask_all

    spec = JudgeSpec(model=cfg.model, api=cfg.api, api_key_env=cfg.api_key_env)
    async with ServerPool(urls, api_key=spec.api_key(), openai_base=cfg.api == "openai") as pool:
        model = await resolve_model(pool, spec)
        questions = {}
        for i, r in zip(rows, report.loc[rows].itertuples()):
            start = 0.0 if pd.isna(r.start_s) else float(r.start_s)
            caption = r.caption if has_text(r.caption) else None
            end = start + r.duration_s
            questions[i] = Question(r.source_id, prompt, r.video, r.fps, start, end, caption, r.digest, model)
        with progress_bar(console, "clips", progress) as bar:
            task = bar.add_task(what, total=len(questions))
            journal = vlm_journal(cfg.out)
            advance = lambda: bar.advance(task)  # noqa: E731
            answers = await ask_all(list(questions.values()), pool, model, journal, cfg.concurrency, advance, cfg.api)
        return {i: answers[q.key] for i, q in questions.items()}


def has_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def content_digest(path: Path, start_s: float | None, end_s: float | None) -> str:
    """The clip's identity for de-duplication: its file's bytes (and the span, for a clip inside a file)."""
    from densedpo.files import file_sha256

    span = "" if start_s is None else f"|{start_s:.3f}-{end_s:.3f}"
    return hashlib.sha256((file_sha256(path) + span).encode()).hexdigest()[:16]


def clip_motion(path: Path, fps: float, num_frames: int, start_s: float, end_s: float) -> float:
    """VBench's dynamic-degree measure (densedpo/motion.py) of the clip's first MOTION_SECONDS, as a multiple of
    the rule's threshold: the mean top-5% flow of frame pairs about 1/8 s apart over the threshold (1.0: the
    flow VBench calls dynamic). Frames are downscaled to MOTION_SIDE (threshold and flow scale alike)."""
    from densedpo.motion import VBENCH_FPS, vbench_stride, video_motion
    from densedpo.video import read_frames, resize_to_fit

    stride = vbench_stride(fps)
    first = int(np.ceil(start_s * fps - 1e-6))
    last = min(num_frames, int(np.floor(min(end_s, start_s + MOTION_SECONDS) * fps)))
    idx = list(range(first, last, stride))
    if len(idx) < 2:
        return 0.0
    frames = np.stack([resize_to_fit(f, MOTION_SIDE) for f in read_frames(path, idx)])
    m = video_motion(frames, min(fps, VBENCH_FPS) if stride == 1 else VBENCH_FPS)
    return m.mean_top5_px / m.threshold_px


def split_into_scenes(candidates: pd.DataFrame, threshold: float, min_seconds: float) -> pd.DataFrame:
    """Each whole-file candidate cut into its shots (PySceneDetect's ContentDetector); one shot stays as it was."""
    try:
        from scenedetect import ContentDetector, detect
    except ImportError:
        raise DenseDPOError("--split-scenes needs PySceneDetect: pip install --no-deps scenedetect") from None
    rows = []
    for clip in candidates.to_dict("records"):
        if not pd.isna(clip["start_s"]):  # already a clip of its file (a manifest's timestamps)
            rows.append(clip)
            continue
        try:
            scenes = detect(clip["video"], ContentDetector(threshold=threshold, min_scene_len=1))
        except Exception:  # an unreadable file: the probe reports it
            scenes = []
        spans = [
            (a.get_seconds(), b.get_seconds()) for a, b in scenes if b.get_seconds() - a.get_seconds() >= min_seconds
        ]
        if len(spans) <= 1:
            rows.append(clip)
            continue
        for k, (a, b) in enumerate(spans):
            rows.append({**clip, "source_id": f"{clip['source_id']}-s{k}", "start_s": a, "end_s": b})
    return pd.DataFrame(rows, columns=candidates.columns)


def relative_to(table: Path, video: str) -> str:
    """A video path as the table stores it: relative to the table's folder when under it, else absolute."""
    try:
        return str(Path(video).resolve().relative_to(Path(table).resolve().parent))
    except ValueError:
        return str(Path(video).resolve())


def nothing_kept(n: int, counts: dict[str, int], cfg: SourcesConfig) -> str:
    """The one line of a run that keeps no clip: the counts by reason and the flag to try for the largest."""
    reasons = {k: v for k, v in counts.items() if k != "kept"}
    top = max(reasons, key=reasons.get) if reasons else None
    tips = {
        "too_short": f"a lower --min-seconds (now {cfg.min_seconds:g}; generate --num-frames/--fps set what it needs)",
        "too_small": "a lower --min-side",
        "low_fps": "a lower --min-fps",
        "low_motion": "a lower --min-motion",
        "no_caption": "captions (sidecar .txt files or --caption-column)",
        "unreadable": "re-encoded videos (H.264 MP4)",
        "duplicate": "distinct clips",
        "vlm_filter": "a lower --min-filter-p, or another --filter-prompt",
    }
    return (
        f"no clip kept of {n}: "
        + ", ".join(f"{v} {k}" for k, v in reasons.items())
        + (f". Try {tips[top]}." if top else ".")
    )
