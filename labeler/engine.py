"""`densedpo label`: aligned pairs -> one preference row per (pair, segment, judge), judged over HTTP.

label_pairs() reads top to bottom: 1 plan (labeler/plan.py: validate pairs, cut segments), 2 resume (journal),
3 start or reach the servers and check each judge's server answers as it needs, 4 ask every unit (both orders
for a chat judge, each video for a scorer) of every segment, frames decoded once for all judges
(labeler/frames.py), 5 aggregate (and combine a jury) and write labels.parquet (labeler/rows.py), 6 summarise.
What differs between judges lives in labeler/judges/.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from densedpo.errors import DenseDPOError
from densedpo.progress import progress_bar
from densedpo.tables import LABELS, write_table
from labeler.client import RequestFailed, ServerPool
from labeler.config import JURY, LabelConfig
from labeler.frames import prepare_pair
from labeler.journal import Journal, journal_path_for, read_journal
from labeler.judges import Judge, JudgeSpec, make_judge
from labeler.judges.score import POOLING_ARGS
from labeler.parse import REASONED, OrderResult
from labeler.plan import PairPlan, frames_per_video, journal_judges, plan_pairs, request_id
from labeler.rows import RunStats, assemble_rows, judge_summaries, summarize
from labeler.segments import Segment, sample_frame_indices

PROGRESS_UNIT = "segments · {task.fields[pairs]} · {task.fields[rps]:.1f} req/s"


class LabelingStopped(DenseDPOError):
    """The caller's should_stop() turned true: finished work is journaled, no table was written."""


@dataclass
class LabelResult:
    labels: pd.DataFrame
    out: Path
    summary: dict


@dataclass
class LabelHooks:
    """How a caller (the CLI, the batch service) follows and steers a labeling run."""

    should_stop: Callable[[], bool] = lambda: False  # checked before each request; True stops promptly
    on_progress: Callable[[int, int], None] | None = None  # (segments done, segments total)
    on_request: Callable[[str, float], None] | None = None  # (answer status, latency in seconds)
    on_planned: Callable[[], None] | None = None  # every pair validated; nothing asked or written yet


# ---------------------------------------------------------------------------------------------- 3. servers


def start_servers(
    specs: list[JudgeSpec],
    plans: list[PairPlan],
    cfg: LabelConfig,
    stack: contextlib.ExitStack,
    console,
    scorer_command: Sequence[str] = (),
) -> list[list[str]]:
    """Server URLs per judge: its --server, or a managed server started once per (model, kind) of the jury:
    vLLM, or (api transformers) the scorer that `scorer_command` starts (the app names it; see labeler.servers)."""
    from labeler.servers import managed_scorer, managed_vllm, reasoning_args

    started: dict[tuple, str] = {}  # (model, kind, api, reasoning parser) -> URL
    server_urls = []
    for spec in specs:
        if spec.server:
            server_urls.append(list(spec.server))
            continue
        key = (spec.model, spec.kind, spec.api, spec.reasoning_parser)
        if key not in started and spec.api == "transformers":
            if not scorer_command:
                raise DenseDPOError(
                    "--api transformers needs a scorer server: run it through `densedpo label` "
                    "(which starts `densedpo serve-scorer`), or pass --server URL."
                )
            log = cfg.out.with_name(cfg.out.name + f".scorer{len(started)}.log")
            console.print(f"starting the scorer for {spec.model} (transformers; log: {log}) ...")
            started[key] = stack.enter_context(managed_scorer(scorer_command, spec.model, log_path=log))
        if key not in started:
            same = [s for s in specs if (s.model, s.kind, s.api, s.reasoning_parser) == key and not s.server]
            video = any(s.frames_as == "video" for s in same)
            per_video = frames_per_video(plans, cfg.sample_fps)
            log = cfg.out.with_name(cfg.out.name + (f".vllm{len(started)}" if started else ".vllm") + ".log")
            runner = " (pooling runner)" if spec.kind == "score" else ""
            runner += f" (reasoning parser {spec.reasoning_parser})" if spec.reasoning_parser else ""
            console.print(f"starting vLLM for {spec.model}{runner} (log: {log}) ...")
            server = managed_vllm(
                spec.model,
                log_path=log,
                max_images=per_video * (1 if spec.kind == "score" else 2),
                max_videos=2 if video else 0,
                max_model_len=cfg.max_model_len,
                extra_args=POOLING_ARGS if spec.kind == "score" else reasoning_args(spec.reasoning_parser),
            )
            started[key] = stack.enter_context(server)
        server_urls.append([started[key]])
    return server_urls


