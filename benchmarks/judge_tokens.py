"""What does `--frames-as video` save? Visual tokens per request, images vs one video item per video.

One vLLM server (image and video inputs enabled), the same pairs, side by side in one run: `label_pairs` with
`frames_as="images"` then `"video"` (each into its own output, both orders, the default 8 fps). Reports vLLM's
own `vllm:prompt_tokens_total` per request (from /metrics), segments/s, and the ratios video / images (target
tokens ratio <= 0.6). The tiny Qwen2-VL is built with Qwen2-VL's image processor (14 px patches merged 2x2,
max_pixels = size^2: a 336x336 frame costs 144 tokens, as in the real model), so the visual share of the prompt
is realistic; its weights are random (its answers mean nothing; the token counts are the processor's). 336, not
the labeler's default 448: 16 frames of 448 (4096 tokens) would not fit the tiny model's 4096 positions.

  python benchmarks/judge_tokens.py                  # tiny Qwen2-VL, embedded vLLM on CPU
  python benchmarks/judge_tokens.py --pairs 8 --size 336
"""

from __future__ import annotations

import argparse
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


def prompt_tokens(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith("vllm:prompt_tokens_total{"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--size", type=int, default=336, help="frame side in pixels (and the processor's max side)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/judge_tokens.json"))
    args = ap.parse_args()

    from labeler.servers import managed_vllm

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_tiny_vlm(tmp / "vlm", max_pixels=args.size * args.size)
        pairs, _ = make_synthetic_pairs(
            tmp / "pairs", num_pairs=args.pairs, num_frames=49, height=args.size, width=args.size
        )
        base = LabelConfig(pairs=pairs, max_side=args.size, min_confidence=0.0, concurrency=8)
        plans = plan_pairs(base)
        segments = sum(len(p.segments) for p in plans)
        figures, raw = {}, {"segments": segments, "pairs": args.pairs, "size": args.size}
        with managed_vllm(
            str(model),
            log_path=tmp / "vllm.log",
            max_images=max_images_per_request(plans, 8.0),
            max_videos=2,
            max_model_len=4096,
        ) as url:
            for frames_as in ("images", "video"):
                cfg = LabelConfig(
                    pairs=pairs,
                    out=tmp / f"{frames_as}.parquet",
                    server=[url],
                    frames_as=frames_as,
                    max_side=args.size,
                    min_confidence=0.0,
                    concurrency=8,
                )
                before = prompt_tokens(url)
                t0 = time.perf_counter()
                result = label_pairs(cfg, progress=False)
                seconds = time.perf_counter() - t0
                requests = result.summary["requests_sent"] + 1  # and the probe
                raw[frames_as] = {
                    "prompt_tokens": prompt_tokens(url) - before,
                    "requests": requests,
                    "seconds": seconds,
                }
                figures[f"{frames_as}: prompt tokens per request"] = raw[frames_as]["prompt_tokens"] / requests
                figures[f"{frames_as}: segments/s"] = segments / seconds
        figures["tokens ratio video/images (target <= 0.6)"] = (
            figures["video: prompt tokens per request"] / figures["images: prompt tokens per request"]
        )
        figures["segments/s ratio video/images"] = figures["video: segments/s"] / figures["images: segments/s"]
        report("judge tokens: images vs video items", figures, raw, args.json)


if __name__ == "__main__":
    main()
