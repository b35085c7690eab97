"""One command, one GPU, one JSON: every stage of densedpo at real size, from stand-ins (densedpo/standins.py).

  python benchmarks/device_check.py --out device_check.json           # a GPU: Wan 1.3B at 81×480×832, Qwen2.5-VL-7B
  python benchmarks/device_check.py --small --out small.json          # a CPU: the same code paths at tiny sizes
  bash scripts/device-check.sh                                        # the same, into benchmarks/results/

Stages, each timed in this process (peak GPU memory from torch's allocator, reset per stage; on a CPU the
process's peak resident memory so far):
1. models: the Wan 2.1 stand-in (random bf16 weights at the 1.3B configuration) and the Qwen2.5-VL-7B stand-in
   (configuration only: vLLM's --load-format dummy);
2. generate: SDEdit pairs at η 0.7 from rendered clips, 40 steps — seconds per pair;
3. label: the 7B-sized judge through vLLM, both orders, with frames as images and as one video item per video —
   segments/s, prompt tokens per segment, vLLM's prefix-cache hit rate;
4. train: dense Flow-DPO LoRA steps (rank 128, gradient checkpointing, bf16 on CUDA) on those pairs — seconds per
   step after the first;
5. sample: the trained LoRA, one video — videos/s.
Then the paper's scale worked out from these figures (~10k pairs, 40 steps, 3 segments × 2 orders per pair).
The stand-ins' outputs are noise: only time and memory mean anything here.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIZES = {
    "full": {"wan": "1.3b", "vlm": "7b", "num_frames": 81, "height": 480, "width": 832, "steps": 40,
             "lora_rank": 128, "pairs": 2, "max_model_len": 32768},
    "small": {"wan": "small", "vlm": "small", "num_frames": 17, "height": 64, "width": 64, "steps": 4,
              "lora_rank": 4, "pairs": 2, "max_model_len": 4096},
}  # fmt: skip
FPS = 16.0
ETA = 0.7
PAPER = {"pairs": 10_000, "segments_per_pair": 3, "orders": 2, "steps": 40}  # DenseDPO's data scale


class Stage:
    """Times a stage and reads its peak memory (GPU allocator when there is one, else the process's RSS)."""

    def __init__(self, torch, name: str, figures: dict):
        self.torch, self.name, self.figures = torch, name, figures

    def __enter__(self):
        if self.torch.cuda.is_available():
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            return False
        cuda = self.torch.cuda.is_available()
        if cuda:
            self.torch.cuda.synchronize()
        entry = self.figures.setdefault(self.name, {})
        entry["seconds"] = round(time.perf_counter() - self.t0, 3)
        if cuda:
            entry["peak_gpu_memory_gib"] = round(self.torch.cuda.max_memory_allocated() / 2**30, 3)
        else:
            entry["peak_rss_gib_so_far"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
        return False


def release_gpu_cache(torch) -> None:
    """Hand the memory the generation pipeline left in torch's cache back to the device (vLLM, in its own process,
    sees only what is free)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def metric(url: str, name: str) -> float:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(name + "{") or x == name)


def build_models(work: Path, size: dict, figures: dict, torch) -> tuple[Path, Path]:
    from densedpo.standins import make_standin_vlm, make_standin_wan

    with Stage(torch, "models", figures) as s:
        wan, counts = make_standin_wan(work / "wan", size=size["wan"])
        vlm, params = make_standin_vlm(work / "vlm", size=size["vlm"])
    s.figures["models"].update(wan=size["wan"], wan_parameters=counts, vlm=size["vlm"], vlm_parameters=params)
    return wan, vlm


def generate(work: Path, wan: Path, size: dict, figures: dict, torch) -> Path:
    from densedpo.synthetic import make_synthetic_sources
    from generation.engine import GenerateConfig, generate_pairs

    frames = size["num_frames"] + 8  # rendered at FPS, as generate reads them
    sources = make_synthetic_sources(work / "src", num_sources=size["pairs"], num_frames=frames, height=size["height"],
                                     width=size["width"])  # fmt: skip
    cfg = GenerateConfig(sources=sources, model=str(wan), out=work / "pairs", eta_min=ETA, eta_max=ETA,
                         steps=size["steps"], num_frames=size["num_frames"], fps=FPS, height=size["height"],
                         width=size["width"])  # fmt: skip
    with Stage(torch, "generate", figures):
        result = generate_pairs(cfg, progress=False)
    figures["generate"].update(pairs=result.made, seconds_per_pair=round(result.seconds_per_pair, 3),
                               frames=size["num_frames"], size=f"{size['width']}x{size['height']}", eta=ETA,
                               steps=size["steps"], denoising_steps=round(size["steps"] * ETA))  # fmt: skip
    return result.pairs_path


def label(work: Path, vlm: Path, pairs: Path, size: dict, figures: dict, torch) -> Path:
    """Both frame layouts through one vLLM server; the images run's table is the one train reads."""
    from labeler.config import LabelConfig
    from labeler.engine import label_pairs
    from labeler.plan import max_images_per_request, plan_pairs
    from labeler.servers import managed_vllm

    release_gpu_cache(torch)
    # vLLM refuses to start unless the free memory covers its share of the device's; this process keeps its CUDA
    # context and the next stages' room, so the judge takes half (a 7B model in bf16 needs ~16 GiB of it)
    extra = ("--gpu-memory-utilization", "0.5") if torch.cuda.is_available() else ()
    base = LabelConfig(pairs=pairs, min_confidence=0.0, concurrency=16)
    plans = plan_pairs(base)
    segments = sum(len(p.segments) for p in plans)
    out = figures.setdefault("label", {"segments": segments})
    t0 = time.perf_counter()
    with managed_vllm(str(vlm), log_path=work / "vllm.log", max_images=max_images_per_request(plans, base.sample_fps),
                      max_videos=2, max_model_len=size["max_model_len"], extra_args=extra) as url:  # fmt: skip
        out["server_start_seconds"] = round(time.perf_counter() - t0, 1)
        for frames_as in ("images", "video"):
            counters = {k: metric(url, f"vllm:{k}") for k in ("prompt_tokens_total", "prefix_cache_hits_total",
                                                               "prefix_cache_queries_total")}  # fmt: skip
            cfg = LabelConfig(pairs=pairs, out=work / f"labels-{frames_as}.parquet", server=[url], frames_as=frames_as,
                              min_confidence=0.0, concurrency=16)  # fmt: skip
            t1 = time.perf_counter()
            result = label_pairs(cfg, progress=False)
            seconds = time.perf_counter() - t1
            delta = {k: metric(url, f"vllm:{k}") - v for k, v in counters.items()}
            hits, queries = delta["prefix_cache_hits_total"], delta["prefix_cache_queries_total"]
            out[frames_as] = {
                "segments_per_s": round(segments / seconds, 3),
                "requests": result.summary["requests_sent"],
                "prompt_tokens_per_segment": round(delta["prompt_tokens_total"] / segments, 1),
                "prefix_cache_hit_rate": round(hits / queries, 4) if queries else None,
            }
    return work / "labels-images.parquet"


def train(work: Path, wan: Path, pairs: Path, labels: Path, size: dict, figures: dict, torch) -> Path:
    """Steps of the dense loss; the stand-in judge's answers are noise, so every segment is labeled `a` (the step's
    cost does not depend on the labels)."""
    from densedpo.tables import LABELS, read_table, write_table
    from dpo.train import TrainConfig
    from dpo.train import train as run_train

    decided = read_table(labels, LABELS).assign(preference="a", status="ok")
    write_table(decided, work / "decided.parquet", LABELS)
    cfg = TrainConfig(pairs=pairs, labels=work / "decided.parquet", model=str(wan), out=work / "run", max_steps=3,
                      warmup_steps=1, batch_size=1, lora_rank=size["lora_rank"], gradient_checkpointing=True,
                      val_fraction=0.0, eval_every=1000, save_every=1000, log_every=1, overwrite=True)  # fmt: skip
    with Stage(torch, "train", figures):
        result = run_train(cfg, progress=False)
    steps = [r["step_seconds"] for r in result.history]
    figures["train"].update(steps=len(steps), first_step_seconds=round(steps[0], 3),
                            seconds_per_step=round(sum(steps[1:]) / max(len(steps) - 1, 1), 3),
                            lora_rank=size["lora_rank"], gradient_checkpointing=True,
                            precision="bf16" if torch.cuda.is_available() else "fp32")  # fmt: skip
    return result.out / "final"


def sample(work: Path, wan: Path, lora: Path, size: dict, figures: dict, torch) -> None:
    from generation.sample import SampleConfig
    from generation.sample import sample as run_sample

    prompts = work / "prompts.txt"
    prompts.write_text("a dog runs across a beach\n")
    cfg = SampleConfig(prompts=str(prompts), model=str(wan), lora=lora, out=work / "samples", steps=size["steps"],
                       num_frames=size["num_frames"], height=size["height"], width=size["width"], fps=FPS)  # fmt: skip
    with Stage(torch, "sample", figures):
        result = run_sample(cfg, progress=False)
    figures["sample"].update(videos=result.made, videos_per_s=round(1 / result.seconds_per_sample, 5),
                             steps=size["steps"])  # fmt: skip


def paper_scale(figures: dict) -> dict:
    """Device-hours (one device of this kind) for the paper's ~10k pairs at its 40 steps, from the measured figures."""
    per_pair = figures["generate"]["seconds_per_pair"] * PAPER["steps"] / figures["generate"]["steps"]
    label_rate = figures["label"]["images"]["segments_per_s"]  # segments (both orders) per second
    return {
        "pairs": PAPER["pairs"],
        "generate_device_hours": round(PAPER["pairs"] * per_pair / 3600, 2),
        "label_device_hours": round(PAPER["pairs"] * PAPER["segments_per_pair"] / label_rate / 3600, 2),
        "train_device_hours_per_1000_steps": round(1000 * figures["train"]["seconds_per_step"] / 3600, 2),
        "note": "one device; generation scaled from the measured steps to 40; labeling with frames as images",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny sizes (a CPU run that exercises every code path)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "device_check.json")
    ap.add_argument("--work", type=Path, help="keep the stand-ins and outputs here [default: a temporary folder]")
    args = ap.parse_args()
    import torch

    size = SIZES["small" if args.small else "full"]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.machine()})"
    figures = {"mode": "small" if args.small else "full", "device": device, "torch": torch.__version__}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        wan, vlm = build_models(work, size, figures, torch)
        pairs = generate(work, wan, size, figures, torch)
        labels = label(work, vlm, pairs, size, figures, torch)
        lora = train(work, wan, pairs, labels, size, figures, torch)
        sample(work, wan, lora, size, figures, torch)
    figures["paper_scale"] = paper_scale(figures)
    figures["seconds_total"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