def open_pool(spec: JudgeSpec, urls: list[str], cfg: LabelConfig) -> ServerPool:
    """The judge's connection: a ServerPool over its servers, with its key and rate."""
    return ServerPool(
        urls,
        timeout_s=cfg.request_timeout_s,
        max_retries=cfg.max_retries,
        backoff_s=cfg.retry_backoff_s,
        max_rps=spec.max_rps,
        api_key=spec.api_key(),
        openai_base=spec.api == "openai",
    )


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


Todo = list[list[tuple[Segment, int, str]]]  # per pair: (segment, judge index, unit) still to ask


class _Asker:
    """Asks every (segment, judge, unit) of a todo list: one producer prepares frames in threads a few pairs
    ahead of the requests (so the servers never wait on decoding) and queues request bodies; `concurrency`
    workers send them. Each frame is decoded and encoded once and the same bytes go to every judge and order
    (so vLLM's multimodal caches can hit). Answers are journaled; request errors are returned (retried next run).
    """

    def __init__(self, cfg, plans, todo, judges, pools, journal, on_result, stats, hooks):
        self.cfg, self.plans, self.todo, self.judges, self.pools = cfg, plans, todo, judges, pools
        self.journal, self.on_result, self.stats, self.hooks = journal, on_result, stats, hooks
        self.queue: asyncio.Queue[_Request | None] = asyncio.Queue(maxsize=2 * cfg.concurrency)
        self.failures: dict[tuple[str, str], OrderResult] = {}
        self.transport_failures = 0

    async def run(self) -> dict[tuple[str, str], OrderResult]:
        executor = ThreadPoolExecutor(max_workers=2)
        tasks = [asyncio.create_task(self.producer(executor))]
        tasks += [asyncio.create_task(self.worker()) for _ in range(self.cfg.concurrency)]
        try:
            await _gather_or_cancel(tasks)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
        return self.failures

    def prep(self, i: int) -> tuple[dict | None, str | None, float]:
        t0 = time.perf_counter()
        segments = sorted({s for s, _, _ in self.todo[i]}, key=lambda s: s.segment_idx)
        try:
            return prepare_pair(self.plans[i], segments, self.cfg), None, time.perf_counter() - t0
        except DenseDPOError as e:
            return None, str(e), time.perf_counter() - t0

    async def producer(self, executor) -> None:
        loop = asyncio.get_running_loop()
        pending: deque = deque()
        for i in [i for i in range(len(self.plans)) if self.todo[i]]:
            if self.hooks.should_stop():
                break
            pending.append((i, loop.run_in_executor(executor, self.prep, i)))
            if len(pending) >= 3:
                await self.emit(*pending.popleft())
        while pending:
            await self.emit(*pending.popleft())
        for _ in range(self.cfg.concurrency):
            await self.queue.put(None)

    async def emit(self, i: int, fut) -> None:
        frame_urls, error, seconds = await fut
        self.stats.prep_s += seconds
        self.stats.segments_prepared += len({s.segment_idx for s, _, _ in self.todo[i]})
        plan = self.plans[i]
        frames: dict[int, tuple[list[str], list[str]]] = {}
        for seg, j, unit in self.todo[i]:
            body, images = None, 0
            if frame_urls is not None:
                if seg.segment_idx not in frames:
                    idx = sample_frame_indices(seg, plan.info.fps, self.cfg.sample_fps)
                    frames[seg.segment_idx] = ([frame_urls["a"][k] for k in idx], [frame_urls["b"][k] for k in idx])
                frames_a, frames_b = frames[seg.segment_idx]
                body = self.judges[j].request(unit, plan.prompt, frames_a, frames_b)
                images = self.judges[j].images_per_request(len(frames_a))
            rid = request_id(plan.pair_id, seg.segment_idx, unit)
            await self.queue.put(_Request(rid, i, seg.segment_idx, j, unit, body, images, error))

    async def worker(self) -> None:
        while (req := await self.queue.get()) is not None:
            if self.hooks.should_stop():
                continue
            judge = self.judges[req.judge_idx]
            if req.body is None:
                result = OrderResult(req.request_id, req.unit, "request_error", error=req.error, judge=judge.id)
                self.failures[result.key] = result
                self.on_result(req, result)
                continue
            self.stats.requests_sent += 1
            t0 = time.perf_counter()
            result = await self.ask(req, judge, self.pools[req.judge_idx])
            self.stats.count(judge.id, req.images, result)
            if self.hooks.on_request:
                self.hooks.on_request(result.status, time.perf_counter() - t0)
            self.on_result(req, result)

    async def ask(self, req: _Request, judge: Judge, pool: ServerPool) -> OrderResult:
        """One request: an answer is journaled; a request error is kept for the table (and retried next run)."""
        journaled = self.journal.results.get((judge.id, req.request_id))
        try:
            result = await judge.ask(pool, req.body, req.request_id, req.unit, journaled, self.journal.append)
        except RequestFailed as e:
            result = OrderResult(
                req.request_id, req.unit, "request_error", raw_response=e.body, error=str(e), judge=judge.id
            )
            self.failures[result.key] = result
            self.transport_failures = self.transport_failures + 1 if e.body is None else 0
            if self.transport_failures >= max(4, self.cfg.concurrency):
                raise DenseDPOError(
                    f"the server(s) {', '.join(pool.urls)} stopped answering ({e}). Every answered request "
                    f"is saved in {self.journal.path}: rerun the same command to resume."
                ) from e
            return result
        self.transport_failures = 0
        self.journal.append(result)
        return result


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


