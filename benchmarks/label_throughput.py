"""Does `densedpo label` keep the VLM server saturated?

Against one vLLM server and the same requests, side by side in one run:
  (1) bare: an async client firing the pre-built request bodies at the same concurrency (no decoding, no
      journal, no aggregation): the most the server can do for these requests;
  (2) label: `label_pairs` end to end (validate, decode, encode frames, probe, journal, aggregate, write).
Reports segments/s of both, their ratio (target >= 0.9), client-side preparation ms per segment and the mean
request latency. Runs alternate (bare, label, bare, label, ...) and the median of each is reported.

  python benchmarks/label_throughput.py                       # tiny random VLM, embedded vLLM on CPU
  python benchmarks/label_throughput.py --server URL --model M --pairs 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
from _report import report  # noqa: E402

from densedpo.synthetic import make_synthetic_pairs  # noqa: E402
from labeler.config import LabelConfig  # noqa: E402
from labeler.engine import label_pairs  # noqa: E402
from labeler.frames import prepare_pair  # noqa: E402
from labeler.judges.chat import build_body, build_messages  # noqa: E402
from labeler.plan import REQUEST_ORDERS, max_images_per_request, plan_pairs  # noqa: E402
from labeler.prompts import load_prompt  # noqa: E402
from labeler.segments import sample_frame_indices  # noqa: E402


def build_all(cfg: LabelConfig, model: str) -> tuple[list[dict], int]:
    prompt = load_prompt(cfg.prompt)
    bodies, n_segments = [], 0
    for plan in plan_pairs(cfg):
        frame_urls = prepare_pair(plan, plan.segments, cfg)
        for seg in plan.segments:
            n_segments += 1
            idx = sample_frame_indices(seg, plan.info.fps, cfg.sample_fps)
            for order in REQUEST_ORDERS:
                first, second = (frame_urls[x] for x in (("a", "b") if order == "ab" else ("b", "a")))
                msgs = build_messages(prompt, plan.prompt, [first[k] for k in idx], [second[k] for k in idx])
                bodies.append(build_body(model, msgs, prompt.choices, 16, cfg.top_logprobs))
    return bodies, n_segments


async def fire(url: str, bodies: list[dict], concurrency: int) -> float:
    """The bare client: pre-built bodies, aiohttp, a semaphore; nothing else."""
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as client:

        async def one(body):
            async with sem, client.post(f"{url}/v1/chat/completions", json=body) as r:
                r.raise_for_status()
                await r.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", help="URL of a running server (default: start vLLM for a tiny random VLM)")
    ap.add_argument("--model", help="model id served (default: the tiny VLM)")
    ap.add_argument("--pairs", type=int, default=24)
    ap.add_argument("--size", type=int, default=128, help="synthetic video side in pixels")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the embedded server to CPU 0 and this client to the other CPUs",
    )
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/label_throughput.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="densedpo-bench-"))
    pairs_path, _ = make_synthetic_pairs(work / "data", num_pairs=args.pairs, height=args.size, width=args.size)
    cfg = LabelConfig(
        pairs=pairs_path,
        out=work / "labels.parquet",
        server=["x"],
        model=args.model,
        concurrency=args.concurrency,
        min_confidence=0.0,
    )
    import contextlib

    with contextlib.ExitStack() as stack:
        url, model, pin = args.server, args.model, False
        if not url:
            from densedpo.tiny import make_tiny_vlm
            from labeler.servers import managed_vllm

            model = str(make_tiny_vlm(work / "tiny-vlm"))
            cpus = sorted(os.sched_getaffinity(0))
            pin = not args.no_pin and len(cpus) >= 2
            if pin:  # the server inherits CPU 0 at spawn; the client then moves to the others
                os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(cpus[0])
                os.sched_setaffinity(0, {cpus[0]})
            # Every repeat sends the same requests: without caches, each run costs the server what new data would.
            no_cache = ["--no-enable-prefix-caching", "--mm-processor-cache-gb", "0"]
            url = stack.enter_context(
                managed_vllm(
                    model,
                    log_path=work / "vllm.log",
                    extra_args=no_cache,
                    max_images=max_images_per_request(plan_pairs(cfg), 8.0),
                )
            )
            if pin:
                os.sched_setaffinity(0, set(cpus[1:]))
        cfg.server, cfg.model = [url], model
        t0 = time.perf_counter()
        bodies, n_segments = build_all(cfg, model)
        build_s = time.perf_counter() - t0
        asyncio.run(fire(url, bodies[: args.concurrency], args.concurrency))  # warm-up
        bare, label, summaries = [], [], []
        for _ in range(args.repeats):
            bare.append(n_segments / asyncio.run(fire(url, bodies, args.concurrency)))
            cfg.restart = True
            t0 = time.perf_counter()
            res = label_pairs(cfg, progress=False)
            label.append(n_segments / (time.perf_counter() - t0))
            summaries.append(res.summary)

    figures = {
        "pinned": int(pin),
        "segments": n_segments,
        "requests": len(bodies),
        "concurrency": args.concurrency,
        "video_side_px": args.size,
        "bare_segments_per_s": statistics.median(bare),
        "label_segments_per_s": statistics.median(label),
        "ratio": statistics.median(label) / statistics.median(bare),
        "prep_ms_per_segment": statistics.median(s["prep_ms_per_segment"] for s in summaries),
        "prebuild_ms_per_segment": 1000 * build_s / n_segments,
        "request_latency_ms": statistics.median(s["mean_request_latency_ms"] for s in summaries),
    }
    title = f"label throughput ({n_segments} segments, concurrency {args.concurrency})"
    report(title, figures, {"bare_runs": bare, "label_runs": label}, args.json)


if __name__ == "__main__":
    main()
