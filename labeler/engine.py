"""`densedpo label`: aligned pairs -> one preference row per (pair, segment, judge), judged over HTTP.

label_pairs() reads top to bottom: 1 plan (validate pairs, cut segments), 2 resume (journal), 3 start or
reach the servers and check each judge's server answers as it needs, 4 ask every unit (both orders for a chat
judge, each video for a scorer) of every segment, frames decoded once for all judges, 5 aggregate (and combine
a jury) and write labels.parquet, 6 summarise. What differs between judges lives in labeler/judges/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from densedpo.errors import DenseDPOError
from densedpo.tables import LABEL_STATUSES, LABELS, PAIRS, read_table, resolve_path, write_table
from densedpo.video import VideoInfo, probe, read_frames
from labeler.aggregate import JURY_RULES, combine_judges, decided
from labeler.client import RequestFailed, ServerPool
from labeler.journal import Journal, journal_path_for, read_journal
from labeler.judges import Judge, JudgeSpec, load_jury, make_judge
from labeler.judges.chat import build_body, build_messages  # noqa: F401  (the request layout, re-exported)
from labeler.judges.score import POOLING_ARGS
from labeler.parse import OrderResult
from labeler.prompts import DEFAULT_PROMPT
from labeler.segments import Segment, sample_frame_indices, segment_bounds

ORDERS = ("ab", "ba")
JURY = "jury"  # the judge id of a jury's combined rows


class LabelingStopped(DenseDPOError):
    """The caller's should_stop() turned true: finished work is journaled, no table was written."""


@dataclass
class LabelConfig:
    pairs: Path
    out: Path = Path("labels.parquet")
    server: list[str] = field(default_factory=list)
    model: str | None = None
    segment_seconds: float = 1.0
    sample_fps: float = 8.0
    min_confidence: float = 0.5
    concurrency: int = 32
    prompt: str = DEFAULT_PROMPT
    max_side: int = 448
    jpeg_quality: int = 90
    trim_to_shortest: bool = False
    max_failure_rate: float = 0.05
    max_retries: int = 4
    retry_backoff_s: float = 0.5
    request_timeout_s: float = 120.0
    top_logprobs: int = 20
    max_model_len: int | None = None
    restart: bool = False
    retry_parse_errors: bool = False
    # the judge (labeler/judges/): these flags make one judge; --judges YAML makes a jury of several
    judge: str = "chat"  # chat | score
    api: str = "vllm"  # vllm | openai | transformers (a scorer densedpo serves itself, scorers/)
    api_key_env: str | None = None
    samples: int = 0
    max_rps: float | None = None
    frames_as: str = "images"
    tie_margin: float = 0.0
    score_scale: float = 1.0
    score_weights: list[float] | None = None
    score_text: str | None = None
    price_in: float | None = None
    price_out: float | None = None
    judges: Path | None = None
    combine: str | None = None  # a jury's rule (mean | majority); default: the YAML's, else mean

    def check(self) -> None:
        self.judge_specs()
        for name in ("segment_seconds", "sample_fps", "max_side", "concurrency", "top_logprobs"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):  # NaN fails `> 0`; inf would never end a segment
                raise DenseDPOError(f"--{name.replace('_', '-')} must be a positive finite number, got {value}.")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise DenseDPOError(f"--min-confidence must lie in [0, 1], got {self.min_confidence}.")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise DenseDPOError(f"--max-failure-rate must lie in [0, 1], got {self.max_failure_rate}.")
        if self.top_logprobs < 3:
            raise DenseDPOError("--top-logprobs must be at least 3 (one per choice).")
        if self.combine is not None and self.combine not in JURY_RULES:
            raise DenseDPOError(f"--combine must be one of {', '.join(JURY_RULES)}, got {self.combine!r}.")

    def judge_spec(self) -> JudgeSpec:
        """The one judge the flags describe."""
        return JudgeSpec(kind=self.judge, api=self.api, server=list(self.server), model=self.model, prompt=self.prompt,
                         api_key_env=self.api_key_env, samples=self.samples, max_rps=self.max_rps,
                         frames_as=self.frames_as, top_logprobs=self.top_logprobs, tie_margin=self.tie_margin,
                         score_scale=self.score_scale, score_weights=self.score_weights,
                         score_text=self.score_text, price_in=self.price_in,
                         price_out=self.price_out)  # fmt: skip

    def judge_specs(self) -> tuple[list[JudgeSpec], str]:
        """(the judges, the jury's rule): one judge from the flags, or the --judges file's (flags as defaults)."""
        if self.judges is None:
            spec = self.judge_spec()
            spec.check("label")
            return [spec], self.combine or "mean"
        specs, rule = load_jury(self.judges, self.judge_spec())
        return specs, self.combine or rule


