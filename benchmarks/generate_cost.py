"""What does an SDEdit pair cost next to a vanilla pair, and what does batching the two seeds buy?

Side by side in one run on the tiny random Wan 2.1 (CPU unless CUDA is present), same source and step count:
  (1) one SDEdit pair (decode the source, VAE-encode it once, denoise both seeds from sigma ~ eta, decode both)
      vs one vanilla pair (denoise both seeds from pure noise, decode both): the ratio should be about eta plus
      the encode;
  (2) the denoising of the two seeds as one batch vs two sequential calls.
Each figure is the median of --repeats runs.

  python benchmarks/generate_cost.py
  python benchmarks/generate_cost.py --frames 33 --size 128 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import report  # noqa: E402

from densedpo.synthetic import make_synthetic_sources  # noqa: E402
from densedpo.tiny import make_tiny_wan  # noqa: E402
from generation.engine import GenerateConfig, PairTask, Sampler, load_clip, make_pair  # noqa: E402
from generation.sdedit import nearest_sigma_index, noise_to_level  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eta", type=float, default=0.7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/generate_cost.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="densedpo-gen-bench-"))
    model = make_tiny_wan(work / "tiny-wan")
    sources = make_synthetic_sources(
        work / "src", num_sources=1, num_frames=args.frames + 8, height=args.size, width=args.size
    )
    common = dict(
        sources=sources,
        model=str(model),
        steps=args.steps,
        num_frames=args.frames,
        height=args.size,
        width=args.size,
        guidance=8.0,
        eta_min=args.eta,
        eta_max=args.eta,
    )
    sd_cfg = GenerateConfig(out=work / "sd", mode="sdedit", **common)
    van_cfg = GenerateConfig(out=work / "van", mode="vanilla", **common)
    video = sources.parent / "videos" / "source_0000.mp4"
    task = PairTask(0, "src-0000", "A red ball bounces.", video, "bench", args.eta, 1, 2)
    sampler = Sampler(sd_cfg)

    make_pair(sampler, task, sd_cfg)  # warm-up
    sd, van, batch, seq, full = [], [], [], [], []
    for _ in range(args.repeats):
        sampler.cfg = sd_cfg
        sd.append(timed(lambda: make_pair(sampler, task, sd_cfg)))
        sampler.cfg = van_cfg
        van.append(timed(lambda: make_pair(sampler, task, van_cfg)))
        sampler.cfg = sd_cfg
        sigmas, timesteps = sampler.schedule()
        start = nearest_sigma_index(sigmas, args.eta)
        pos, neg = sampler.encode_prompt(task.prompt)
        x0 = sampler.encode_video(load_clip(video, sd_cfg))
        noise = sampler.noise([1, 2], sampler.latent_shape())
        x = noise_to_level(x0.expand_as(noise), noise, sigmas[start])

        def sequential(x=x, timesteps=timesteps, start=start, pos=pos, neg=neg):
            for k in range(2):
                sampler.schedule()
                sampler.denoise(x[k : k + 1], timesteps, start, pos, neg)

        def batched(begin=start, x=x, timesteps=timesteps, pos=pos, neg=neg):
            sampler.schedule()
            sampler.denoise(x, timesteps, begin, pos, neg)

        seq.append(timed(sequential))
        batch.append(timed(batched))
        full.append(timed(lambda: batched(0)))

    sigmas, _ = sampler.schedule()
    start = nearest_sigma_index(sigmas, args.eta)
    figures = {
        "frames": args.frames,
        "size_px": args.size,
        "steps": args.steps,
        "eta": args.eta,
        "start_sigma": sigmas[start],
        "sdedit_steps_run": args.steps - start,
        "sdedit_pair_s": statistics.median(sd),
        "vanilla_pair_s": statistics.median(van),
        "sdedit_over_vanilla": statistics.median(sd) / statistics.median(van),
        "sdedit_denoise_s": statistics.median(batch),
        "vanilla_denoise_s": statistics.median(full),
        "denoise_ratio": statistics.median(batch) / statistics.median(full),
        "batch2_denoise_s": statistics.median(batch),
        "sequential2_denoise_s": statistics.median(seq),
        "batch_speedup": statistics.median(seq) / statistics.median(batch),
    }
    raw = {"sdedit": sd, "vanilla": van, "batch": batch, "seq": seq, "full": full}
    report("generation cost (tiny random Wan 2.1)", figures, raw, args.json)


if __name__ == "__main__":
    main()
