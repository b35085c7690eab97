"""Does `densedpo sample` cost more than a plain loop over the diffusers pipeline?

Side by side in one run on the tiny random Wan 2.1 (CPU unless CUDA is present), the same prompts, seeds per
prompt, frames, size, steps and CFG:
  (1) densedpo's sample() end to end: one prompt encoding per prompt, the prompt's K seeds denoised as one batch,
      decode, H.264 write, the row file, the merged table;
  (2) a plain loop: `WanPipeline(prompt, generator=..., ...)` once per (prompt, seed), frames exported with the same
      H.264 writer.
Figure: videos/s of (1) divided by videos/s of (2) (above 1: densedpo is faster). Median of --repeats runs each.

  python benchmarks/sample_throughput.py
  python benchmarks/sample_throughput.py --prompts 4 --seeds 4 --frames 33 --size 96 --steps 20
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import report  # noqa: E402

from densedpo.tiny import make_tiny_wan  # noqa: E402
from densedpo.video import write_video  # noqa: E402
from generation.sample import SampleConfig, sample, sample_seed  # noqa: E402

PROMPTS = ["a red ball rolls on sand", "a cat jumps over a fence", "waves hit a rock", "a car drives at night"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/sample_throughput.json"))
    args = ap.parse_args()

    import torch
    from diffusers import DiffusionPipeline

    work = Path(tempfile.mkdtemp(prefix="densedpo-sample-bench-"))
    model = make_tiny_wan(work / "tiny-wan")
    prompts = PROMPTS[: args.prompts]
    (work / "prompts.txt").write_text("\n".join(prompts) + "\n")
    n_videos = len(prompts) * args.seeds
    settings = dict(steps=args.steps, num_frames=args.frames, height=args.size, width=args.size, guidance=5.0)

    def ours() -> float:
        out = work / "ours"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        prompt_file = str(work / "prompts.txt")
        cfg = SampleConfig(
            prompts=prompt_file, model=str(model), out=out, seeds_per_prompt=args.seeds, fps=16.0, **settings
        )
        sample(cfg, progress=False)
        return time.perf_counter() - t0

    pipe = DiffusionPipeline.from_pretrained(model, dtype=torch.float32)

    def plain() -> float:
        out = work / "plain"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        for i, prompt in enumerate(prompts):
            for k in range(args.seeds):
                gen = torch.Generator("cpu").manual_seed(sample_seed(0, f"p{i:04d}", k))
                size = dict(height=args.size, width=args.size, num_frames=args.frames)
                steps = dict(num_inference_steps=args.steps, guidance_scale=5.0, generator=gen, output_type="np")
                video = pipe(prompt=prompt, negative_prompt="", **size, **steps).frames[0]
                write_video(out / f"p{i:04d}-{k}.mp4", (video * 255).round().clip(0, 255).astype("uint8"), 16.0)
        return time.perf_counter() - t0

    ours()  # warm-up: first model load and allocator
    times = {"densedpo sample": [], "plain diffusers loop": []}
    for _ in range(args.repeats):
        times["densedpo sample"].append(ours())
        times["plain diffusers loop"].append(plain())
    med = {k: statistics.median(v) for k, v in times.items()}
    figures = {
        "videos": n_videos,
        "densedpo sample videos/s": n_videos / med["densedpo sample"],
        "plain loop videos/s": n_videos / med["plain diffusers loop"],
        "ratio (densedpo / plain)": med["plain diffusers loop"] / med["densedpo sample"],
    }
    device = "cuda" if torch.cuda.is_available() else "cpu"
    raw = {"seconds": times, "args": vars(args) | {"json": str(args.json)}, "device": device}
    report("sample throughput: densedpo sample vs a plain diffusers loop", figures, raw, args.json)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