class _SegmentProgress:
    """Counts a segment done when its last unit (of every judge) is answered; drives the bar and the hooks."""

    def __init__(self, bar, n_plans: int, n_segments: int, todo: Todo, stats: RunStats, hooks: LabelHooks):
        self.bar, self.n_plans, self.n_segments, self.stats, self.hooks = bar, n_plans, n_segments, stats, hooks
        self.units_left = Counter((i, s.segment_idx) for i, t in enumerate(todo) for s, _, _ in t)
        self.segments_left = {i: len({s.segment_idx for s, _, _ in t}) for i, t in enumerate(todo) if t}
        self.done = n_segments - len(self.units_left)
        self.t0 = time.perf_counter()
        self.task = bar.add_task("labeling", total=n_segments, completed=self.done, pairs=self._pairs(), rps=0.0)
        if hooks.on_progress:
            hooks.on_progress(self.done, n_segments)

    def _pairs(self) -> str:
        return f"pairs {self.n_plans - len(self.segments_left)}/{self.n_plans}"

    def __call__(self, req: _Request, result: OrderResult) -> None:
        key = (req.pair_idx, req.segment_idx)
        self.units_left[key] -= 1
        if self.units_left[key] == 0:
            self.bar.advance(self.task)
            self.done += 1
            if self.hooks.on_progress:
                self.hooks.on_progress(self.done, self.n_segments)
            self.segments_left[req.pair_idx] -= 1
            if self.segments_left[req.pair_idx] == 0:
                del self.segments_left[req.pair_idx]
        rps = self.stats.requests_sent / max(time.perf_counter() - self.t0, 1e-6)
        self.bar.update(self.task, pairs=self._pairs(), rps=rps)


# ---------------------------------------------------------------------------------------------- the stage


def output_lock(cfg: LabelConfig):
    """One run per --out: the journal and the table have a single writer (see densedpo.locks)."""
    from densedpo.locks import exclusive

    fix = "choose another --out (the journal beside it resumes an earlier run)"
    return exclusive(cfg.out.with_name(cfg.out.name + ".lock"), f"--out {cfg.out}", fix)


def label_pairs(
    cfg: LabelConfig,
    console=None,
    progress: bool = True,
    hooks: LabelHooks | None = None,
    scorer_command: Sequence[str] = (),
) -> LabelResult:
    """Label every segment of every pair in cfg.pairs and write cfg.out (see the module docstring).

    `scorer_command` starts a reward-model server for judges with `api: transformers` (the app gives
    `densedpo serve-scorer`'s command; the labeler starts no other stage's module by name)."""
    from rich.console import Console

    with output_lock(cfg):
        console = console or Console(stderr=True)
        specs, rule = cfg.judge_specs()

        # 1. Plan: validate every pair, cut segments.
        plans = plan_pairs(cfg)
        hooks = hooks or LabelHooks()
        if hooks.on_planned:
            hooks.on_planned()

        # 2. Resume, before any server: a journal that answers every request needs none.
        finished = journal_answers_all(cfg, plans, specs)
        if finished is not None:
            judges, results = finished
            console.print(f"resuming: all {len(results)} answers are journaled; nothing left to ask (no server).")
            return _write_labels(cfg, plans, results, judges, rule, RunStats(), [], 0.0, [])

        # 3. Servers: ours (embedded vLLM, one per model of the jury) or the user's.
        with contextlib.ExitStack() as stack:
            server_urls = start_servers(specs, plans, cfg, stack, console, scorer_command)
            return asyncio.run(_label_async(cfg, plans, specs, rule, server_urls, console, progress, hooks))


def journal_answers_all(cfg: LabelConfig, plans: list[PairPlan], specs) -> tuple[list[Judge], dict] | None:
    """(judges bound as the journal recorded them, its answers) when the journal of cfg.out was written with this
    run's settings and answers every request; else None (the run asks, through servers)."""
    header, results = read_journal(journal_path_for(cfg.out))
    if cfg.restart or header is None:
        return None
    judges, bound = journal_judges(specs, header)
    if not bound or any(s.model not in (None, j.model) for s, j in zip(specs, judges)):
        return None
    if fingerprint(cfg, judges) != header or any(_todo(plans, judges, results, cfg)):
        return None
    return judges, results


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


