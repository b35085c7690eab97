"""`densedpo label`: aligned pairs -> one preference row per (pair, segment), judged by a VLM over HTTP.

label_pairs() reads top to bottom: 1 plan (validate pairs, cut segments), 2 resume (journal), 3 start or
reach the servers and check they constrain answers, 4 ask both orders of every segment, 5 aggregate and
write labels.parquet, 6 summarise.
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
from labeler.aggregate import aggregate_segment, decided
from labeler.client import RequestFailed, ServerPool
from labeler.journal import Journal, journal_path_for, read_journal
from labeler.parse import OrderResult, chosen_position, parse_response
from labeler.prompts import DEFAULT_PROMPT, Prompt, load_prompt
from labeler.segments import Segment, sample_frame_indices, segment_bounds

ORDERS = ("ab", "ba")


class LabelingStopped(DenseDPOError):
    """The caller's should_stop() turned true: finished work is journaled, no table was written."""
PROBE_TEXT = "Ignore everything else and reply with the single word banana."


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

    def check(self) -> None:
        if not self.server and not self.model:
            raise DenseDPOError("pass --server URL of a running VLM server, or --model to let densedpo start vLLM.")
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


def request_id(pair_id: str, segment_idx: int, order: str) -> str:
    return f"{pair_id}:{segment_idx}:{order}"


def max_images_per_request(plans: list[PairPlan], sample_fps: float) -> int:
    most = max(len(sample_frame_indices(s, p.info.fps, sample_fps)) for p in plans for s in p.segments)
    return 2 * most


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


def build_messages(prompt: Prompt, caption: str, first: list[str], second: list[str]) -> list[dict]:
    """One user message: intro, the first video's frames, the bridge, the second video's frames, the question."""
    intro, between, question = prompt.render(caption, len(first), len(second))

    def images(urls: list[str]) -> list[dict]:
        return [{"type": "image_url", "image_url": {"url": u}} for u in urls]

    content = [{"type": "text", "text": intro}, *images(first), {"type": "text", "text": between},
               *images(second), {"type": "text", "text": question}]  # fmt: skip
    return [{"role": "user", "content": content}]


def build_body(model: str, messages: list[dict], choices: tuple[str, ...], max_tokens: int, top_logprobs: int) -> dict:
    # `structured_outputs` is vLLM's current field; the older `guided_choice` is accepted and silently ignored.
    return {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": top_logprobs,
        "structured_outputs": {"choice": list(choices)},
    }


# ---------------------------------------------------------------------------------------------- 3. servers


async def check_constrained(pool: ServerPool, model: str, prompt: Prompt, top_logprobs: int) -> int:
    """Fail loudly unless the server constrains answers to the prompt's choices; return max_tokens to use.

    The probe asks for a word outside the choices: a server that ignores the constraint (an old request field,
    another backend) answers something else, which we refuse to label with.
    """
    token_ids = await asyncio.gather(*(pool.tokenize(model, c) for c in prompt.choices))
    if all(token_ids):
        firsts = [t[0] for t in token_ids]
        if len(set(firsts)) != len(firsts):
            raise DenseDPOError(
                f"the choices {list(prompt.choices)} start with the same token for {model}; confidence from "
                "first-token logprobs needs distinct first tokens: edit the prompt's choices."
            )
        max_tokens = max(len(t) for t in token_ids) + 2
    else:
        max_tokens = 16
    body = build_body(model, [{"role": "user", "content": PROBE_TEXT}], prompt.choices, max_tokens, top_logprobs)
    try:
        resp = await pool.post("/v1/chat/completions", body, request_id="densedpo-probe")
    except RequestFailed as e:
        raise DenseDPOError(f"the probe request to {pool.urls[0]} failed: {e}. Body: {(e.body or '')[:300]}") from e
    result = parse_response(resp, "probe", "ab", prompt.choices)
    if result.status != "ok":
        raise DenseDPOError(
            f"the VLM server does not constrain answers to {list(prompt.choices)} ({result.error}); densedpo needs "
            "vLLM with `structured_outputs` support (vLLM >= 0.10) and logprobs enabled."
        )
    return max_tokens


# ---------------------------------------------------------------------------------------------- 4. ask


@dataclass
class _Request:
    request_id: str
    pair_idx: int
    segment_idx: int
    order: str
    body: dict | None
    error: str | None = None  # frame preparation failed


@dataclass
class LabelHooks:
    """How a caller (the CLI, the batch service) follows and steers a labeling run."""

    should_stop: Callable[[], bool] = lambda: False  # checked before each request; True stops promptly
    on_progress: Callable[[int, int], None] | None = None  # (segments done, segments total)
    on_request: Callable[[str, float], None] | None = None  # (order status, latency in seconds)
    on_planned: Callable[[], None] | None = None  # every pair validated; nothing asked or written yet


@dataclass
class RunStats:
    requests_sent: int = 0
    prep_s: float = 0.0
    segments_prepared: int = 0