@dataclass
class PairPlan:
    row: int
    pair_id: str
    prompt: str
    video_a: Path
    video_b: Path
    info: VideoInfo
    segments: list[Segment]


@dataclass
class LabelResult:
    labels: pd.DataFrame
    out: Path
    summary: dict


# ---------------------------------------------------------------------------------------------- 1. plan


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
        return PairPlan(i, str(row["pair_id"]), str(row["prompt"]), pa, pb, info,
                        segment_bounds(n, ia.fps, cfg.segment_seconds))  # fmt: skip

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


# ---------------------------------------------------------------------------------------------- frames


def encode_frame(frame: np.ndarray, max_side: int, quality: int) -> str:
    """RGB uint8 (H, W, 3) -> JPEG data URL, downscaled so the longer side is at most `max_side`."""
    import cv2

    h, w = frame.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1:
        frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DenseDPOError("OpenCV could not encode a frame as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def prepare_pair(plan: PairPlan, segments: list[Segment], cfg: LabelConfig) -> dict[str, dict[int, str]]:
    """Decode each needed frame of both videos once, as data URLs: {"a": {frame: url}, "b": {...}}."""
    needed = sorted({i for s in segments for i in sample_frame_indices(s, plan.info.fps, cfg.sample_fps)})
    out = {}
    for side, path in (("a", plan.video_a), ("b", plan.video_b)):
        frames = read_frames(path, needed)
        out[side] = {i: encode_frame(f, cfg.max_side, cfg.jpeg_quality) for i, f in zip(needed, frames)}
    return out



# ---------------------------------------------------------------------------------------------- 3. servers


def start_servers(specs: list[JudgeSpec], plans: list[PairPlan], cfg: LabelConfig, stack: contextlib.ExitStack,
                  console) -> list[list[str]]:  # fmt: skip
    """Server URLs per judge: its --server, or an embedded vLLM started once per (model, kind) of the jury."""
    started: dict[tuple[str, str], str] = {}
    urls = []
    for spec in specs:
        if spec.server:
            urls.append(list(spec.server))
            continue
        key = (spec.model, spec.kind, spec.api)
        if key not in started and spec.api == "transformers":
            from labeler.vllm_server import managed_scorer

            log = cfg.out.with_name(cfg.out.name + f".scorer{len(started)}.log")
            console.print(f"starting the scorer for {spec.model} (transformers; log: {log}) ...")
            started[key] = stack.enter_context(managed_scorer(spec.model, log_path=log))
        if key not in started:
            from labeler.vllm_server import managed_vllm

            video = any(s.frames_as == "video" for s in specs if (s.model, s.kind, s.api) == key and not s.server)
            per_video = frames_per_video(plans, cfg.sample_fps)
            log = cfg.out.with_name(cfg.out.name + (f".vllm{len(started)}" if started else ".vllm") + ".log")
            runner = " (pooling runner)" if spec.kind == "score" else ""
            console.print(f"starting vLLM for {spec.model}{runner} (log: {log}) ...")
            started[key] = stack.enter_context(managed_vllm(
                spec.model, log_path=log, max_images=per_video * (1 if spec.kind == "score" else 2),
                max_videos=2 if video else 0, max_model_len=cfg.max_model_len,
                extra_args=POOLING_ARGS if spec.kind == "score" else ()))  # fmt: skip
        urls.append([started[key]])
    return urls


def open_pool(spec: JudgeSpec, urls: list[str], cfg: LabelConfig):
    """The judge's connection: a ServerPool over its servers, with its key and rate."""
    return ServerPool(urls, timeout_s=cfg.request_timeout_s, max_retries=cfg.max_retries,
                      backoff_s=cfg.retry_backoff_s, max_rps=spec.max_rps, api_key=spec.api_key(),
                      openai_base=spec.api == "openai")  # fmt: skip


# ---------------------------------------------------------------------------------------------- 4. ask


@dataclass
class _Request:
    request_id: str
    pair_idx: int
    segment_idx: int
    judge_idx: int
    unit: str
    body: dict | None
    images: int = 0
    error: str | None = None  # frame preparation failed


@dataclass
class LabelHooks:
    """How a caller (the CLI, the batch service) follows and steers a labeling run."""

    should_stop: Callable[[], bool] = lambda: False  # checked before each request; True stops promptly
    on_progress: Callable[[int, int], None] | None = None  # (segments done, segments total)
    on_request: Callable[[str, float], None] | None = None  # (answer status, latency in seconds)
    on_planned: Callable[[], None] | None = None  # every pair validated; nothing asked or written yet


@dataclass
class JudgeStats:
    requests: int = 0
    images: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: int = 0  # answers that carried token counts


@dataclass
class RunStats:
    requests_sent: int = 0
    prep_s: float = 0.0
    segments_prepared: int = 0
    judges: dict[str, JudgeStats] = field(default_factory=dict)

    def count(self, judge: str, req: _Request, result: OrderResult) -> None:
        s = self.judges.setdefault(judge, JudgeStats())
        s.requests += 1
        s.images += req.images
        if result.prompt_tokens is not None:
            s.usage_reported += 1
            s.prompt_tokens += result.prompt_tokens
            s.completion_tokens += result.completion_tokens or 0


async def ask_all(
    cfg: LabelConfig,
    plans: list[PairPlan],
    todo: list[list[tuple[Segment, int, str]]],
    judges: list[Judge],
    pools: list,
    journal: Journal,
    on_result: Callable[[_Request, OrderResult], None],
    stats: RunStats,
    hooks: LabelHooks | None = None,
) -> dict[tuple[str, str], OrderResult]:
    """Ask every (segment, judge, unit) in `todo`; journal answers, return this run's request errors.

    Frame preparation runs in threads a few pairs ahead of the requests, so the servers never wait on
    decoding; each frame is decoded and encoded once and the same bytes go to every judge and order (so vLLM's
    multimodal caches can hit); at most `cfg.concurrency` requests are in flight.
    """
    hooks = hooks or LabelHooks()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[_Request | None] = asyncio.Queue(maxsize=2 * cfg.concurrency)
    failures: dict[tuple[str, str], OrderResult] = {}
    transport_failures = 0
    executor = ThreadPoolExecutor(max_workers=2)

    def prep(i: int) -> tuple[dict | None, str | None, float]:
        t0 = time.perf_counter()
        segments = sorted({s for s, _, _ in todo[i]}, key=lambda s: s.segment_idx)
        try:
            return prepare_pair(plans[i], segments, cfg), None, time.perf_counter() - t0
        except DenseDPOError as e:
            return None, str(e), time.perf_counter() - t0

    async def producer() -> None:
        pending: deque = deque()
        indices = iter([i for i in range(len(plans)) if todo[i]])
        for i in indices:
            if hooks.should_stop():
                break
            pending.append((i, loop.run_in_executor(executor, prep, i)))
            if len(pending) < 3:
                continue
            await emit(*pending.popleft())
        while pending:
            await emit(*pending.popleft())
        for _ in range(cfg.concurrency):
            await queue.put(None)

    async def emit(i: int, fut) -> None:
        urls, error, seconds = await fut
        stats.prep_s += seconds
        stats.segments_prepared += len({s.segment_idx for s, _, _ in todo[i]})
        plan = plans[i]
        frames: dict[int, tuple[list[str], list[str]]] = {}
        for seg, j, unit in todo[i]:
            rid = request_id(plan.pair_id, seg.segment_idx, unit)
            body, images = None, 0
            if urls is not None:
                if seg.segment_idx not in frames:
                    idx = sample_frame_indices(seg, plan.info.fps, cfg.sample_fps)
                    frames[seg.segment_idx] = ([urls["a"][k] for k in idx], [urls["b"][k] for k in idx])
                frames_a, frames_b = frames[seg.segment_idx]
                body = judges[j].request(unit, plan.prompt, frames_a, frames_b)
                images = judges[j].images_per_request(len(frames_a))
            await queue.put(_Request(rid, i, seg.segment_idx, j, unit, body, images, error))

    async def worker() -> None:
        nonlocal transport_failures
        while (req := await queue.get()) is not None:
            if hooks.should_stop():
                continue
            judge, pool = judges[req.judge_idx], pools[req.judge_idx]
            if req.body is None:
                result = OrderResult(req.request_id, req.unit, "request_error", error=req.error, judge=judge.id)
                failures[result.key] = result
                on_result(req, result)
                continue
            stats.requests_sent += 1
            t0 = time.perf_counter()
            try:
                resp = await pool.post(judge.path, req.body, request_id=req.request_id)
            except RequestFailed as e:
                result = OrderResult(req.request_id, req.unit, "request_error", raw_response=e.body, error=str(e),
                                     judge=judge.id)  # fmt: skip
                failures[result.key] = result
                transport_failures = transport_failures + 1 if e.body is None else 0
                if transport_failures >= max(4, cfg.concurrency):
                    raise DenseDPOError(
                        f"the server(s) {', '.join(pool.urls)} stopped answering ({e}). Every answered request "
                        f"is saved in {journal.path}: rerun the same command to resume."
                    ) from e
            else:
                transport_failures = 0
                result = judge.read(resp, req.request_id, req.unit)
                journal.append(result)
            stats.count(judge.id, req, result)
            if hooks.on_request:
                hooks.on_request(result.status, time.perf_counter() - t0)
            on_result(req, result)

    tasks = [asyncio.create_task(producer())] + [asyncio.create_task(worker()) for _ in range(cfg.concurrency)]
    try:
        await _gather_or_cancel(tasks)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    return failures


async def _gather_or_cancel(tasks: list[asyncio.Task]) -> None:
    """Wait for all tasks; on the first error cancel the rest and re-raise it."""
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                raise t.exception()
    finally:
        for t in tasks:
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------------------------------- 5. rows


def assemble_rows(
    plans: list[PairPlan], results: dict[tuple[str, str], OrderResult], cfg: LabelConfig, judges: list[Judge],
    rule: str = "mean", skip_missing: bool = False,
) -> pd.DataFrame:
    """One row per segment and judge, plus a jury row per segment when there are several judges; with
    skip_missing, only segments whose every answer is in (a partial table)."""
    rows = []
    for plan in plans:
        for seg in plan.segments:
            answers = [{u: results.get((j.id, request_id(plan.pair_id, seg.segment_idx, u))) for u in j.units}
                       for j in judges]  # fmt: skip
            if skip_missing and any(r is None for a in answers for r in a.values()):
                continue
            base = {"pair_id": plan.pair_id, "segment_idx": seg.segment_idx, "frame_start": seg.frame_start,
                    "frame_end": seg.frame_end, "t_start_s": seg.t_start_s, "t_end_s": seg.t_end_s}  # fmt: skip
            judged = {}
            for judge, a in zip(judges, answers):
                judged[judge.id] = judge.combine(a, cfg.min_confidence)
                prompt = getattr(judge, "prompt", None)
                rows.append({**base, **judged[judge.id], "judge_model": judge.model,
                             "prompt_name": prompt and prompt.name, "prompt_sha256": prompt and prompt.sha256,
                             **judge.answer_columns(a), "judge": judge.id})  # fmt: skip
            if len(judges) > 1:
                rows.append({**base, **combine_judges(judged, rule, cfg.min_confidence),
                             "judge_model": f"jury ({rule} of {len(judges)})", "judge": JURY})  # fmt: skip
    table = pd.DataFrame(rows, columns=[c for c in LABELS.names if c != "annotator"])
    return table.drop(columns=[c for c in ("score_a", "score_b") if table[c].isna().all()])


def summarize(labels: pd.DataFrame) -> dict:
    """Counts per status, coverage (share of segments labeled a or b), mean confidence, order agreement."""
    n = len(labels)
    counts = Counter(labels["status"])
    is_decided = decided(labels)
    agreement = labels["order_agreement"].dropna().astype(bool)
    conf = labels["confidence"].dropna()
    failed = counts["request_error"] + counts["parse_error"]
    return {
        "segments": n,
        "pairs": labels["pair_id"].nunique(),
        "status_counts": {s: counts.get(s, 0) for s in LABEL_STATUSES},
        "coverage": float(is_decided.mean()) if n else 0.0,
        "mean_confidence": float(conf.mean()) if len(conf) else math.nan,
        "order_agreement_rate": float(agreement.mean()) if len(agreement) else math.nan,
        "failure_rate": failed / n if n else 0.0,
    }


def cost_usd(prompt_tokens: float, completion_tokens: float, spec: JudgeSpec) -> float:
    """Estimated cost at the spec's prices (USD per million tokens)."""
    return (prompt_tokens * (spec.price_in or 0) + completion_tokens * (spec.price_out or 0)) / 1e6


def judge_summaries(labels: pd.DataFrame, judges: list[Judge], stats: RunStats) -> dict[str, dict]:
    """Per judge (and the jury): its table figures, and this run's requests, images, tokens and estimated cost."""
    out = {}
    for judge in judges:
        s = stats.judges.get(judge.id, JudgeStats())
        row = {**summarize(labels[labels["judge"] == judge.id]), "kind": judge.kind, "requests": s.requests,
               "images": s.images, "confidence_from": getattr(judge, "confidence_from", None)}  # fmt: skip
        if s.usage_reported:
            row.update(prompt_tokens=s.prompt_tokens, completion_tokens=s.completion_tokens)
            spec = judge.spec
            if spec.price_in is not None or spec.price_out is not None:
                row["cost_usd"] = cost_usd(s.prompt_tokens, s.completion_tokens, spec)
        out[judge.id] = row
    if len(judges) > 1:
        out[JURY] = {**summarize(labels[labels["judge"] == JURY]), "kind": "jury"}
    return out


# ---------------------------------------------------------------------------------------------- the stage


def output_lock(cfg: LabelConfig):
    """One run per --out: the journal and the table have a single writer (see densedpo.locks)."""
    from densedpo.locks import exclusive

    return exclusive(cfg.out.with_name(cfg.out.name + ".lock"), f"--out {cfg.out}",
                     "choose another --out (the journal beside it resumes an earlier run)")  # fmt: skip


def label_pairs(cfg: LabelConfig, console=None, progress: bool = True, hooks: LabelHooks | None = None) -> LabelResult:
    """Label every segment of every pair in cfg.pairs and write cfg.out (see the module docstring)."""
    with output_lock(cfg):
        return _label_pairs(cfg, console, progress, hooks)


def _label_pairs(cfg: LabelConfig, console, progress: bool, hooks: LabelHooks | None) -> LabelResult:
    from rich.console import Console

    console = console or Console(stderr=True)
    specs, rule = cfg.judge_specs()

    # 1. Plan: validate every pair, cut segments.
    plans = plan_pairs(cfg)
    n_segments = sum(len(p.segments) for p in plans)
    hooks = hooks or LabelHooks()
    if hooks.on_planned:
        hooks.on_planned()

    # 3. Servers: ours (embedded vLLM, one per model of the jury) or the user's.
    with contextlib.ExitStack() as stack:
        urls = start_servers(specs, plans, cfg, stack, console)
        result = asyncio.run(_label_async(cfg, plans, n_segments, specs, rule, urls, console, progress, hooks))
    return result


def fingerprint(cfg: LabelConfig, judges: list[Judge]) -> dict:
    """Settings that change what a request asks; a journal is only reused when they all match."""
    return {
        "judges": [j.fingerprint() for j in judges],
        "segment_seconds": cfg.segment_seconds,
        "sample_fps": cfg.sample_fps,
        "max_side": cfg.max_side,
        "jpeg_quality": cfg.jpeg_quality,
        "trim_to_shortest": cfg.trim_to_shortest,
    }


async def _label_async(cfg, plans, n_segments, specs, rule, urls, console, progress, hooks) -> LabelResult:
    judges = [make_judge(s) for s in specs]
    async with contextlib.AsyncExitStack() as pools_open:
        pools = [await pools_open.enter_async_context(open_pool(s, u, cfg)) for s, u in zip(specs, urls)]
        for judge, pool in zip(judges, pools):
            await judge.start(pool)
        ids = [j.id for j in judges]
        twice = sorted({i for i in ids if ids.count(i) > 1} | ({JURY} & set(ids) if len(ids) > 1 else set()))
        if twice:
            raise DenseDPOError(f"--judges: two judges would share the id {twice[0]!r} (or use the jury's); give "
                                "each a distinct `name:`.")  # fmt: skip

        # 2. Resume: skip every request already answered in the journal.
        with Journal(journal_path_for(cfg.out), fingerprint(cfg, judges), restart=cfg.restart) as journal:
            # Parse errors are journaled answers (at temperature 0 the same request gives the same answer), so
            # only --retry-parse-errors asks them again; the new answer supersedes the old line.
            redo = {"parse_error"} if cfg.retry_parse_errors else set()
            answered = {key for key, r in journal.results.items() if r.status not in redo}
            todo = [
                [(s, j, u) for s in p.segments for j, judge in enumerate(judges) for u in judge.units
                 if (judge.id, request_id(p.pair_id, s.segment_idx, u)) not in answered]
                for p in plans
            ]  # fmt: skip
            n_todo = sum(len(t) for t in todo)
            segments_left = Counter((i, s.segment_idx) for i, t in enumerate(todo) for s, _, _ in t)
            pairs_left = {i: len({s.segment_idx for s, _, _ in t}) for i, t in enumerate(todo) if t}
            n_asked = len(segments_left)
            stats = RunStats()
            t0 = time.perf_counter()

            # 4. Ask.
            with _progress(console, progress) as bar:
                task = bar.add_task(
                    "labeling", total=n_segments, completed=n_segments - len(segments_left),
                    pairs=f"pairs {len(plans) - len(pairs_left)}/{len(plans)}", rps=0.0,
                )  # fmt: skip
                done = [n_segments - len(segments_left)]
                if hooks.on_progress:
                    hooks.on_progress(done[0], n_segments)

                def on_result(req: _Request, result: OrderResult) -> None:
                    key = (req.pair_idx, req.segment_idx)
                    segments_left[key] -= 1
                    if segments_left[key] == 0:
                        bar.advance(task)
                        done[0] += 1
                        if hooks.on_progress:
                            hooks.on_progress(done[0], n_segments)
                        pairs_left[req.pair_idx] -= 1
                        if pairs_left[req.pair_idx] == 0:
                            del pairs_left[req.pair_idx]
                    elapsed = max(time.perf_counter() - t0, 1e-6)
                    bar.update(task, pairs=f"pairs {len(plans) - len(pairs_left)}/{len(plans)}",
                               rps=stats.requests_sent / elapsed)  # fmt: skip

                failures = await ask_all(cfg, plans, todo, judges, pools, journal, on_result, stats, hooks)
            elapsed = time.perf_counter() - t0
            if hooks.should_stop():
                raise LabelingStopped(f"stopped; answered requests are saved in {journal.path}.")
            results = {**journal.results, **failures}
        latencies = [x for p in pools for x in p.latencies_s()]

    # 5. Aggregate and write (atomically).
    labels = assemble_rows(plans, results, cfg, judges, rule)
    write_table(labels, cfg.out, LABELS, extra_metadata={"judges": ",".join(ids), "combine": rule})
    main = labels[labels["judge"] == (JURY if len(judges) > 1 else judges[0].id)]
    summary = summarize(main)
    summary.update(
        requests_sent=stats.requests_sent,
        requests_planned=n_todo,
        images_sent=sum(s.images for s in stats.judges.values()),
        seconds=elapsed,
        segments_per_s=n_asked / elapsed if elapsed > 0 else math.nan,  # segments asked in this run
        prep_ms_per_segment=1000 * stats.prep_s / max(stats.segments_prepared, 1),
        mean_request_latency_ms=1000 * float(np.mean(latencies)) if latencies else math.nan,
        judge_model=", ".join(ids) if len(judges) == 1 else f"jury ({rule}) of {', '.join(ids)}",
        judges=judge_summaries(labels, judges, stats),
    )
    return LabelResult(labels=labels, out=cfg.out, summary=summary)


def _progress(console, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("segments · {task.fields[pairs]} · {task.fields[rps]:.1f} req/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
    )


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


def partial_labels(cfg: LabelConfig, plans: list[PairPlan] | None = None) -> pd.DataFrame | None:
    """The rows finished so far, from the journal of a run in progress (or stopped); None before any."""
    header, results = read_journal(journal_path_for(cfg.out))
    specs, rule = cfg.judge_specs()
    judges, bound = journal_judges(specs, header)
    if not bound:
        return None
    rows = assemble_rows(plans or plan_pairs(cfg), results, cfg, judges, rule, skip_missing=True)
    return rows if len(rows) else None


def dry_run_plan(cfg: LabelConfig) -> dict:
    """What `label` would do, without any server: pairs, segments, requests and images per judge, how many the
    journal has, and (where earlier answers reported usage) the tokens and cost still to spend."""
    specs, _ = cfg.judge_specs()
    plans = plan_pairs(cfg)
    header, done = read_journal(journal_path_for(cfg.out))
    judges, _ = journal_judges(specs, header)
    n_segments = sum(len(p.segments) for p in plans)
    plan = {"pairs": len(plans), "segments": n_segments, "requests": 0, "already_journaled": 0,
            "images_per_request_max": 0}  # fmt: skip
    for judge, spec in zip(judges, specs):
        ids = {(judge.id, request_id(p.pair_id, s.segment_idx, u)) for p in plans for s in p.segments
               for u in judge.units}  # fmt: skip
        answered = [done[k] for k in ids & set(done)]
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
