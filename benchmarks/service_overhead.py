"""What does the batch service cost over `densedpo label` on the same server and pairs?

Side by side in one run, alternating, --repeats times each: (1) `label_pairs` directly; (2) a job submitted to
a running `densedpo serve` (uvicorn subprocess) by path, polled every 50 ms until completed, labels downloaded.
Both at the same concurrency against the same vLLM server (tiny random VLM, CPU, server pinned to CPU 0 and the
clients to the rest, as in label_throughput.py). Reports segments/s of both and their ratio (target >= 0.95).

  python benchmarks/service_overhead.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from _report import report  # noqa: E402

from densedpo.synthetic import make_synthetic_pairs  # noqa: E402
from densedpo.tiny import make_tiny_vlm  # noqa: E402
from labeler.config import LabelConfig  # noqa: E402
from labeler.engine import label_pairs  # noqa: E402
from labeler.plan import max_images_per_request, plan_pairs  # noqa: E402
from labeler.servers import free_port, managed_vllm  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/service_overhead.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="densedpo-svc-bench-"))
    pairs_path, _ = make_synthetic_pairs(work / "data", num_pairs=args.pairs, height=args.size, width=args.size)
    model = str(make_tiny_vlm(work / "tiny-vlm"))
    cfg = LabelConfig(
        pairs=pairs_path,
        out=work / "direct.parquet",
        model=model,
        concurrency=args.concurrency,
        min_confidence=0.0,
        restart=True,
    )
    n_segments = sum(len(p.segments) for p in plan_pairs(cfg))
    cpus = sorted(os.sched_getaffinity(0))
    with contextlib.ExitStack() as stack:
        if len(cpus) >= 2:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(cpus[0])
            os.sched_setaffinity(0, {cpus[0]})
        no_cache = ["--no-enable-prefix-caching", "--mm-processor-cache-gb", "0"]
        url = stack.enter_context(
            managed_vllm(
                model,
                log_path=work / "vllm.log",
                extra_args=no_cache,
                max_images=max_images_per_request(plan_pairs(cfg), 8.0),
            )
        )
        if len(cpus) >= 2:
            os.sched_setaffinity(0, set(cpus[1:]))
        cfg.server = [url]
        (work / "token").write_text("bench")
        port = free_port()
        svc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.cli",
                "serve",
                "--server",
                url,
                "--data-root",
                str(work / "data"),
                "--db",
                str(work / "jobs.sqlite"),
                "--token-file",
                str(work / "token"),
                "--port",
                str(port),
                "--concurrency",
                str(args.concurrency),
                "--max-running-jobs",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(svc.terminate)
        base = f"http://127.0.0.1:{port}"
        client = stack.enter_context(httpx.Client(base_url=base, headers={"Authorization": "Bearer bench"}))
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/healthz").status_code == 200:
                    break
            time.sleep(0.1)

        def via_service() -> float:
            t0 = time.perf_counter()
            job = client.post("/v1/label-jobs", data={"path": "pairs.parquet", "min_confidence": "0"}).json()
            while client.get(f"/v1/label-jobs/{job['id']}").json()["state"] not in ("completed", "failed"):
                time.sleep(0.05)
            client.get(f"/v1/label-jobs/{job['id']}/labels").raise_for_status()
            return time.perf_counter() - t0

        def direct() -> float:
            t0 = time.perf_counter()
            label_pairs(cfg, progress=False)
            return time.perf_counter() - t0

        direct()  # warm-up (vLLM's first requests)
        d, s = [], []
        for _ in range(args.repeats):
            d.append(n_segments / direct())
            s.append(n_segments / via_service())

    figures = {
        "segments": n_segments,
        "concurrency": args.concurrency,
        "direct_segments_per_s": statistics.median(d),
        "service_segments_per_s": statistics.median(s),
        "ratio": statistics.median(s) / statistics.median(d),
    }
    report("service overhead (tiny random VLM, CPU)", figures, {"direct": d, "service": s}, args.json)


if __name__ == "__main__":
    main()