def _check_ids(judges: list[Judge]) -> list[str]:
    ids = [j.id for j in judges]
    twice = sorted({i for i in ids if ids.count(i) > 1} | ({JURY} & set(ids) if len(ids) > 1 else set()))
    if twice:
        raise DenseDPOError(
            f"--judges: two judges would share the id {twice[0]!r} (or use the jury's); give each a distinct `name:`."
        )
    return ids


def _todo(plans: list[PairPlan], judges: list[Judge], journaled: dict, cfg: LabelConfig) -> Todo:
    """Per pair, every (segment, judge, unit) the journal's answers (`journaled`) do not answer."""
    # Parse errors are journaled answers (at temperature 0 the same request gives the same answer), so only
    # --retry-parse-errors asks them again; the new answer supersedes the old line.
    redo = {"parse_error", REASONED} if cfg.retry_parse_errors else {REASONED}  # a thought awaits its answer
    answered = {key for key, r in journaled.items() if r.status not in redo}
    return [
        [
            (s, j, u)
            for s in p.segments
            for j, judge in enumerate(judges)
            for u in judge.units
            if (judge.id, request_id(p.pair_id, s.segment_idx, u)) not in answered
        ]
        for p in plans
    ]


async def _label_async(cfg, plans, specs, rule, server_urls, console, progress, hooks) -> LabelResult:
    judges = [make_judge(s) for s in specs]
    n_segments = sum(len(p.segments) for p in plans)
    async with contextlib.AsyncExitStack() as pools_open:
        pools = [await pools_open.enter_async_context(open_pool(s, u, cfg)) for s, u in zip(specs, server_urls)]
        for judge, pool in zip(judges, pools):
            await judge.start(pool)
        _check_ids(judges)

        # 2. Resume: skip every request already answered in the journal.
        with Journal(journal_path_for(cfg.out), fingerprint(cfg, judges), restart=cfg.restart) as journal:
            todo = _todo(plans, judges, journal.results, cfg)
            n_units = n_segments * sum(len(j.units) for j in judges)
            left = sum(len(t) for t in todo)
            if left < n_units:
                console.print(f"resuming: {n_units - left} of {n_units} answers journaled in {journal.path}")
            stats = RunStats()
            # 4. Ask.
            with progress_bar(console, PROGRESS_UNIT, progress) as bar:
                tracker = _SegmentProgress(bar, len(plans), n_segments, todo, stats, hooks)
                asker = _Asker(cfg, plans, todo, judges, pools, journal, tracker, stats, hooks)
                failures = await asker.run()
            elapsed = time.perf_counter() - tracker.t0
            if hooks.should_stop():
                raise LabelingStopped(f"stopped; answered requests are saved in {journal.path}.")
            results = {**journal.results, **failures}
        latencies = [x for p in pools for x in p.latencies_s()]
    return _write_labels(cfg, plans, results, judges, rule, stats, todo, elapsed, latencies)


def _write_labels(cfg, plans, results, judges, rule, stats: RunStats, todo: Todo, elapsed: float, latencies):
    """5. Aggregate and write (atomically); the summary of the table and of this run's requests."""
    ids = [j.id for j in judges]
    labels = assemble_rows(plans, results, cfg, judges, rule)
    write_table(labels, cfg.out, LABELS, extra_metadata={"judges": ",".join(ids), "combine": rule})
    summary = summarize(labels[labels["judge"] == (JURY if len(judges) > 1 else judges[0].id)])
    n_asked = len({(i, s.segment_idx) for i, t in enumerate(todo) for s, *_ in t})
    summary.update(
        requests_sent=stats.requests_sent,
        requests_planned=sum(len(t) for t in todo),
        images_sent=sum(s.images for s in stats.judges.values()),
        seconds=elapsed,
        segments_per_s=n_asked / elapsed if elapsed > 0 else math.nan,  # segments asked in this run
        prep_ms_per_segment=1000 * stats.prep_s / max(stats.segments_prepared, 1),
        mean_request_latency_ms=1000 * float(np.mean(latencies)) if latencies else math.nan,
        judge_model=", ".join(ids) if len(judges) == 1 else f"jury ({rule}) of {', '.join(ids)}",
        judges=judge_summaries(labels, judges, stats),
    )
    # A jury's row stands when one judge answered: a judge that fails every request would go unseen in the jury's
    # figures. The run's failure rate is its worst judge's.
    worst = max(summary["judges"].items(), key=lambda kv: kv[1]["failure_rate"])
    if worst[1]["failure_rate"] > summary["failure_rate"]:
        summary.update(failure_rate=worst[1]["failure_rate"], failing_judge=worst[0])
    return LabelResult(labels=labels, out=cfg.out, summary=summary)