async def ask_all(
    cfg: LabelConfig,
    plans: list[PairPlan],
    todo: list[list[tuple[Segment, str]]],
    pool: ServerPool,
    model: str,
    prompt: Prompt,
    max_tokens: int,
    journal: Journal,
    on_result: Callable[[_Request, OrderResult], None],
    stats: RunStats,
    hooks: LabelHooks | None = None,
) -> dict[str, OrderResult]:
    """Ask every (segment, order) in `todo`; journal answers, return this run's request errors.

    Frame preparation runs in threads a few pairs ahead of the requests, so the servers never wait on
    decoding; at most `cfg.concurrency` requests are in flight.
    """
    hooks = hooks or LabelHooks()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[_Request | None] = asyncio.Queue(maxsize=2 * cfg.concurrency)
    failures: dict[str, OrderResult] = {}
    transport_failures = 0
    executor = ThreadPoolExecutor(max_workers=2)

    def prep(i: int) -> tuple[dict | None, str | None, float]:
        t0 = time.perf_counter()
        segments = sorted({s for s, _ in todo[i]}, key=lambda s: s.segment_idx)
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
        stats.segments_prepared += len({s.segment_idx for s, _ in todo[i]})
        plan = plans[i]
        for seg, order in todo[i]:
            rid = request_id(plan.pair_id, seg.segment_idx, order)
            body = None
            if urls is not None:
                idx = sample_frame_indices(seg, plan.info.fps, cfg.sample_fps)
                first, second = (urls["a"], urls["b"]) if order == "ab" else (urls["b"], urls["a"])
                msgs = build_messages(prompt, plan.prompt, [first[k] for k in idx], [second[k] for k in idx])
                body = build_body(model, msgs, prompt.choices, max_tokens, cfg.top_logprobs)
            await queue.put(_Request(rid, i, seg.segment_idx, order, body, error))

    async def worker() -> None:
        nonlocal transport_failures
        while (req := await queue.get()) is not None:
            if hooks.should_stop():
                continue
            if req.body is None:
                result = OrderResult(req.request_id, req.order, "request_error", error=req.error)
                failures[req.request_id] = result
                on_result(req, result)
                continue
            stats.requests_sent += 1
            t0 = time.perf_counter()
            try:
                resp = await pool.post("/v1/chat/completions", req.body, request_id=req.request_id)
            except RequestFailed as e:
                result = OrderResult(req.request_id, req.order, "request_error", raw_response=e.body, error=str(e))
                failures[req.request_id] = result
                transport_failures = transport_failures + 1 if e.body is None else 0
                if transport_failures >= max(4, cfg.concurrency):
                    raise DenseDPOError(
                        f"the VLM server(s) {', '.join(pool.urls)} stopped answering ({e}). Every answered request "
                        f"is saved in {journal.path}: rerun the same command to resume."
                    ) from e
            else:
                transport_failures = 0
                result = parse_response(resp, req.request_id, req.order, prompt.choices)
                journal.append(result)
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
    plans: list[PairPlan], results: dict[str, OrderResult], cfg: LabelConfig, model: str, prompt: Prompt,
    skip_missing: bool = False,
) -> pd.DataFrame:
    """One row per segment; with skip_missing, only segments whose two orders are both answered (a partial table)."""
    rows = []
    for plan in plans:
        for seg in plan.segments:
            ab = results.get(request_id(plan.pair_id, seg.segment_idx, "ab"))
            ba = results.get(request_id(plan.pair_id, seg.segment_idx, "ba"))
            if skip_missing and (ab is None or ba is None):
                continue
            rows.append({
                "pair_id": plan.pair_id, "segment_idx": seg.segment_idx, "frame_start": seg.frame_start,
                "frame_end": seg.frame_end, "t_start_s": seg.t_start_s, "t_end_s": seg.t_end_s,
                **aggregate_segment(ab, ba, cfg.min_confidence),
                "judge_model": model, "prompt_name": prompt.name, "prompt_sha256": prompt.sha256,
                "answer_ab": chosen_position(ab), "answer_ba": chosen_position(ba),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=[c for c in LABELS.names if c not in ("judge", "annotator")])


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
    prompt = load_prompt(cfg.prompt)

    # 1. Plan: validate every pair, cut segments.
    plans = plan_pairs(cfg)
    n_segments = sum(len(p.segments) for p in plans)
    hooks = hooks or LabelHooks()
    if hooks.on_planned:
        hooks.on_planned()

    # 3. Servers: ours (embedded vLLM) or the user's; check they answer and constrain answers.
    with contextlib.ExitStack() as stack:
        urls = list(cfg.server)
        if not urls:
            from labeler.vllm_server import managed_vllm

            log = cfg.out.with_name(cfg.out.name + ".vllm.log")
            console.print(f"starting vLLM for {cfg.model} (log: {log}) ...")
            urls = [stack.enter_context(managed_vllm(
                cfg.model, log_path=log, max_images=max_images_per_request(plans, cfg.sample_fps),
                max_model_len=cfg.max_model_len))]  # fmt: skip
        result = asyncio.run(_label_async(cfg, plans, n_segments, urls, prompt, console, progress, hooks))
    return result


def fingerprint(cfg: LabelConfig, model: str, prompt: Prompt) -> dict:
    """Settings that change what a request asks; a journal is only reused when they all match."""
    return {
        "judge_model": model,
        "prompt_sha256": prompt.sha256,
        "segment_seconds": cfg.segment_seconds,
        "sample_fps": cfg.sample_fps,
        "max_side": cfg.max_side,
        "jpeg_quality": cfg.jpeg_quality,
        "trim_to_shortest": cfg.trim_to_shortest,
    }


async def _label_async(cfg, plans, n_segments, urls, prompt, console, progress, hooks) -> LabelResult:
    async with ServerPool(
        urls, timeout_s=cfg.request_timeout_s, max_retries=cfg.max_retries, backoff_s=cfg.retry_backoff_s
    ) as pool:
        served = await pool.check()
        model = cfg.model or (served[0] if served else None)
        if not model:
            raise DenseDPOError(f"the server at {urls[0]} serves no model; pass --model.")
        if cfg.model and served and cfg.model not in served:
            raise DenseDPOError(f"--model {cfg.model!r} is not served at {urls[0]}; it serves {', '.join(served)}.")
        max_tokens = await check_constrained(pool, model, prompt, cfg.top_logprobs)

        # 2. Resume: skip every request already answered in the journal.
        with Journal(journal_path_for(cfg.out), fingerprint(cfg, model, prompt), restart=cfg.restart) as journal:
            # Parse errors are journaled answers (at temperature 0 the same request gives the same answer), so
            # only --retry-parse-errors asks them again; the new answer supersedes the old line.
            redo = {"parse_error"} if cfg.retry_parse_errors else set()
            answered = {rid for rid, r in journal.results.items() if r.status not in redo}
            todo = [
                [(s, o) for s in p.segments for o in ORDERS if request_id(p.pair_id, s.segment_idx, o) not in answered]
                for p in plans
            ]  # fmt: skip
            n_todo = sum(len(t) for t in todo)
            segments_left = {(i, s.segment_idx): 0 for i, t in enumerate(todo) for s, _ in t}
            for i, t in enumerate(todo):
                for s, _ in t:
                    segments_left[(i, s.segment_idx)] += 1
            pairs_left = {i: len({s.segment_idx for s, _ in t}) for i, t in enumerate(todo) if t}
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

                failures = await ask_all(
                    cfg, plans, todo, pool, model, prompt, max_tokens, journal, on_result, stats, hooks
                )
            elapsed = time.perf_counter() - t0
            if hooks.should_stop():
                raise LabelingStopped(f"stopped; answered requests are saved in {journal.path}.")
            results = {**journal.results, **failures}

    # 5. Aggregate and write (atomically).
    labels = assemble_rows(plans, results, cfg, model, prompt)
    write_table(labels, cfg.out, LABELS, extra_metadata={"judge_model": model, "prompt": prompt.name})
    summary = summarize(labels)
    lat = pool.latencies_s()
    summary.update(
        requests_sent=stats.requests_sent,
        requests_planned=n_todo,
        seconds=elapsed,
        segments_per_s=len(segments_left) / elapsed if elapsed > 0 else math.nan,  # segments asked in this run
        prep_ms_per_segment=1000 * stats.prep_s / max(stats.segments_prepared, 1),
        mean_request_latency_ms=1000 * float(np.mean(lat)) if lat else math.nan,
        judge_model=model,
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


def partial_labels(cfg: LabelConfig, plans: list[PairPlan] | None = None) -> pd.DataFrame | None:
    """The rows finished so far, from the journal of a run in progress (or stopped); None before any."""
    header, results = read_journal(journal_path_for(cfg.out))
    if header is None:
        return None
    prompt = load_prompt(cfg.prompt)
    rows = assemble_rows(plans or plan_pairs(cfg), results, cfg, header["judge_model"], prompt, skip_missing=True)
    return rows if len(rows) else None


def dry_run_plan(cfg: LabelConfig) -> dict:
    """What `label` would do, without any server: pairs, segments, requests, and how many the journal has."""
    plans = plan_pairs(cfg)
    _, done = read_journal(journal_path_for(cfg.out))
    ids = {request_id(p.pair_id, s.segment_idx, o) for p in plans for s in p.segments for o in ORDERS}
    return {
        "pairs": len(plans),
        "segments": sum(len(p.segments) for p in plans),
        "requests": len(ids),
        "already_journaled": len(ids & set(done)),
        "images_per_request_max": max_images_per_request(plans, cfg.sample_fps),
    }
